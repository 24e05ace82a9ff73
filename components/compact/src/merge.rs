//! Merging the samples of one series from several blocks: a plain union (equal timestamps keep
//! the first input's sample) or HA de-duplication with the penalty algorithm; then re-cutting
//! the result into chunks.

use strata_tsdb::block::DEFAULT_CHUNK_RANGE_MS;
use strata_tsdb::block::cut::{cut_float_histogram_chunks, cut_histogram_chunks};
use strata_tsdb::chunkenc::XorAppender;
use strata_tsdb::{Chunk, Encoding, Sample};

/// A chunk with its min and max sample time, as the block writer takes it.
pub type TimedChunk = (Chunk, i64, i64);

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

/// De-duplicates two replicas of one series, Thanos's penalty way: follow one replica; after a
/// sample at `t` the next is the earliest later sample of either replica, where the replica not
/// followed must be later than `t + penalty`. The penalty is [`INITIAL_PENALTY_MS`] before any
/// sample was emitted, then twice the interval between the last two emitted samples. A gap in
/// the followed replica longer than the penalty switches replicas; equal times prefer `a`.
pub fn dedup_pair(a: Vec<Sample>, b: Vec<Sample>) -> Vec<Sample> {
    let mut its = [a.into_iter().peekable(), b.into_iter().peekable()];
    let mut penalty = [0i64; 2];
    let mut last_t: Option<i64> = None;
    let mut out = Vec::new();
    loop {
        if let Some(lt) = last_t {
            for (it, p) in its.iter_mut().zip(penalty) {
                let bound = lt.saturating_add(p);
                while it.next_if(|s| s.t() <= bound).is_some() {}
            }
        }
        let ta = its[0].peek().map(Sample::t);
        let tb = its[1].peek().map(Sample::t);
        let i = match (ta, tb) {
            (None, None) => break,
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (Some(ta), Some(tb)) => {
                let i = usize::from(ta > tb);
                let t = ta.min(tb);
                penalty[1 - i] = last_t.map_or(INITIAL_PENALTY_MS, |lt| {
                    t.saturating_sub(lt).saturating_mul(2)
                });
                i
            }
        };
        penalty[i] = 0;
        if let Some(s) = its[i].next() {
            last_t = Some(s.t());
            out.push(s);
        }
    }
    out
}

/// De-duplicates several replicas of one series by folding [`dedup_pair`] over them in order,
/// as Thanos nests its pairwise de-duplicating iterators.
pub fn dedup_penalty(replicas: Vec<Vec<Sample>>) -> Vec<Sample> {
    let mut it = replicas.into_iter();
    let first = it.next().unwrap_or_default();
    it.fold(first, dedup_pair)
}

/// Vertical merge of one series' chunks from several replicas, as Thanos's compactor does it:
/// chunks in order of (min time, max time); a chunk overlapping none is kept as it is (bytes
/// unchanged); a run of overlapping chunks (1:1 duplicates dropped) is decoded, de-duplicated
/// pairwise with [`dedup_pair`] starting from the earliest chunk, and re-cut with [`cut`].
/// Returns the chunks and how many of them were re-encoded. Aggregate chunks cannot be merged:
/// an overlap among them is an error.
pub fn dedup_chunks(mut chunks: Vec<TimedChunk>) -> strata_tsdb::Result<(Vec<TimedChunk>, usize)> {
    chunks.sort_by_key(|c| (c.1, c.2));
    let mut out = Vec::with_capacity(chunks.len());
    let mut recut = 0;
    let mut it = chunks.into_iter().peekable();
    while let Some(base) = it.next() {
        let mut omax = base.2;
        let mut group: Vec<TimedChunk> = Vec::new();
        while let Some(next) = it.next_if(|n| n.1 <= omax) {
            let prev = group.last().unwrap_or(&base);
            if next.1 == prev.1 && next.2 == prev.2 && next.0 == prev.0 {
                continue; // a 1:1 duplicate
            }
            omax = omax.max(next.2);
            group.push(next);
        }
        if group.is_empty() {
            out.push(base);
            continue;
        }
        let decode = |c: &Chunk| -> strata_tsdb::Result<Vec<Sample>> {
            if c.encoding() == Encoding::Aggr {
                return Err(strata_tsdb::Error::InvalidArgument(
                    "overlapping aggregate chunks cannot be merged".into(),
                ));
            }
            c.samples()
        };
        let mut samples = decode(&base.0)?;
        for g in &group {
            samples = dedup_pair(samples, decode(&g.0)?);
        }
        let cut = cut(&samples)?;
        recut += cut.len();
        out.extend(cut);
    }
    Ok((out, recut))
}

/// Cuts time-ordered samples into chunks: runs of one sample kind, at most
/// [`MAX_SAMPLES_PER_CHUNK`] per chunk; floats as XOR, histograms re-encoded with the
/// histogram appenders (which also cut on counter resets and layout changes).
pub fn cut(samples: &[Sample]) -> strata_tsdb::Result<Vec<TimedChunk>> {
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
