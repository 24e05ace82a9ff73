//! `analyze`: a cardinality summary of one block, in the layout of `promtool tsdb analyze` (sections,
//! order and meaning as there; ties are broken by name here, promtool leaves their order unspecified).

use std::collections::BTreeMap;
use std::io::Write;

use crate::{Block, Error, Matcher, Result};

/// Go's `time.Duration.String()` for a whole number of milliseconds.
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{sign}{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        secs.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

fn print_top(
    out: &mut dyn Write,
    title: &str,
    mut rows: Vec<(String, u64)>,
    limit: usize,
) -> std::io::Result<()> {
    writeln!(out, "\n{title}:")?;
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (key, n) in rows.into_iter().take(limit) {
        writeln!(out, "{n} {key}")?;
    }
    Ok(())
}

/// Writes the summary of `block` (optionally only the series matching `matchers`, given by the
/// user as `selector`), with at most `limit` rows per section.
pub fn analyze(
    block: &Block,
    selector: Option<&str>,
    matchers: &[Matcher],
    limit: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("<output>", e);
    let meta = block.meta();
    let index = block.index();
    let span = meta.max_time.saturating_sub(meta.min_time);
    writeln!(out, "Block ID: {}", meta.ulid).map_err(io)?;
    writeln!(out, "Duration: {}", go_duration(span)).map_err(io)?;
    writeln!(out, "Total Series: {}", meta.stats.num_series).map_err(io)?;

    let refs = if matchers.is_empty() {
        index.all_postings()?
    } else {
        index.postings_for_matchers(matchers)?
    };
    let mut pair_uncovered: BTreeMap<String, u64> = BTreeMap::new();
    let mut name_uncovered: BTreeMap<String, u64> = BTreeMap::new();
    let mut pair_count: BTreeMap<String, u64> = BTreeMap::new();
    let mut values: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut entries = 0u64;
    for r in &refs {
        let (labels, chunks) = index.series(*r)?;
        let covered = match (chunks.first(), chunks.last()) {
            (Some(f), Some(l)) => l.max_time.saturating_sub(f.min_time),
            _ => 0,
        };
        let uncovered = span.saturating_sub(covered).max(0) as u64;
        for (name, value) in labels.iter() {
            let key = format!("{name}={value}");
            *name_uncovered.entry(name.to_string()).or_default() += uncovered;
            *pair_uncovered.entry(key.clone()).or_default() += uncovered;
            *pair_count.entry(key).or_default() += 1;
            *values
                .entry(name.to_string())
                .or_default()
                .entry(value.to_string())
                .or_default() += 1;
            entries += 1;
        }
    }
    if let Some(selector) = selector {
        writeln!(out, "Matcher: {selector}").map_err(io)?;
    }
    writeln!(out, "Label names: {}", values.len()).map_err(io)?;
    if !matchers.is_empty() {
        writeln!(out, "Matched series: {}", refs.len()).map_err(io)?;
    }
    writeln!(
        out,
        "Postings (unique label pairs): {}",
        pair_uncovered.len()
    )
    .map_err(io)?;
    writeln!(out, "Postings entries (total label pairs): {entries}").map_err(io)?;

    let per_span = |m: u64| {
        if span > 0 {
            (m as f64 / span as f64) as u64
        } else {
            0
        }
    };
    let churn_pairs = pair_uncovered
        .into_iter()
        .map(|(k, m)| (k, per_span(m)))
        .collect();
    print_top(
        out,
        "Label pairs most involved in churning",
        churn_pairs,
        limit,
    )
    .map_err(io)?;
    let churn_names = name_uncovered
        .into_iter()
        .map(|(k, m)| (k, per_span(m)))
        .collect();
    print_top(
        out,
        "Label names most involved in churning",
        churn_names,
        limit,
    )
    .map_err(io)?;
    print_top(
        out,
        "Most common label pairs",
        pair_count.into_iter().collect(),
        limit,
    )
    .map_err(io)?;
    let lengths = values
        .iter()
        .map(|(n, vs)| (n.clone(), vs.keys().map(|v| v.len() as u64).sum()))
        .collect();
    print_top(
        out,
        "Label names with highest cumulative label value length",
        lengths,
        limit,
    )
    .map_err(io)?;
    let cardinality = values
        .iter()
        .map(|(n, vs)| (n.clone(), vs.len() as u64))
        .collect();
    print_top(out, "Highest cardinality labels", cardinality, limit).map_err(io)?;
    let names = values
        .get("__name__")
        .map(|vs| vs.iter().map(|(v, n)| (v.clone(), *n)).collect())
        .unwrap_or_default();
    print_top(out, "Highest cardinality metric names", names, limit).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        for (ms, want) in [
            (0, "0s"),
            (999, "999ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (61_000, "1m1s"),
            (7_200_000, "2h0m0s"),
            (7_199_999, "1h59m59.999s"),
            (-90_000, "-1m30s"),
        ] {
            assert_eq!(go_duration(ms), want, "{ms}");
        }
    }
}
