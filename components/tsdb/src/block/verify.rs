//! End-to-end block verification: every section and chunk checksum, ordering rules, and the
//! counts in `meta.json`.

use std::path::Path;

use super::Block;
use crate::chunkenc::Encoding;
use crate::error::{Error, Result};
use crate::labels::Labels;

/// What [`verify`] found. `problems` lists consistency violations in a block that could be read;
/// unreadable or corrupt data is an `Err` of [`verify`] instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Series in the index.
    pub num_series: u64,
    /// Chunks referenced by the index.
    pub num_chunks: u64,
    /// Samples in those chunks.
    pub num_samples: u64,
    /// Float samples.
    pub num_float_samples: u64,
    /// Histogram samples.
    pub num_histogram_samples: u64,
    /// Label pairs (postings lists, the all-series list excluded).
    pub num_label_pairs: u64,
    /// Label index sections checked (0 for indexes written by current Prometheus).
    pub num_label_indices: u64,
    /// Consistency problems (empty for a healthy block).
    pub problems: Vec<String>,
}

impl Report {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Opens the block at `dir` and checks it completely: meta.json, index (TOC, symbols, series,
/// postings, offset tables, label indices — every CRC), each chunk (CRC and full decode), time
/// ordering, block time range, and the stats in `meta.json`.
pub fn verify(dir: impl AsRef<Path>) -> Result<Report> {
    let block = Block::open(dir)?;
    let idx = block.index();
    let meta = block.meta();
    let mut rep = Report::default();

    let mut prev: Option<String> = None;
    for s in idx.symbols() {
        let s = s?;
        if let Some(p) = &prev
            && p.as_str() >= s
        {
            rep.problems
                .push(format!("symbol table not sorted: {p:?} before {s:?}"));
        }
        prev = Some(s.to_string());
    }

    let all = idx.all_postings()?;
    if all.windows(2).any(|w| w[0] >= w[1]) {
        rep.problems
            .push("all-series postings list not strictly increasing".into());
    }
    let mut label_refs = 0u64;
    for name in idx.label_names() {
        for value in idx.label_values(&name)? {
            let p = idx.postings(&name, &value)?;
            rep.num_label_pairs += 1;
            label_refs += p.len() as u64;
            if p.windows(2).any(|w| w[0] >= w[1]) {
                rep.problems.push(format!(
                    "postings of {name}={value:?} not strictly increasing"
                ));
            }
            if p.iter().any(|r| all.binary_search(r).is_err()) {
                rep.problems.push(format!(
                    "postings of {name}={value:?} reference unknown series"
                ));
            }
        }
    }
    rep.num_label_indices = idx.check_label_indices()? as u64;

    let mut last_labels: Option<Labels> = None;
    let mut last_chunk_ref = 0u64;
    let mut series_label_refs = 0u64;
    for &r in &all {
        let (labels, metas) = idx.series(r)?;
        series_label_refs += labels.len() as u64;
        if let Some(l) = &last_labels
            && &labels <= l
        {
            rep.problems
                .push(format!("series {r} {labels} not after {l}"));
        }
        let mut last_t: Option<i64> = None;
        for (i, m) in metas.iter().enumerate() {
            if m.min_time > m.max_time {
                rep.problems.push(format!(
                    "series {r}: chunk {i} min time {} > max time {}",
                    m.min_time, m.max_time
                ));
            }
            if m.chunk_ref.0 < last_chunk_ref {
                rep.problems.push(format!(
                    "series {r}: chunk ref {:#x} not increasing",
                    m.chunk_ref.0
                ));
            }
            last_chunk_ref = m.chunk_ref.0;
            if m.min_time < meta.min_time || m.max_time >= meta.max_time {
                rep.problems.push(format!(
                    "series {r}: chunk {i} [{}, {}] outside block range [{}, {})",
                    m.min_time, m.max_time, meta.min_time, meta.max_time
                ));
            }
            let chunk = block.chunk(m.chunk_ref).map_err(|e| e.in_series(r))?;
            let mut n = 0u64;
            let (mut first, mut last) = (None, None);
            for s in chunk.iter() {
                let t = s
                    .map_err(|e| super::locate(e, m.chunk_ref, &chunk).in_series(r))?
                    .t();
                if last_t.is_some_and(|l| t <= l) {
                    rep.problems.push(format!(
                        "series {r}: sample at {t} not after previous sample"
                    ));
                }
                last_t = Some(t);
                first.get_or_insert(t);
                last = Some(t);
                n += 1;
            }
            if n != u64::from(chunk.num_samples()) {
                return Err(Error::Corrupt {
                    file: "chunks".into(),
                    offset: m.chunk_ref.0,
                    what: "chunk decoded fewer samples than its header says".into(),
                }
                .in_series(r));
            }
            if first != Some(m.min_time) || last != Some(m.max_time) {
                rep.problems.push(format!(
                    "series {r}: chunk {i} samples span {first:?}..{last:?}, index says {}..{}",
                    m.min_time, m.max_time
                ));
            }
            rep.num_chunks += 1;
            rep.num_samples += n;
            match chunk.encoding() {
                Encoding::Xor | Encoding::Xor2 => rep.num_float_samples += n,
                _ => rep.num_histogram_samples += n,
            }
        }
        rep.num_series += 1;
        last_labels = Some(labels);
    }
    if series_label_refs != label_refs {
        rep.problems.push(format!(
            "postings hold {label_refs} series references but series hold {series_label_refs} labels"
        ));
    }

    let st = &meta.stats;
    for (what, got, want) in [
        ("numSeries", rep.num_series, st.num_series),
        ("numChunks", rep.num_chunks, st.num_chunks),
        ("numSamples", rep.num_samples, st.num_samples),
        (
            "numTombstones",
            block.tombstones().num_intervals(),
            st.num_tombstones,
        ),
    ] {
        if got != want {
            rep.problems
                .push(format!("meta.json stats.{what} is {want}, block has {got}"));
        }
    }
    if meta.min_time > meta.max_time {
        rep.problems.push(format!(
            "meta.json minTime {} > maxTime {}",
            meta.min_time, meta.max_time
        ));
    }
    Ok(rep)
}
