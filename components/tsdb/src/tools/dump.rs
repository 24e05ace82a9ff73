//! `dump`: every sample of one block or a directory of blocks, one line each, in the format of
//! `promtool tsdb dump`: `{labels} value timestamp`. Series appear once, in label order, with the
//! samples of all blocks merged by timestamp (a timestamp seen in two blocks is printed once).

use std::cmp::Ordering;
use std::io::Write;
use std::iter::Peekable;

use crate::block::SeriesSamples;
use crate::{Block, Error, Labels, Matcher, Result, Sample};

use super::gofmt::{format_g, quote};

/// What to dump.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// Earliest timestamp (ms, inclusive).
    pub min_time: i64,
    /// Latest timestamp (ms, inclusive).
    pub max_time: i64,
    /// Series selectors; a series is dumped when it matches any set. Empty: every series.
    pub matcher_sets: Vec<Vec<Matcher>>,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            min_time: i64::MIN,
            max_time: i64::MAX,
            matcher_sets: Vec::new(),
        }
    }
}

/// Labels as Prometheus's `Labels.String()` prints them: `{a="1", b="2"}`.
pub fn format_labels(labels: &Labels) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if is_legacy_label_name(name) {
            out.push_str(name);
        } else {
            out.push_str(&quote(name));
        }
        out.push('=');
        out.push_str(&quote(value));
    }
    out.push('}');
    out
}

fn is_legacy_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A native histogram as `{count:…, sum:…}`; `count` is already formatted (`%d` for integer
/// histograms, `%g` for float ones, as Go prints them). promtool also prints every bucket with its
/// boundaries; that part is not done yet (Prometheus's bucket-bound table is not reproducible
/// bit for bit from a formula, see the README's status table).
fn format_histogram(count: &str, sum: f64) -> String {
    format!("{{count:{count}, sum:{}}}", format_g(sum))
}

/// Series of one block in label order (series refs in a block are sorted by labels).
fn block_series<'a>(
    block: &'a Block,
    opts: &'a DumpOptions,
) -> Result<impl Iterator<Item = Result<SeriesSamples>> + 'a> {
    let refs = if opts.matcher_sets.is_empty() {
        block.index().all_postings()?
    } else {
        let mut refs = Vec::new();
        for set in &opts.matcher_sets {
            refs.extend(block.index().postings_for_matchers(set)?);
        }
        refs.sort_unstable();
        refs.dedup();
        refs
    };
    Ok(refs.into_iter().filter_map(move |r| {
        match block.series_samples(r, opts.min_time, opts.max_time) {
            Ok(s) if s.samples.is_empty() => None,
            other => Some(other),
        }
    }))
}

/// Writes the dump of `blocks` to `out`; returns the number of samples written.
pub fn dump(blocks: &[Block], opts: &DumpOptions, out: &mut dyn Write) -> Result<u64> {
    let mut streams = blocks
        .iter()
        .map(|b| block_series(b, opts).map(Iterator::peekable))
        .collect::<Result<Vec<_>>>()?;
    let mut written = 0u64;
    let io = |e: std::io::Error| Error::io("<output>", e);
    loop {
        // The smallest label set among the stream heads; an error at a head is returned.
        let mut smallest: Option<Labels> = None;
        for s in streams.iter_mut() {
            match s.peek() {
                None => {}
                Some(Err(_)) => {
                    if let Some(Err(e)) = s.next() {
                        return Err(e);
                    }
                }
                Some(Ok(head))
                    if smallest
                        .as_ref()
                        .is_none_or(|m| head.labels.cmp(m) == Ordering::Less) =>
                {
                    smallest = Some(head.labels.clone());
                }
                Some(Ok(_)) => {}
            }
        }
        let Some(labels) = smallest else {
            break;
        };
        let samples = take_series(&mut streams, &labels);
        let prefix = format_labels(&labels);
        for s in samples {
            match s {
                Sample::Float { t, v } => writeln!(out, "{prefix} {} {t}", format_g(v)),
                Sample::Histogram { t, h } => {
                    writeln!(
                        out,
                        "{prefix} {} {t}",
                        format_histogram(&h.count.to_string(), h.sum)
                    )
                }
                Sample::FloatHistogram { t, h } => {
                    writeln!(
                        out,
                        "{prefix} {} {t}",
                        format_histogram(&format_g(h.count), h.sum)
                    )
                }
            }
            .map_err(io)?;
            written += 1;
        }
    }
    out.flush().map_err(io)?;
    Ok(written)
}

/// Pops the series `labels` from every stream whose head it is and merges the samples by time.
fn take_series<I>(streams: &mut [Peekable<I>], labels: &Labels) -> Vec<Sample>
where
    I: Iterator<Item = Result<SeriesSamples>>,
{
    let mut merged: Vec<Sample> = Vec::new();
    for s in streams.iter_mut() {
        if !matches!(s.peek(), Some(Ok(head)) if head.labels == *labels) {
            continue;
        }
        let Some(Ok(series)) = s.next() else {
            continue;
        };
        if merged.is_empty() {
            merged = series.samples;
            continue;
        }
        let mut out = Vec::with_capacity(merged.len() + series.samples.len());
        let mut a = std::mem::take(&mut merged).into_iter().peekable();
        let mut b = series.samples.into_iter().peekable();
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.t().cmp(&y.t()) {
                    Ordering::Less => a.next(),
                    Ordering::Greater => b.next(),
                    Ordering::Equal => {
                        b.next();
                        a.next()
                    }
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            out.extend(next);
        }
        merged = out;
    }
    merged
}
