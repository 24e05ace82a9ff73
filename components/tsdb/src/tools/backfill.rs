//! `create-blocks-from openmetrics`: turns timestamped OpenMetrics text into blocks, one per aligned
//! block-duration window, as `promtool tsdb create-blocks-from openmetrics` does. The whole input is held
//! in memory (promtool does the same); each window's block is written with [`BlockWriter`].

use std::collections::BTreeMap;
use std::path::Path;

use ulid::Ulid;

use super::openmetrics;
use crate::{BlockWriter, BlockWriterOptions, Error, Labels, Result};

/// Prometheus's default block duration: 2 h.
pub const DEFAULT_BLOCK_DURATION_MS: i64 = 2 * 3600 * 1000;

/// Options for [`create_blocks`].
#[derive(Debug, Clone, Default)]
pub struct BackfillOptions {
    /// Upper bound for the block duration; `None` or anything up to 2 h gives 2 h blocks; larger values
    /// pick the largest of 2 h × 3ⁿ that fits, as promtool does.
    pub max_block_duration_ms: Option<i64>,
    /// Labels added to (or replacing those of) every series.
    pub labels: Vec<(String, String)>,
}

/// What one written block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBlock {
    /// Its ULID (the directory name).
    pub ulid: Ulid,
    /// First sample time, ms.
    pub min_time: i64,
    /// Last sample time, ms (inclusive).
    pub max_time: i64,
    /// Series in the block.
    pub num_series: u64,
    /// Samples in the block.
    pub num_samples: u64,
}

/// The block duration promtool uses for a `--max-block-duration`.
pub fn block_duration(max_block_duration_ms: Option<i64>) -> i64 {
    let Some(max) = max_block_duration_ms.filter(|m| *m > DEFAULT_BLOCK_DURATION_MS) else {
        return DEFAULT_BLOCK_DURATION_MS;
    };
    let ranges: Vec<i64> = (0..10)
        .map(|i| DEFAULT_BLOCK_DURATION_MS * 3i64.pow(i))
        .collect();
    ranges
        .iter()
        .rev()
        .find(|r| **r <= max)
        .copied()
        .unwrap_or(DEFAULT_BLOCK_DURATION_MS)
}

/// Parses `input` and writes its blocks into `out_dir`. `progress` is called with the number of samples
/// parsed so far, every 64k samples and at the end.
pub fn create_blocks(
    input: &str,
    out_dir: &Path,
    opts: &BackfillOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<CreatedBlock>> {
    let duration = block_duration(opts.max_block_duration_ms);
    let mut windows: BTreeMap<i64, BTreeMap<Labels, Vec<(i64, f64)>>> = BTreeMap::new();
    let mut parsed = 0u64;
    for sample in openmetrics::parse(input) {
        let sample = sample?;
        let labels = if opts.labels.is_empty() {
            sample.labels
        } else {
            let mut pairs: Vec<(String, String)> = sample
                .labels
                .into_vec()
                .into_iter()
                .filter(|(n, _)| !opts.labels.iter().any(|(m, _)| m == n))
                .collect();
            pairs.extend(opts.labels.iter().cloned());
            Labels::new(pairs)?
        };
        let window = sample.t.div_euclid(duration) * duration;
        windows
            .entry(window)
            .or_default()
            .entry(labels)
            .or_default()
            .push((sample.t, sample.value));
        parsed += 1;
        if parsed.is_multiple_of(65536) {
            progress(parsed);
        }
    }
    progress(parsed);
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let mut created = Vec::new();
    for (_, series) in windows {
        let mut writer = BlockWriter::new(
            out_dir,
            BlockWriterOptions {
                chunk_range: 2 * duration,
                ..BlockWriterOptions::default()
            },
        )?;
        let (mut min_time, mut max_time, mut num_samples) = (i64::MAX, i64::MIN, 0u64);
        let num_series = series.len() as u64;
        for (labels, mut samples) in series {
            samples.sort_by_key(|(t, _)| *t);
            let mut deduped: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
            for (t, v) in samples {
                match deduped.last() {
                    Some((lt, lv)) if *lt == t => {
                        if lv.to_bits() != v.to_bits() {
                            return Err(Error::InvalidArgument(format!(
                                "series {}: two different values at timestamp {t}",
                                super::dump::format_labels(&labels)
                            )));
                        }
                    }
                    _ => deduped.push((t, v)),
                }
            }
            if let (Some(first), Some(last)) = (deduped.first(), deduped.last()) {
                min_time = min_time.min(first.0);
                max_time = max_time.max(last.0);
            }
            num_samples += deduped.len() as u64;
            writer.add_series(&labels, &deduped)?;
        }
        let ulid = writer.finish()?;
        created.push(CreatedBlock {
            ulid,
            min_time,
            max_time,
            num_series,
            num_samples,
        });
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::dump::{DumpOptions, dump};
    use crate::tools::open_blocks;

    #[test]
    fn block_durations_follow_promtool() {
        let h = 3600 * 1000;
        assert_eq!(block_duration(None), 2 * h);
        assert_eq!(block_duration(Some(h)), 2 * h);
        assert_eq!(block_duration(Some(6 * h)), 6 * h);
        assert_eq!(block_duration(Some(10 * h)), 6 * h);
        assert_eq!(block_duration(Some(54 * h)), 54 * h);
    }

    #[test]
    fn samples_split_into_aligned_windows_and_dump_back() {
        let dir = tempfile::tempdir().unwrap();
        // 7200 s is a window boundary: samples at 7199 s and 7200 s land in different blocks.
        let input = "# TYPE a gauge\na{x=\"1\"} 1 7199\na{x=\"1\"} 2 7200\nb 3 7201.5\n# EOF\n";
        let mut seen = 0;
        let blocks = create_blocks(input, dir.path(), &BackfillOptions::default(), &mut |n| {
            seen = n
        })
        .unwrap();
        assert_eq!(seen, 3);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].min_time, blocks[0].max_time),
            (7_199_000, 7_199_000)
        );
        assert_eq!((blocks[1].num_series, blocks[1].num_samples), (2, 2));

        let opened = open_blocks(dir.path()).unwrap();
        let mut out = Vec::new();
        assert_eq!(dump(&opened, &DumpOptions::default(), &mut out).unwrap(), 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{__name__=\"a\", x=\"1\"} 1 7199000\n{__name__=\"a\", x=\"1\"} 2 7200000\n{__name__=\"b\"} 3 7201500\n"
        );
    }

    #[test]
    fn conflicting_duplicates_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let input = "a 1 10\na 2 10\n# EOF\n";
        let e =
            create_blocks(input, dir.path(), &BackfillOptions::default(), &mut |_| {}).unwrap_err();
        assert!(
            e.to_string()
                .contains("two different values at timestamp 10000"),
            "{e}"
        );
    }
}
