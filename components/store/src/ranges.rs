//! Merging nearby byte ranges so that many small reads become few GETs.

use std::ops::Range;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use strata_objstore::Bucket;

use crate::stats::QueryStats;

/// GETs in flight per [`fetch_ranges`] call.
pub const FETCH_CONCURRENCY: usize = 12;

/// Sorts `ranges` and merges those that overlap or lie at most `max_gap` bytes apart. Empty
/// ranges are dropped.
pub fn merge_ranges(ranges: &[Range<u64>], max_gap: u64) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(max_gap) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

/// The ranges [`fetch_ranges`] will GET for `ranges`.
pub(crate) fn plan(ranges: &[Range<u64>], max_gap: u64, naive: bool) -> Vec<Range<u64>> {
    if naive {
        let mut v: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
        v.sort_by_key(|r| (r.start, r.end));
        v.dedup();
        v
    } else {
        merge_ranges(ranges, max_gap)
    }
}

/// Bytes [`fetch_ranges`] will ask for (an upper bound of what it receives), for charging a
/// byte budget before the GETs are sent.
pub fn planned_bytes(ranges: &[Range<u64>], max_gap: u64, naive: bool) -> u64 {
    plan(ranges, max_gap, naive)
        .iter()
        .map(|r| r.end - r.start)
        .sum()
}

/// The result of [`fetch_ranges`]: one buffer per requested range, and what it cost.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The bytes of each requested range, in request order (empty for an empty range).
    pub parts: Vec<Bytes>,
    /// GETs made.
    pub gets: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// Reads `ranges` of `object`: merges them with [`merge_ranges`] (`max_gap`; with `naive`, no
/// merging at all: one GET per requested range), fetches the merged ranges with up to
/// [`FETCH_CONCURRENCY`] GETs in flight, counts each GET in `stats`, and hands back each
/// requested range as a slice of the merged buffers. Ranges must lie inside the object.
pub async fn fetch_ranges(
    bucket: &Bucket,
    object: &str,
    ranges: &[Range<u64>],
    max_gap: u64,
    naive: bool,
    stats: &QueryStats,
) -> Result<Fetched, strata_objstore::Error> {
    let merged = plan(ranges, max_gap, naive);
    let bufs: Vec<(Range<u64>, Bytes)> =
        futures::stream::iter(merged.into_iter().map(|r| async move {
            let b = bucket.get_range(object, r.clone()).await?;
            stats.add_get(b.len() as u64);
            Ok::<_, strata_objstore::Error>((r, b))
        }))
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = Fetched {
        parts: Vec::with_capacity(ranges.len()),
        gets: bufs.len() as u64,
        bytes: bufs.iter().map(|(_, b)| b.len() as u64).sum(),
    };
    for r in ranges {
        if r.start >= r.end {
            out.parts.push(Bytes::new());
            continue;
        }
        // The merged range holding `r`: the last one starting at or before it.
        let i = bufs.partition_point(|(m, _)| m.start <= r.start);
        let part = i
            .checked_sub(1)
            .map(|i| &bufs[i])
            .filter(|(m, _)| m.end >= r.end)
            .and_then(|(m, b)| {
                let s = (r.start - m.start) as usize;
                let e = (r.end - m.start) as usize;
                (e <= b.len()).then(|| b.slice(s..e))
            });
        match part {
            Some(p) => out.parts.push(p),
            None => {
                // A short read from the store: hand back what there is (callers check lengths).
                out.parts.push(i.checked_sub(1).map_or(Bytes::new(), |i| {
                    let (m, b) = &bufs[i];
                    let s = ((r.start - m.start) as usize).min(b.len());
                    b.slice(s..)
                }));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_close_and_overlapping_ranges() {
        assert_eq!(merge_ranges(&[], 10), Vec::<Range<u64>>::new());
        assert_eq!(
            merge_ranges(&[30..40, 0..10, 15..20, 100..110, 5..12, 50..50], 5),
            vec![0..20, 30..40, 100..110]
        );
        assert_eq!(merge_ranges(&[0..10, 10..20], 0), vec![0..20]);
        assert_eq!(merge_ranges(&[0..10, 11..20], 0), vec![0..10, 11..20]);
        assert_eq!(merge_ranges(&[0..100, 10..20], 0), vec![0..100]);
    }

    #[tokio::test]
    async fn fetch_hands_back_each_slice_and_counts_gets() {
        let bucket = Bucket::in_memory();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        bucket.put("obj", Bytes::from(data.clone())).await.unwrap();
        let ranges = vec![
            500..600,
            0..10,
            9_000..10_000,
            590..700,
            20..20,
            4_000..4_001,
        ];
        let stats = QueryStats::default();
        let f = fetch_ranges(&bucket, "obj", &ranges, 1_000, false, &stats)
            .await
            .unwrap();
        for (r, p) in ranges.iter().zip(&f.parts) {
            assert_eq!(&p[..], &data[r.start as usize..r.end as usize], "{r:?}");
        }
        // 0..700 merged, 4000 alone, 9000.. alone.
        assert_eq!(f.gets, 3);
        let s = stats.snapshot();
        assert_eq!(s.get_requests, 3);
        assert_eq!(s.get_bytes, 700 + 1 + 1_000);
        assert_eq!(f.bytes, s.get_bytes);
        assert_eq!(planned_bytes(&ranges, 1_000, false), f.bytes);

        let naive = QueryStats::default();
        let f = fetch_ranges(&bucket, "obj", &ranges, 1_000, true, &naive)
            .await
            .unwrap();
        assert_eq!(
            naive.snapshot().get_requests,
            5,
            "one GET per non-empty range"
        );
        for (r, p) in ranges.iter().zip(&f.parts) {
            assert_eq!(&p[..], &data[r.start as usize..r.end as usize]);
        }
    }

    #[tokio::test]
    async fn many_ranges_fetch_concurrently_in_order() {
        let bucket = Bucket::in_memory();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        bucket.put("obj", Bytes::from(data.clone())).await.unwrap();
        let ranges: Vec<Range<u64>> = (0..200u64).map(|i| i * 500..i * 500 + 17).collect();
        let stats = QueryStats::default();
        let f = fetch_ranges(&bucket, "obj", &ranges, 0, false, &stats)
            .await
            .unwrap();
        assert_eq!(f.gets, 200);
        for (r, p) in ranges.iter().zip(&f.parts) {
            assert_eq!(&p[..], &data[r.start as usize..r.end as usize]);
        }
        // Past the end: the store may refuse or read short; either way no panic and no
        // invented bytes.
        let past_end: Vec<Range<u64>> = std::iter::once(99_990..100_010).collect();
        if let Ok(f) = fetch_ranges(&bucket, "obj", &past_end, 0, false, &stats).await {
            assert_eq!(&f.parts[0][..], &data[99_990..]);
        }
    }
}
