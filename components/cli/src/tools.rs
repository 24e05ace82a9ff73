//! `strata tools …`: offline tools. Flags here; the work is in the component crates.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use strata_tsdb::tools::{analyze, backfill, dump};
use strata_tsdb::{MatchOp, Matcher};

use crate::exit::ConfigError;

/// `strata tools`.
#[derive(Debug, Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    command: ToolsCommand,
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// Work with Prometheus TSDB blocks.
    #[command(subcommand)]
    Tsdb(TsdbCommand),
    /// Look at and maintain the blocks in a bucket (ls, inspect, verify, mark, retention, cleanup).
    Bucket(crate::tools_bucket::BucketArgs),
    /// Run Prometheus PromQL test scripts (`load`/`eval`/`clear`) against Strata's engine.
    Promqltest(PromqlTestArgs),
}

#[derive(Debug, Args)]
struct PromqlTestArgs {
    /// Test script files (the `promql/promqltest/testdata/*.test` format).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TsdbCommand {
    /// Print every sample of a block or a data directory of blocks, as `promtool tsdb dump` does.
    Dump(DumpArgs),
    /// Summarise a block's cardinality, as `promtool tsdb analyze` does.
    Analyze(AnalyzeArgs),
    /// Create blocks from other data (like `promtool tsdb create-blocks-from`).
    #[command(subcommand, name = "create-blocks-from")]
    CreateBlocksFrom(CreateFrom),
    /// Check a block completely: checksums, ordering, chunk bounds, index/chunk consistency, stats.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// Earliest timestamp to dump, in ms since the epoch.
    #[arg(long = "min-time", default_value_t = i64::MIN, allow_negative_numbers = true)]
    min_time: i64,
    /// Latest timestamp to dump, in ms since the epoch.
    #[arg(long = "max-time", default_value_t = i64::MAX, allow_negative_numbers = true)]
    max_time: i64,
    /// Series selector, e.g. `up{job="api"}`; repeat for a union. Default: every series.
    #[arg(long = "match")]
    matchers: Vec<String>,
    /// A block directory, or a data directory holding blocks (the head and WAL are not read).
    path: PathBuf,
}

#[derive(Debug, Args)]
struct AnalyzeArgs {
    /// How many rows each section shows.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Analyze only the series matching this selector.
    #[arg(long = "match")]
    matcher: Option<String>,
    /// A block directory, or a data directory (its newest block is analyzed).
    path: PathBuf,
}

#[derive(Debug, Subcommand)]
enum CreateFrom {
    /// From OpenMetrics text with a timestamp on every sample.
    Openmetrics(OpenMetricsArgs),
}

#[derive(Debug, Args)]
struct OpenMetricsArgs {
    /// Largest block duration to create (e.g. 2h, 6h, 1d); blocks are 2h × 3ⁿ up to it.
    #[arg(long = "max-block-duration", value_parser = humantime_ms)]
    max_block_duration: Option<i64>,
    /// A label to add to every series, `name=value`; repeatable.
    #[arg(long = "label", value_parser = label_pair)]
    labels: Vec<(String, String)>,
    /// Do not print the created blocks.
    #[arg(long, short)]
    quiet: bool,
    /// The OpenMetrics file.
    input: PathBuf,
    /// Where the blocks go (created if missing).
    output: PathBuf,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The block directory.
    block: PathBuf,
}

fn humantime_ms(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    i64::try_from(d.as_millis()).map_err(|_| format!("duration {s:?} too large"))
}

fn label_pair(s: &str) -> Result<(String, String), String> {
    let (n, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not name=value"))?;
    Ok((n.to_string(), v.to_string()))
}

/// Parses a PromQL series selector into matcher sets (`or` inside braces gives several sets).
fn parse_selector(flag: &str, s: &str) -> anyhow::Result<Vec<Vec<Matcher>>> {
    use promql_parser::label::MatchOp as P;
    use promql_parser::parser::{Expr, parse};
    let bad = |why: String| ConfigError(format!("{flag} {s:?}: {why}"));
    let expr = parse(s).map_err(bad)?;
    let Expr::VectorSelector(vs) = expr else {
        bail!(bad("not a series selector".into()));
    };
    let mut sets: Vec<Vec<promql_parser::label::Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.clone()]
    } else {
        vs.matchers.or_matchers.clone()
    };
    if let Some(name) = &vs.name {
        for set in &mut sets {
            if !set.iter().any(|m| m.name == "__name__") {
                set.push(promql_parser::label::Matcher::new(
                    P::Equal,
                    "__name__",
                    name,
                ));
            }
        }
    }
    sets.into_iter()
        .map(|set| {
            set.into_iter()
                .map(|m| {
                    let op = match m.op {
                        P::Equal => MatchOp::Equal,
                        P::NotEqual => MatchOp::NotEqual,
                        P::Re(_) => MatchOp::RegexMatch,
                        P::NotRe(_) => MatchOp::RegexNoMatch,
                    };
                    Matcher::new(op, m.name, m.value).map_err(|e| bad(e.to_string()).into())
                })
                .collect()
        })
        .collect()
}

/// Runs `strata tools …`.
pub fn run(args: ToolsArgs) -> anyhow::Result<()> {
    match args.command {
        ToolsCommand::Tsdb(cmd) => run_tsdb(cmd),
        ToolsCommand::Promqltest(a) => run_promqltest(a),
        ToolsCommand::Bucket(a) => crate::tools_bucket::run(a),
    }
}

/// Prints one line per failing statement and `N passed, M failed` per file; fails when any did.
fn run_promqltest(a: PromqlTestArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for path in &a.files {
        let src = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .context(ConfigError(format!("cannot read {}", path.display())))?;
        let report = strata_promql::promqltest::run_script(&src);
        failed += report.failed();
        out.write_all(report.render(&path.display().to_string()).as_bytes())?;
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} statement(s) failed");
    }
    Ok(())
}

fn run_tsdb(cmd: TsdbCommand) -> anyhow::Result<()> {
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    match cmd {
        TsdbCommand::Dump(a) => {
            let mut matcher_sets = Vec::new();
            for m in &a.matchers {
                matcher_sets.extend(parse_selector("--match", m)?);
            }
            let blocks = strata_tsdb::tools::open_blocks(&a.path)
                .with_context(|| format!("open {}", a.path.display()))?;
            let opts = dump::DumpOptions {
                min_time: a.min_time,
                max_time: a.max_time,
                matcher_sets,
            };
            dump::dump(&blocks, &opts, &mut out)?;
        }
        TsdbCommand::Analyze(a) => {
            let matchers = match &a.matcher {
                Some(m) => {
                    let mut sets = parse_selector("--match", m)?;
                    if sets.len() != 1 {
                        bail!(ConfigError(
                            "--match: only one matcher set is supported".into()
                        ));
                    }
                    sets.remove(0)
                }
                None => Vec::new(),
            };
            let blocks = strata_tsdb::tools::open_blocks(&a.path)
                .with_context(|| format!("open {}", a.path.display()))?;
            let block = blocks
                .iter()
                .max_by_key(|b| (b.meta().max_time, b.meta().ulid))
                .with_context(|| format!("{}: no block found", a.path.display()))?;
            analyze::analyze(block, a.matcher.as_deref(), &matchers, a.limit, &mut out)?;
        }
        TsdbCommand::CreateBlocksFrom(CreateFrom::Openmetrics(a)) => {
            let input = std::fs::read_to_string(&a.input)
                .map_err(|e| ConfigError(format!("read {}: {e}", a.input.display())))?;
            let bar = if std::io::stderr().is_terminal() {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message("samples parsed");
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            let opts = backfill::BackfillOptions {
                max_block_duration_ms: a.max_block_duration,
                labels: a.labels,
            };
            let blocks =
                backfill::create_blocks(&input, &a.output, &opts, &mut |n| bar.set_position(n))
                    .with_context(|| format!("create blocks from {}", a.input.display()))?;
            bar.finish_and_clear();
            if !a.quiet {
                writeln!(
                    out,
                    "BLOCK ULID\tMIN TIME\tMAX TIME\tNUM SERIES\tNUM SAMPLES"
                )?;
                for b in blocks {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        b.ulid, b.min_time, b.max_time, b.num_series, b.num_samples
                    )?;
                }
            }
        }
        TsdbCommand::Verify(a) => {
            let report = strata_tsdb::verify(&a.block)
                .with_context(|| format!("verify {}", a.block.display()))?;
            if let Some(first) = report.problems.first() {
                bail!(
                    "{}: {} problem(s); first: {first}",
                    a.block.display(),
                    report.problems.len()
                );
            }
            writeln!(
                out,
                "{}: ok: {} series, {} chunks, {} samples, {} label pairs",
                a.block.display(),
                report.num_series,
                report.num_chunks,
                report.num_samples,
                report.num_label_pairs
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write script");
        p
    }

    #[test]
    fn promqltest_fails_only_when_a_statement_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = script(
            &dir,
            "good.test",
            "load 1m\n  m{a=\"b\"} 1+1x3\n\neval instant at 2m m\n  m{a=\"b\"} 3\n",
        );
        let bad = script(
            &dir,
            "bad.test",
            "load 1m\n  m 1\n\neval instant at 0m m\n  m 2\n",
        );
        assert!(
            run_promqltest(PromqlTestArgs {
                files: vec![good.clone()]
            })
            .is_ok()
        );
        let err = run_promqltest(PromqlTestArgs {
            files: vec![good, bad],
        })
        .expect_err("bad.test fails");
        assert!(err.to_string().contains("1 statement(s) failed"), "{err}");
        let missing = run_promqltest(PromqlTestArgs {
            files: vec![dir.path().join("nope.test")],
        });
        assert!(missing.is_err());
    }
}
