//! Merging the samples of one series from several blocks: a plain union (equal timestamps keep
//! the first input's sample) or HA de-duplication with the penalty algorithm; then re-cutting
//! the result into chunks.

use strata_tsdb::block::DEFAULT_CHUNK_RANGE_MS;
use strata_tsdb::block::cut::{cut_float_histogram_chunks, cut_histogram_chunks};
use strata_tsdb::chunkenc::XorAppender;
use strata_tsdb::{Chunk, Encoding, Sample};

/// Most samples in a chunk the compactor writes.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// Penalty of a replica that is not followed, before the scrape interval is known, ms.
pub const INITIAL_PENALTY_MS: i64 = 5000;

/// Union of time-ordered sample lists: every timestamp once, from the earliest input holding
/// it.
pub fn union(inputs: Vec<Vec<Sample>>) -> Vec<Sample> {
    let mut all: Vec<(usize, Sample)> = inputs
        .into_iter()
        .enumerate()
        .flat_map(|(i, v)| v.into_iter().map(move |s| (i, s)))
        .collect();
    // Stable: equal timestamps stay in input order, so the first input's sample comes first.
    all.sort_by_key(|(i, s)| (s.t(), *i));
    let mut out: Vec<Sample> = Vec::with_capacity(all.len());
    for (_, s) in all {
        if out.last().is_some_and(|l| l.t() == s.t()) {
            continue;
        }
        out.push(s);
    }
    out
}

/// De-duplicates replicas of one series, Thanos's penalty way: follow one replica; after a
/// sample at `t` the next is the earliest later sample of any replica, where replicas other
/// than the followed one must be later than `t + penalty`. The penalty is
/// [`INITIAL_PENALTY_MS`] until an interval is known, then twice the interval between the last
/// two emitted samples. A gap in the followed replica longer than the penalty switches replicas.
pub fn dedup_penalty(replicas: Vec<Vec<Sample>>) -> Vec<Sample> {
    let n = replicas.len();
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<Sample>>> = replicas
        .into_iter()
        .map(|v| v.into_iter().peekable())
        .collect();
    let mut penalty = vec![0i64; n];
    let mut last_t: Option<i64> = None;
    let mut out = Vec::new();
    loop {
        let mut best: Option<(i64, usize)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some(lt) = last_t {
                let bound = lt.saturating_add(penalty[i]);
                while it.next_if(|s| s.t() <= bound).is_some() {}
            }
            if let Some(s) = it.peek()
                && best.is_none_or(|(bt, _)| s.t() < bt)
            {
                best = Some((s.t(), i));
            }
        }
        let Some((t, i)) = best else { break };
        for (j, p) in penalty.iter_mut().enumerate() {
            *p = if j == i {
                0
            } else {
                last_t.map_or(INITIAL_PENALTY_MS, |lt| {
                    t.saturating_sub(lt).saturating_mul(2)
                })
            };
        }
        if let Some(s) = iters[i].next() {
            out.push(s);
        }
        last_t = Some(t);
    }
    out
}

/// Cuts time-ordered samples into chunks: runs of one sample kind, at most
/// [`MAX_SAMPLES_PER_CHUNK`] per chunk; floats as XOR, histograms re-encoded with the
/// histogram appenders (which also cut on counter resets and layout changes).
pub fn cut(samples: &[Sample]) -> strata_tsdb::Result<Vec<(Chunk, i64, i64)>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < samples.len() {
        let kind = std::mem::discriminant(&samples[start]);
        let mut end = start + 1;
        while end < samples.len()
            && end - start < MAX_SAMPLES_PER_CHUNK
            && std::mem::discriminant(&samples[end]) == kind
        {
            end += 1;
        }
        let run = &samples[start..end];
        match &run[0] {
            Sample::Float { .. } => {
                let mut a = XorAppender::new();
                for s in run {
                    if let Sample::Float { t, v } = s {
                        a.append(*t, *v)?;
                    }
                }
                out.push((
                    Chunk::from_parts(Encoding::Xor, a.into_bytes().into()),
                    run[0].t(),
                    run[run.len() - 1].t(),
                ));
            }
            Sample::Histogram { .. } => {
                let hs: Vec<_> = run
                    .iter()
                    .filter_map(|s| match s {
                        Sample::Histogram { t, h } => Some((*t, (**h).clone())),
                        _ => None,
                    })
                    .collect();
                out.extend(cut_histogram_chunks(&hs, DEFAULT_CHUNK_RANGE_MS)?);
            }
            Sample::FloatHistogram { .. } => {
                let hs: Vec<_> = run
                    .iter()
                    .filter_map(|s| match s {
                        Sample::FloatHistogram { t, h } => Some((*t, (**h).clone())),
                        _ => None,
                    })
                    .collect();
                out.extend(cut_float_histogram_chunks(&hs, DEFAULT_CHUNK_RANGE_MS)?);
            }
        }
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(t: i64, v: f64) -> Sample {
        Sample::Float { t, v }
    }

    #[test]
    fn union_keeps_first_inputs_sample_on_equal_timestamps() {
        let a = vec![f(0, 1.0), f(10, 2.0), f(20, 3.0)];
        let b = vec![f(5, 9.0), f(10, 99.0), f(30, 9.0)];
        let got = union(vec![a, b]);
        assert_eq!(
            got,
            vec![f(0, 1.0), f(5, 9.0), f(10, 2.0), f(20, 3.0), f(30, 9.0)]
        );
    }

    #[test]
    fn penalty_dedup_follows_one_replica_and_fills_its_gap() {
        // Replica a every 15 s with a gap [300 s, 600 s); b every 15 s, 5 s later.
        let a: Vec<Sample> = (0..60)
            .map(|i| i * 15_000)
            .filter(|t| !(300_000..600_000).contains(t))
            .map(|t| f(t, 1.0))
            .collect();
        let b: Vec<Sample> = (0..60).map(|i| f(i * 15_000 + 5_000, 2.0)).collect();
        let got = dedup_penalty(vec![a, b]);
        // Never two samples closer than the scrape interval minus the phase shift.
        for w in got.windows(2) {
            assert!(w[1].t() - w[0].t() >= 10_000, "{:?}", (w[0].t(), w[1].t()));
        }
        // Before the gap: replica a only; the gap is filled from b.
        assert!(
            got.iter()
                .filter(|s| s.t() < 300_000)
                .all(|s| s == &f(s.t(), 1.0))
        );
        let in_gap: Vec<_> = got
            .iter()
            .filter(|s| (330_000..600_000).contains(&s.t()))
            .collect();
        assert!(!in_gap.is_empty());
        assert!(in_gap.iter().all(|s| **s == f(s.t(), 2.0)));
        // About one replica's worth of samples, not two.
        assert!((55..=61).contains(&got.len()), "{}", got.len());
    }

    #[test]
    fn cut_limits_chunks_to_120_samples_and_splits_kinds() {
        let s: Vec<Sample> = (0..250).map(|i| f(i * 1000, i as f64)).collect();
        let c = cut(&s).unwrap();
        let n: Vec<u16> = c.iter().map(|(c, _, _)| c.num_samples()).collect();
        assert_eq!(n, [120, 120, 10]);
        assert_eq!((c[1].1, c[1].2), (120_000, 239_000));
        let back: Vec<Sample> = c
            .iter()
            .flat_map(|(c, _, _)| c.samples().unwrap())
            .collect();
        assert_eq!(back, s);
    }
}
