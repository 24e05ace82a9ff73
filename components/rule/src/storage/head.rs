//! The in-memory head: per series, its time-sorted raw samples since the last block cut.

use std::collections::BTreeMap;

use strata_promql::Labels;

use super::Merged;
use crate::OutSample;

/// Series in label order (Prometheus's order, which block writing needs).
#[derive(Debug, Default)]
pub struct Head {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
    samples: usize,
}

/// A sample the head cannot take: not after the series' last sample.
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfOrder;

impl Head {
    /// Appends a sample that must be newer than the series' last one.
    pub fn append_checked(&mut self, labels: Labels, t: i64, v: f64) -> Result<(), OutOfOrder> {
        let s = self.series.entry(labels).or_default();
        if s.last().is_some_and(|&(lt, _)| t <= lt) {
            return Err(OutOfOrder);
        }
        s.push((t, v));
        self.samples += 1;
        Ok(())
    }

    /// The series' last sample.
    pub fn last(&self, labels: &Labels) -> Option<(i64, f64)> {
        self.series.get(labels).and_then(|s| s.last().copied())
    }

    /// Number of series.
    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    /// Number of samples.
    pub fn num_samples(&self) -> usize {
        self.samples
    }

    /// Oldest and newest sample time, `None` when empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self
            .series
            .values()
            .filter_map(|s| s.first())
            .map(|p| p.0)
            .min()?;
        let max = self
            .series
            .values()
            .filter_map(|s| s.last())
            .map(|p| p.0)
            .max()?;
        Some((min, max))
    }

    /// Series with their samples in `[start, end)`, in label order, empty ones left out.
    pub fn range(&self, start: i64, end: i64) -> impl Iterator<Item = (&Labels, Vec<(i64, f64)>)> {
        self.series.iter().filter_map(move |(l, s)| {
            let lo = s.partition_point(|p| p.0 < start);
            let hi = s.partition_point(|p| p.0 < end);
            (lo < hi).then(|| (l, s[lo..hi].to_vec()))
        })
    }

    /// Drops samples before `t`, and series left without samples.
    pub fn truncate_before(&mut self, t: i64) {
        let mut n = 0;
        self.series.retain(|_, s| {
            let cut = s.partition_point(|p| p.0 < t);
            s.drain(..cut);
            n += s.len();
            !s.is_empty()
        });
        self.samples = n;
    }

    /// Every sample, series by series (what a WAL checkpoint holds).
    pub fn all_samples(&self) -> Vec<OutSample> {
        let mut out = Vec::with_capacity(self.samples);
        for (l, s) in &self.series {
            out.extend(s.iter().map(|&(t, v)| OutSample {
                labels: l.clone(),
                t,
                v,
            }));
        }
        out
    }

    /// Adds the samples in `[min_t, max_t]` of series matching `keep` to `out`.
    pub fn collect_into(
        &self,
        out: &mut Merged,
        keep: &dyn Fn(&Labels) -> bool,
        min_t: i64,
        max_t: i64,
    ) {
        for (l, s) in &self.series {
            if !keep(l) {
                continue;
            }
            let lo = s.partition_point(|p| p.0 < min_t);
            let hi = s.partition_point(|p| p.0 <= max_t);
            if lo < hi {
                out.entry(l.clone())
                    .or_default()
                    .extend_from_slice(&s[lo..hi]);
            }
        }
    }
}
