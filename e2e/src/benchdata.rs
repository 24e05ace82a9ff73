//! The shared bench data set (`shared/bench/gen-openmetrics`) backfilled into TSDB blocks by the real
//! `promtool`, so a real Prometheus and Strata can serve the very same samples.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, promtool};

/// Where `shared/bench` is: `$STRATA_BENCH_DIR`, else beside the checkout (`../shared/bench`).
pub fn bench_dir() -> PathBuf {
    std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench"))
}

/// The standard query set (`shared/bench/queries.txt`): one expression a line, comments skipped.
pub fn standard_queries() -> Result<Vec<String>> {
    let path = bench_dir().join("queries.txt");
    let text =
        std::fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))?;
    Ok(query_lines(&text))
}

/// The non-empty, non-comment (`#`) lines of a query list, trimmed.
pub fn query_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Blocks made from generated OpenMetrics, in a temporary directory deleted on drop.
#[derive(Debug)]
pub struct BenchData {
    dir: tempfile::TempDir,
    blocks: PathBuf,
    min_ms: i64,
    max_ms: i64,
    samples: u64,
    series: u64,
}

impl BenchData {
    /// Runs `gen-openmetrics` with `args` (e.g. `--targets 10 --hours 2`) and backfills the output
    /// with `promtool tsdb create-blocks-from openmetrics`.
    pub fn generate(args: &[&str]) -> Result<Self> {
        Self::generate_with(args, None)
    }

    /// Like [`BenchData::generate`], but backfilled with `strata tools tsdb create-blocks-from
    /// openmetrics` of `strata` (one pass over the input; promtool reads the whole input once per
    /// 2h block, which takes many minutes for a month of data).
    pub fn generate_with_strata(args: &[&str], strata: &Path) -> Result<Self> {
        Self::generate_with(args, Some(strata))
    }

    fn generate_with(args: &[&str], strata: Option<&Path>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-bench-")
            .tempdir()
            .map_err(Error::io("create bench data dir"))?;
        let script = bench_dir().join("gen-openmetrics");
        if !script.is_file() {
            return Err(Error::MissingTool {
                tool: "gen-openmetrics",
                detail: format!(
                    "{} not found; set STRATA_BENCH_DIR to shared/bench",
                    script.display()
                ),
            });
        }
        let out = Command::new("python3")
            .arg(&script)
            .args(args)
            .output()
            .map_err(|source| Error::Spawn {
                name: format!("python3 {}", script.display()),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Request {
                step: format!("gen-openmetrics {args:?}"),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let om = dir.path().join("data.om");
        std::fs::write(&om, &out.stdout).map_err(Error::io(format!("write {}", om.display())))?;
        let blocks = dir.path().join("blocks");
        let (om_s, blocks_s) = (om.to_string_lossy(), blocks.to_string_lossy());
        let backfill = ["tsdb", "create-blocks-from", "openmetrics"];
        let (out, step) = match strata {
            None => (
                promtool(&[&backfill[..], &[om_s.as_ref(), blocks_s.as_ref()]].concat())?,
                "promtool tsdb create-blocks-from openmetrics",
            ),
            Some(bin) => (
                Command::new(bin)
                    .arg("tools")
                    .args(backfill)
                    .args(["--quiet", om_s.as_ref(), blocks_s.as_ref()])
                    .output()
                    .map_err(|source| Error::Spawn {
                        name: format!("{} tools tsdb create-blocks-from", bin.display()),
                        source,
                    })?,
                "strata tools tsdb create-blocks-from openmetrics",
            ),
        };
        if !out.status.success() {
            return Err(Error::Request {
                step: step.into(),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        std::fs::remove_file(&om).map_err(Error::io("remove data.om"))?;
        let (mut min_ms, mut max_ms, mut samples, mut series) = (i64::MAX, i64::MIN, 0, 0);
        for meta in block_metas(&blocks)? {
            min_ms = min_ms.min(meta["minTime"].as_i64().unwrap_or(i64::MAX));
            max_ms = max_ms.max(meta["maxTime"].as_i64().unwrap_or(i64::MIN));
            samples += meta["stats"]["numSamples"].as_u64().unwrap_or(0);
            series += meta["stats"]["numSeries"].as_u64().unwrap_or(0);
        }
        if min_ms > max_ms {
            return Err(Error::Request {
                step: "backfill".into(),
                message: format!("promtool wrote no blocks into {}", blocks.display()),
            });
        }
        Ok(Self {
            dir,
            blocks,
            min_ms,
            max_ms,
            samples,
            series,
        })
    }

    /// The directory holding the blocks (use [`BenchData::copy_to`] to give each server its own).
    pub fn blocks_dir(&self) -> &Path {
        &self.blocks
    }

    /// Copies the blocks into a fresh directory under this data set's temporary directory.
    pub fn copy_to(&self, name: &str) -> Result<PathBuf> {
        let to = self.dir.path().join(name);
        copy_dir(&self.blocks, &to)?;
        Ok(to)
    }

    /// The first sample's timestamp, Unix seconds.
    pub fn start_secs(&self) -> f64 {
        self.min_ms as f64 / 1000.0
    }

    /// The last sample's timestamp, Unix seconds (block max times are exclusive).
    pub fn end_secs(&self) -> f64 {
        (self.max_ms - 1) as f64 / 1000.0
    }

    /// Samples in all blocks (from their `meta.json`).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Series summed over the blocks (a series in two blocks counts twice).
    pub fn block_series(&self) -> u64 {
        self.series
    }
}

fn block_metas(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut metas = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(format!("read {}", dir.display())))? {
        let entry = entry.map_err(Error::io("read dir entry"))?;
        let meta = entry.path().join("meta.json");
        if !meta.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&meta)
            .map_err(Error::io(format!("read {}", meta.display())))?;
        let json = serde_json::from_str(&text).map_err(|e| Error::Request {
            step: format!("parse {}", meta.display()),
            message: e.to_string(),
        })?;
        metas.push(json);
    }
    Ok(metas)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io(format!("create {}", to.display())))?;
    for entry in std::fs::read_dir(from).map_err(Error::io(format!("read {}", from.display())))? {
        let entry = entry.map_err(Error::io("read dir entry"))?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(Error::io("file type"))?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(Error::io(format!("copy to {}", target.display())))?;
        }
    }
    Ok(())
}
