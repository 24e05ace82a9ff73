//! The block tools behind `strata tools tsdb`: `dump`, `analyze`, `create-blocks-from openmetrics`
//! (backfill). Their text output follows `promtool tsdb` so the two can be diffed.

pub mod analyze;
pub mod backfill;
pub mod dump;
pub mod gofmt;
pub mod openmetrics;

use std::path::Path;

use crate::{Block, Error, Result};

/// Opens `path` as one block (it holds `meta.json`) or as a data directory of blocks (each
/// sub-directory with a `meta.json`; others, such as `wal/` or `chunks_head/`, are skipped — the
/// head is not read). Blocks come back sorted by min time, then ULID.
pub fn open_blocks(path: &Path) -> Result<Vec<Block>> {
    if path.join("meta.json").is_file() {
        return Ok(vec![Block::open(path)?]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Blocks being written or deleted by Prometheus carry a suffix; they are not blocks yet.
        if p.join("meta.json").is_file() && !name.contains(".tmp") {
            dirs.push(p);
        }
    }
    dirs.sort();
    let mut blocks = dirs.iter().map(Block::open).collect::<Result<Vec<_>>>()?;
    blocks.sort_by(|a, b| {
        (a.meta().min_time, a.meta().ulid).cmp(&(b.meta().min_time, b.meta().ulid))
    });
    Ok(blocks)
}
