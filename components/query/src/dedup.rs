//! Replica de-duplication: series that differ only in their replica labels (the same target scraped
//! by HA Prometheus pairs) become one series.
//!
//! The merge follows one replica and moves to another only when the followed one has a gap, the way
//! Thanos's querier does: after emitting a sample at `t`, the next sample is the earliest one of any
//! replica later than `t`, where a replica other than the followed one must be later than
//! `t + penalty`. The penalty is 5 s until an interval is known, then twice the interval between
//! the last two emitted samples. So replicas scraping at different phases never double the sample
//! rate, and a gap in one replica is filled from another.
//!
//! Counter-aware mode (for selectors that feed `rate`/`increase`/`irate`/`resets`; Thanos issue
//! 2890): replicas of one counter disagree slightly (they scrape at different instants), so a
//! plain switch can make the merged counter drop — a fake reset that `rate` turns into a spike.
//! Here each switch shifts the new replica's values by an offset, so that the merged counter
//! continues from its last value by the increase the new replica itself saw, scaled to the time
//! since the last merged sample (its own previous sample may lie before a gap of its own). On a
//! counter both replicas sample exactly, the merged series is that counter. A drop inside one
//! replica is a real reset: the offset is cleared and the drop kept.
//! Native-histogram samples follow the same switching but are not offset (floats only).

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_promql::{FloatHistogram, Labels, Series};

/// Penalty before a first interval is known, ms.
pub const INITIAL_PENALTY_MS: i64 = 5000;

#[derive(Debug, Clone)]
enum Value {
    Float(f64),
    Hist(Arc<FloatHistogram>),
}

/// One replica's samples (floats and histograms) in time order.
fn timeline(s: &Series) -> Vec<(i64, Value)> {
    let mut v: Vec<(i64, Value)> = s
        .samples
        .iter()
        .map(|(t, f)| (*t, Value::Float(*f)))
        .chain(
            s.histograms
                .iter()
                .map(|(t, h)| (*t, Value::Hist(h.clone()))),
        )
        .collect();
    v.sort_by_key(|(t, _)| *t);
    v
}

/// Groups `series` by their labels without `replica_labels`, merges every group into one series
/// with those labels, and returns them sorted by labels. `counter` turns on counter-aware merging.
pub fn dedup(series: Vec<Series>, replica_labels: &[String], counter: bool) -> Vec<Series> {
    let mut groups: BTreeMap<Labels, Vec<Series>> = BTreeMap::new();
    for s in series {
        groups
            .entry(s.labels.drop(replica_labels))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|(labels, mut replicas)| {
            if replicas.len() == 1 {
                let mut s = replicas.pop().unwrap_or_default();
                s.labels = labels;
                return s;
            }
            // A stable order (by the replica labels) so results do not depend on store order.
            replicas.sort_by(|a, b| a.labels.cmp(&b.labels));
            let mut s = merge_replicas(&replicas, counter);
            s.labels = labels;
            s
        })
        .collect()
}

/// Merges the samples of several replicas of one series (labels of the first are kept).
pub fn merge_replicas(replicas: &[Series], counter: bool) -> Series {
    let lines: Vec<Vec<(i64, Value)>> = replicas.iter().map(timeline).collect();
    let n = lines.len();
    let mut pos = vec![0usize; n];
    let mut penalty = vec![0i64; n];
    let mut offset = vec![0f64; n];
    let mut current: Option<usize> = None;
    let mut last_t: Option<i64> = None;
    // Last emitted float value (after offset), for counter continuity.
    let mut last_out: Option<f64> = None;
    let mut out = Series {
        labels: replicas
            .first()
            .map(|s| s.labels.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    loop {
        // Each replica's next candidate: the first sample after last_t + its penalty.
        let mut best: Option<(i64, usize)> = None;
        for i in 0..n {
            let bound = last_t.map(|t| t.saturating_add(penalty[i]));
            let line = &lines[i];
            while pos[i] < line.len() && bound.is_some_and(|b| line[pos[i]].0 <= b) {
                pos[i] += 1;
            }
            if let Some((t, _)) = line.get(pos[i])
                && best.is_none_or(|(bt, _)| *t < bt)
            {
                best = Some((*t, i));
            }
        }
        let Some((t, i)) = best else { break };
        let switched = current.is_some_and(|c| c != i);
        for (j, p) in penalty.iter_mut().enumerate() {
            *p = if j == i {
                0
            } else {
                match last_t {
                    Some(lt) => t.saturating_sub(lt).saturating_mul(2),
                    None => INITIAL_PENALTY_MS,
                }
            };
        }
        let value = lines[i][pos[i]].1.clone();
        match value {
            Value::Hist(h) => out.histograms.push((t, h)),
            Value::Float(raw) => {
                let v = if counter && raw.is_finite() {
                    let prev_own = pos[i]
                        .checked_sub(1)
                        .and_then(|p| float_at(&lines[i], p))
                        .filter(|(_, p)| p.is_finite());
                    let mut reset = false;
                    if switched {
                        offset[i] = match (last_out, last_t, prev_own) {
                            // A drop since its own previous sample: a real reset, kept.
                            (_, _, Some((_, p))) if raw < p => {
                                reset = true;
                                0.0
                            }
                            // Continue from the merged value by this replica's own increase,
                            // scaled to the time since the last merged sample (its previous
                            // sample may lie before a gap, or inside the penalty window).
                            (Some(lo), Some(lt), Some((pt, p))) if t > pt => {
                                let share = (t - lt) as f64 / (t - pt) as f64;
                                lo + (raw - p) * share - raw
                            }
                            // No own history: never let the merged counter drop.
                            (Some(lo), _, _) => (lo - raw).max(0.0),
                            (None, _, _) => 0.0,
                        };
                    } else if prev_own.is_some_and(|(_, p)| raw < p) {
                        // A real reset inside this replica: keep it.
                        offset[i] = 0.0;
                        reset = true;
                    }
                    let v = raw + offset[i];
                    match last_out {
                        // Rounding of the offset must not fake a tiny reset.
                        Some(lo) if !reset => v.max(lo),
                        _ => v,
                    }
                } else {
                    raw
                };
                if v.is_finite() {
                    last_out = Some(v);
                }
                out.samples.push((t, v));
            }
        }
        current = Some(i);
        last_t = Some(t);
        pos[i] += 1;
    }
    out
}

fn float_at(line: &[(i64, Value)], p: usize) -> Option<(i64, f64)> {
    match line.get(p) {
        Some((t, Value::Float(f))) => Some((*t, *f)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(replica: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: Labels::new([
                ("__name__".to_string(), "c".to_string()),
                ("replica".to_string(), replica.to_string()),
            ]),
            samples: samples.to_vec(),
            histograms: vec![],
        }
    }

    fn replica_labels() -> Vec<String> {
        vec!["replica".to_string()]
    }

    #[test]
    fn groups_and_strips_replica_labels() {
        let other = Series {
            labels: Labels::new([("__name__".to_string(), "d".to_string())]),
            samples: vec![(0, 1.0)],
            histograms: vec![],
        };
        let out = dedup(
            vec![s("a", &[(0, 1.0)]), other.clone(), s("b", &[(0, 1.0)])],
            &replica_labels(),
            false,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels.get("replica"), None);
        assert_eq!(out[0].samples, vec![(0, 1.0)]);
        assert_eq!(out[1], other);
    }

    #[test]
    fn fills_a_gap_from_the_other_replica_without_doubling() {
        // a scrapes at 0,10s,...; b at 5s, 15s, ... ; a misses [40s, 80s].
        let a: Vec<(i64, f64)> = (0..12)
            .map(|i| i * 10_000)
            .filter(|t| !(40_000..=80_000).contains(t))
            .map(|t| (t, t as f64))
            .collect();
        let b: Vec<(i64, f64)> = (0..12).map(|i| (i * 10_000 + 5_000, 0.0)).collect();
        let m = merge_replicas(&[s("a", &a), s("b", &b)], false);
        let ts: Vec<i64> = m.samples.iter().map(|(t, _)| *t).collect();
        // follows a, switches to b after the gap exceeds 2 intervals, stays on b.
        assert_eq!(
            ts,
            vec![
                0, 10_000, 20_000, 30_000, 55_000, 65_000, 75_000, 85_000, 95_000, 105_000, 115_000
            ]
        );
    }

    #[test]
    fn counter_switch_has_no_fake_reset() {
        // b lags a by 5 (scraped slightly earlier); a stops at 30 s.
        let a = [
            (0, 100.0),
            (10_000, 110.0),
            (20_000, 120.0),
            (30_000, 130.0),
        ];
        let b = [
            (5_000, 95.0),
            (15_000, 105.0),
            (25_000, 115.0),
            (35_000, 120.0),
            (45_000, 125.0),
            (55_000, 128.0),
            (65_000, 131.0),
        ];
        let plain = merge_replicas(&[s("a", &a), s("b", &b)], false);
        assert!(
            plain.samples.windows(2).any(|w| w[1].1 < w[0].1),
            "plain dedup drops: {:?}",
            plain.samples
        );
        let m = merge_replicas(&[s("a", &a), s("b", &b)], true);
        // b is followed from 55 s (after a's gap exceeds the penalty); the merged counter grows
        // by b's own rate (0.3/s) over the 25 s since a's last sample, then by b's increases.
        let got: Vec<(i64, f64)> = m.samples.clone();
        assert_eq!(
            got,
            vec![
                (0, 100.0),
                (10_000, 110.0),
                (20_000, 120.0),
                (30_000, 130.0),
                (55_000, 137.5),
                (65_000, 140.5)
            ]
        );
    }

    #[test]
    fn real_reset_stays_a_reset() {
        let a = [(0, 100.0), (10_000, 110.0)];
        let b = [(5_000, 50.0), (35_000, 60.0), (45_000, 3.0), (55_000, 8.0)];
        let m = merge_replicas(&[s("a", &a), s("b", &b)], true);
        let vals: Vec<f64> = m.samples.iter().map(|(_, v)| *v).collect();
        // switch at 35 s: 110 + (60 - 50) * 25/30; then b resets: raw values again.
        let want = [100.0, 110.0, 110.0 + 10.0 * 25.0 / 30.0, 3.0, 8.0];
        assert_eq!(vals.len(), want.len());
        assert!(
            vals.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
            "{vals:?}"
        );
    }

    #[test]
    fn histograms_follow_the_switching() {
        let h = Arc::new(FloatHistogram {
            count: 1.0,
            ..Default::default()
        });
        let mut a = s("a", &[]);
        a.histograms = vec![(0, h.clone()), (10_000, h.clone())];
        let mut b = s("b", &[]);
        b.histograms = vec![(1_000, h.clone()), (11_000, h.clone()), (60_000, h)];
        let m = merge_replicas(&[a, b], false);
        let ts: Vec<i64> = m.histograms.iter().map(|(t, _)| *t).collect();
        assert_eq!(ts, vec![0, 10_000, 60_000]);
    }

    #[test]
    fn switching_back_after_a_gap_does_not_count_the_gap_twice() {
        // One counter (100 + t/1000), sampled by both; a misses (20 s, 100 s), b stops at 85 s.
        let c = |t: i64| 100.0 + t as f64 / 1000.0;
        let a: Vec<(i64, f64)> = [0, 10_000, 20_000, 100_000, 110_000]
            .iter()
            .map(|t| (*t, c(*t)))
            .collect();
        let b: Vec<(i64, f64)> = (0..9)
            .map(|i| i * 10_000 + 5_000)
            .map(|t| (t, c(t)))
            .collect();
        let m = merge_replicas(&[s("a", &a), s("b", &b)], true);
        for (t, v) in &m.samples {
            assert!((v - c(*t)).abs() < 1e-9, "{t}: {v} != {}", c(*t));
        }
        assert_eq!(m.samples.last().map(|x| x.0), Some(110_000));
    }

    fn regular(start: i64, n: usize, step: i64) -> Vec<i64> {
        (0..n as i64).map(|i| start + i * step).collect()
    }

    proptest! {
        #[test]
        fn counter_aware_merge_of_one_counter_is_that_counter(
            rate in 0.001f64..10.0, step in 1_000i64..30_000, phase in 1i64..1_000,
            gaps_a in prop::collection::vec((0usize..60, 1usize..20), 0..3),
            gaps_b in prop::collection::vec((0usize..60, 1usize..20), 0..3),
        ) {
            let c = |t: i64| 1000.0 + rate * t as f64;
            let with_gaps = |start: i64, gaps: &[(usize, usize)]| -> Vec<(i64, f64)> {
                regular(start, 60, step)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| gaps.iter().all(|(g, l)| *i < *g || *i >= g + l))
                    .map(|(_, t)| (t, c(t)))
                    .collect()
            };
            let a = with_gaps(0, &gaps_a);
            let b = with_gaps(phase, &gaps_b);
            let m = merge_replicas(&[s("a", &a), s("b", &b)], true);
            for (t, v) in &m.samples {
                prop_assert!((v - c(*t)).abs() <= 1e-9 * c(*t), "{}: {} != {}", t, v, c(*t));
            }
        }

        #[test]
        fn equal_replicas_give_one_replica(
            n in 1usize..60, step in 1_000i64..30_000, vals in prop::collection::vec(0f64..1e6, 60)
        ) {
            let samples: Vec<(i64, f64)> =
                regular(0, n, step).into_iter().zip(vals).collect();
            let m = merge_replicas(&[s("a", &samples), s("b", &samples), s("c", &samples)], false);
            prop_assert_eq!(m.samples, samples);
        }

        #[test]
        fn a_missing_window_is_filled_without_duplicates(
            n in 10usize..80, step in 1_000i64..20_000, phase in 1i64..1_000,
            gap_start in 2usize..40, gap_len in 3usize..40,
        ) {
            let ta = regular(0, n, step);
            let tb = regular(phase, n, step);
            let missing = |t: i64| {
                t >= ta[gap_start.min(n - 1)] && t < ta[(gap_start + gap_len).min(n - 1)]
            };
            let a: Vec<(i64, f64)> = ta.iter().filter(|t| !missing(**t)).map(|t| (*t, 1.0)).collect();
            let b: Vec<(i64, f64)> = tb.iter().map(|t| (*t, 2.0)).collect();
            let m = merge_replicas(&[s("a", &a), s("b", &b)], false);
            // strictly increasing timestamps: no duplicates
            prop_assert!(m.samples.windows(2).all(|w| w[0].0 < w[1].0));
            // never denser than one sample per step (minus the phase shift at a switch)
            prop_assert!(m.samples.windows(2).all(|w| w[1].0 - w[0].0 >= step - phase));
            // inside the window a is missing (away from its edges), b's samples are there
            // (the gap starts after a's second sample, so the penalty is 2 steps, not 5 s)
            for t in &tb {
                let inside = missing(*t - 3 * step) && missing(*t + step);
                if inside {
                    prop_assert!(m.samples.contains(&(*t, 2.0)), "b sample at {} missing", t);
                }
            }
            // every output sample comes from one of the replicas
            for x in &m.samples {
                prop_assert!(a.contains(x) || b.contains(x));
            }
        }

        #[test]
        fn counter_aware_merge_is_non_decreasing(
            incs_a in prop::collection::vec(0f64..100.0, 5..60),
            incs_b in prop::collection::vec(0f64..100.0, 5..60),
            phase in 1i64..10_000, skip_from in 0usize..30, skip_len in 0usize..30,
        ) {
            let cum = |incs: &[f64]| -> Vec<f64> {
                incs.iter().scan(0.0, |acc, x| { *acc += x; Some(*acc) }).collect()
            };
            let a: Vec<(i64, f64)> = regular(0, incs_a.len(), 10_000)
                .into_iter().zip(cum(&incs_a)).enumerate()
                .filter(|(i, _)| *i < skip_from || *i >= skip_from + skip_len)
                .map(|(_, x)| x).collect();
            let b: Vec<(i64, f64)> =
                regular(phase, incs_b.len(), 10_000).into_iter().zip(cum(&incs_b)).collect();
            let m = merge_replicas(&[s("a", &a), s("b", &b)], true);
            prop_assert!(m.samples.windows(2).all(|w| w[1].1 >= w[0].1), "{:?}", m.samples);
            let plain = merge_replicas(&[s("a", &a), s("b", &b)], false);
            // same samples chosen as the plain merge, only values shifted
            let ts = |x: &Series| x.samples.iter().map(|(t, _)| *t).collect::<Vec<_>>();
            prop_assert_eq!(ts(&m), ts(&plain));
        }
    }
}
