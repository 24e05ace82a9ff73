//! `strata tools bucket …`: look at and maintain the blocks in a bucket (ls, inspect, verify,
//! mark, retention, cleanup). Flags and output here; the work is in `strata-bucket` and
//! `strata-compact`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use strata_bucket::inspect::{self, BlockInfo, Issue};
use strata_bucket::lifecycle::{self, CleanupOptions};
use strata_bucket::marks::{MARK_VERSION, NoCompactMark, write_no_compact_mark};
use strata_bucket::sync::now_ms;
use strata_compact::retention::{Retention, apply_retention};
use strata_objstore::{Bucket, ObjstoreArgs};
use strata_tsdb::{MatchOp, Matcher};
use ulid::Ulid;

use crate::compact::duration;
use crate::exit::ConfigError;

/// `strata tools bucket`.
#[derive(Debug, Args)]
pub struct BucketArgs {
    /// The bucket (Thanos objstore YAML).
    #[command(flatten)]
    objstore: ObjstoreArgs,
    #[command(subcommand)]
    command: BucketCommand,
}

#[derive(Debug, Subcommand)]
enum BucketCommand {
    /// List the blocks: time range, counts, level, resolution, source, labels, marks.
    Ls(LsArgs),
    /// Show blocks in detail: counts, labels, files and sizes.
    Inspect(InspectArgs),
    /// Find problems: overlapping blocks in a group, missing files, (with --index) index problems.
    Verify(VerifyArgs),
    /// Write a deletion or no-compact mark for blocks.
    Mark(MarkArgs),
    /// Mark blocks past their resolution's retention for deletion (one pass).
    Retention(RetentionArgs),
    /// Delete blocks marked long enough ago; mark old partial uploads for deletion (one pass).
    Cleanup(CleanupArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Wide,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// Only these blocks (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Only blocks whose external labels match, e.g. `{cluster="eu",replica=~"a|b"}`.
    #[arg(long = "selector")]
    selector: Option<String>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Only these blocks (repeatable; overlaps are still checked against all blocks).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Also download every index and check it (series order, chunk references, chunk order).
    #[arg(long)]
    index: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MarkType {
    Deletion,
    NoCompact,
}

#[derive(Debug, Args)]
struct MarkArgs {
    /// Which mark.
    #[arg(long = "type", value_enum)]
    kind: MarkType,
    /// The blocks (repeatable, at least one).
    #[arg(long = "id", required = true)]
    ids: Vec<String>,
    /// Why (stored in the mark).
    #[arg(long, required = true)]
    details: String,
    /// Print what would be marked, write nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct RetentionArgs {
    /// How long to keep raw blocks (0 = forever), e.g. 30d.
    #[arg(long = "retention.resolution-raw", value_parser = duration_ms, default_value = "0s")]
    raw: i64,
    /// How long to keep 5m blocks (0 = forever).
    #[arg(long = "retention.resolution-5m", value_parser = duration_ms, default_value = "0s")]
    five_m: i64,
    /// How long to keep 1h blocks (0 = forever).
    #[arg(long = "retention.resolution-1h", value_parser = duration_ms, default_value = "0s")]
    one_h: i64,
    /// Print what would be marked, write nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct CleanupArgs {
    /// Blocks marked for deletion longer ago than this are deleted.
    #[arg(long = "delete-delay", value_parser = duration, default_value = "48h")]
    delete_delay: Duration,
    /// Partial uploads (no meta.json) older than this are marked for deletion.
    #[arg(long = "partial-upload-threshold", value_parser = duration, default_value = "48h")]
    partial_upload_threshold: Duration,
    /// Print what would be deleted or marked, change nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
}

fn duration_ms(s: &str) -> Result<i64, String> {
    let d = duration(s)?;
    i64::try_from(d.as_millis()).map_err(|_| format!("duration {s:?} too large"))
}

fn parse_ids(ids: &[String]) -> anyhow::Result<Vec<Ulid>> {
    ids.iter()
        .map(|s| {
            Ulid::from_string(s)
                .map_err(|e| ConfigError(format!("--id {s:?}: not a block ULID: {e}")).into())
        })
        .collect()
}

/// Fails (exit 2) when an asked-for id is not a block of the bucket.
fn check_known(ids: &[Ulid], blocks: &[BlockInfo]) -> anyhow::Result<()> {
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !blocks.iter().any(|b| b.id == **id))
        .map(Ulid::to_string)
        .collect();
    if !unknown.is_empty() {
        bail!(ConfigError(format!(
            "--id: no such block in the bucket: {}",
            unknown.join(", ")
        )));
    }
    Ok(())
}

/// Runs `strata tools bucket …`.
pub fn run(args: BucketArgs) -> anyhow::Result<()> {
    let config = args
        .objstore
        .load()
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let bucket = Bucket::from_config(&config)
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(run_command(&bucket, args.command))
}

async fn run_command(bucket: &Bucket, cmd: BucketCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        BucketCommand::Ls(a) => {
            let blocks = inspect::load_blocks(bucket, &[])
                .await
                .context("ls: list blocks")?;
            match a.output {
                Output::Json => {
                    let items: Vec<serde_json::Value> = blocks.iter().map(block_json).collect();
                    serde_json::to_writer_pretty(&mut out, &items)?;
                    writeln!(out)?;
                }
                Output::Table | Output::Wide => {
                    write_table(&mut out, &blocks, matches!(a.output, Output::Wide))?
                }
            }
        }
        BucketCommand::Inspect(a) => {
            let ids = parse_ids(&a.ids)?;
            let selector = match &a.selector {
                Some(s) => Some(parse_label_selector(s)?),
                None => None,
            };
            let blocks = inspect::load_blocks(bucket, &ids)
                .await
                .context("inspect: list blocks")?;
            check_known(&ids, &blocks)?;
            for b in &blocks {
                if let Some(sel) = &selector {
                    let Some(meta) = &b.meta else { continue };
                    let labels = strata_bucket::sync::external_labels(meta);
                    if !sel
                        .iter()
                        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
                    {
                        continue;
                    }
                }
                write_inspect(&mut out, bucket, b)
                    .await
                    .with_context(|| format!("inspect: block {}", b.id))?;
            }
        }
        BucketCommand::Verify(a) => {
            let ids = parse_ids(&a.ids)?;
            let all = inspect::load_blocks(bucket, &[])
                .await
                .context("verify: list blocks")?;
            check_known(&ids, &all)?;
            let chosen: Vec<&BlockInfo> = all
                .iter()
                .filter(|b| ids.is_empty() || ids.contains(&b.id))
                .collect();
            let mut issues: Vec<Issue> = inspect::overlaps(&all)
                .into_iter()
                .filter(|i| {
                    ids.is_empty()
                        || ids.contains(&i.block)
                        || ids.iter().any(|id| i.what.contains(&id.to_string()))
                })
                .collect();
            let mut bar = Progress::new(chosen.len() as u64, "verify");
            for b in &chosen {
                if let Some(e) = &b.meta_error {
                    issues.push(Issue {
                        block: b.id,
                        what: format!("meta.json unparseable: {e}"),
                    });
                }
                issues.extend(inspect::missing_files(b));
                if a.index {
                    let found = inspect::verify_index(bucket, b)
                        .await
                        .with_context(|| format!("verify: index of block {}", b.id))?;
                    issues.extend(found);
                }
                bar.inc(&b.id.to_string());
            }
            bar.finish();
            if issues.is_empty() {
                writeln!(out, "no issues ({} blocks checked)", chosen.len())?;
            } else {
                for i in &issues {
                    writeln!(out, "{i}")?;
                }
                out.flush()?;
                bail!("verify: {} issue(s) found", issues.len());
            }
        }
        BucketCommand::Mark(a) => {
            let ids = parse_ids(&a.ids)?;
            let blocks = inspect::load_blocks(bucket, &ids)
                .await
                .context("mark: list blocks")?;
            check_known(&ids, &blocks)?;
            let now = now_ms();
            for id in ids {
                if a.dry_run {
                    writeln!(out, "would mark {id} ({:?}): {}", a.kind, a.details)?;
                    continue;
                }
                match a.kind {
                    MarkType::Deletion => {
                        let new = lifecycle::mark_for_deletion(bucket, id, &a.details, now)
                            .await
                            .with_context(|| format!("mark: block {id}"))?;
                        if new {
                            writeln!(out, "marked {id} for deletion")?;
                        } else {
                            writeln!(out, "{id} already marked for deletion")?;
                        }
                    }
                    MarkType::NoCompact => {
                        let mark = NoCompactMark {
                            id,
                            version: MARK_VERSION,
                            details: Some(a.details.clone()),
                            no_compact_time: now / 1000,
                            reason: "manual".into(),
                        };
                        write_no_compact_mark(bucket, &mark)
                            .await
                            .with_context(|| format!("mark: block {id}"))?;
                        writeln!(out, "marked {id} no-compact")?;
                    }
                }
            }
        }
        BucketCommand::Retention(a) => {
            let blocks = inspect::load_blocks(bucket, &[])
                .await
                .context("retention: list blocks")?;
            let metas: Vec<_> = blocks
                .into_iter()
                .filter(|b| !b.objects.deletion_mark)
                .filter_map(|b| b.meta)
                .collect();
            let opt = |ms: i64| (ms > 0).then_some(ms);
            let retention = Retention {
                raw_ms: opt(a.raw),
                five_m_ms: opt(a.five_m),
                one_h_ms: opt(a.one_h),
            };
            let marked = apply_retention(bucket, &metas, &retention, now_ms(), a.dry_run)
                .await
                .context("retention: mark blocks")?;
            let verb = if a.dry_run { "would mark" } else { "marked" };
            for id in &marked {
                writeln!(out, "{verb} {id} for deletion (retention)")?;
            }
            writeln!(out, "{} block(s) {verb} for deletion", marked.len())?;
        }
        BucketCommand::Cleanup(a) => {
            let opts = CleanupOptions {
                delete_delay: a.delete_delay,
                partial_upload_threshold: a.partial_upload_threshold,
                now_ms: now_ms(),
                dry_run: a.dry_run,
            };
            let report = lifecycle::cleanup(bucket, &opts).await.context("cleanup")?;
            let (del, mark) = if a.dry_run {
                ("would delete", "would mark")
            } else {
                ("deleted", "marked")
            };
            for id in &report.deleted {
                writeln!(out, "{del} {id}")?;
            }
            for id in &report.partial_marked {
                writeln!(out, "{mark} partial upload {id} for deletion")?;
            }
            writeln!(
                out,
                "{del} {} block(s), {mark} {} partial upload(s) for deletion",
                report.deleted.len(),
                report.partial_marked.len()
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Progress of a long operation: a bar when stderr is a terminal, one plain line a step otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    len: u64,
    done: u64,
}

impl Progress {
    fn new(len: u64, what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_message(what);
            bar
        });
        Progress {
            bar,
            what,
            len,
            done: 0,
        }
    }

    /// One step (`item`) finished.
    fn inc(&mut self, item: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => {
                // Progress lines are best effort; a closed stderr is no reason to fail.
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: {item} done ({}/{})",
                    self.what,
                    self.done,
                    self.len
                );
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Parses `{name="v", other=~"re"}` into matchers on external labels.
fn parse_label_selector(s: &str) -> anyhow::Result<Vec<Matcher>> {
    use promql_parser::label::MatchOp as P;
    let bad = |why: String| ConfigError(format!("--selector {s:?}: {why}"));
    let expr = promql_parser::parser::parse(s).map_err(bad)?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        bail!(bad("not a label selector".into()));
    };
    if vs.name.is_some() || !vs.matchers.or_matchers.is_empty() {
        bail!(bad("only `{label=\"value\", …}` is supported".into()));
    }
    vs.matchers
        .matchers
        .into_iter()
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
}

/// `2006-01-02T15:04:05Z` from Unix milliseconds (UTC); out-of-range times print as the number.
fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn fmt_range(ms: i64) -> String {
    strata_compact::retention::format_duration_ms(ms)
}

fn fmt_resolution(res: i64) -> &'static str {
    match res {
        0 => "0s",
        300_000 => "5m",
        3_600_000 => "1h",
        _ => "other",
    }
}

fn marks_of(b: &BlockInfo) -> String {
    let mut m = Vec::new();
    if b.objects.deletion_mark {
        m.push("deletion");
    }
    if b.objects.no_compact_mark {
        m.push("no-compact");
    }
    if !b.objects.meta {
        m.push("partial");
    }
    if m.is_empty() {
        "-".into()
    } else {
        m.join(",")
    }
}

fn write_table(out: &mut impl Write, blocks: &[BlockInfo], wide: bool) -> anyhow::Result<()> {
    let mut header = vec![
        "ULID",
        "FROM",
        "UNTIL",
        "RANGE",
        "SERIES",
        "SAMPLES",
        "CHUNKS",
        "LEVEL",
        "RESOLUTION",
        "SOURCE",
        "LABELS",
        "MARKS",
    ];
    if wide {
        header.extend(["FILES", "SOURCES"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for b in blocks {
        let mut row = match &b.meta {
            Some(m) => vec![
                b.id.to_string(),
                fmt_time(m.min_time),
                fmt_time(m.max_time),
                fmt_range(m.max_time - m.min_time),
                m.stats.num_series.to_string(),
                m.stats.num_samples.to_string(),
                m.stats.num_chunks.to_string(),
                m.compaction.level.to_string(),
                fmt_resolution(b.resolution()).to_string(),
                m.thanos
                    .as_ref()
                    .map(|t| t.source.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or("-")
                    .to_string(),
                b.labels_string(),
                marks_of(b),
            ],
            None => {
                let mut r = vec![b.id.to_string()];
                r.extend(std::iter::repeat_n("-".to_string(), 10));
                r.push(marks_of(b));
                r
            }
        };
        if wide {
            row.push(b.files.len().to_string());
            row.push(b.meta.as_ref().map_or(String::from("-"), |m| {
                m.compaction
                    .sources
                    .iter()
                    .map(Ulid::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn block_json(b: &BlockInfo) -> serde_json::Value {
    serde_json::json!({
        "ulid": b.id.to_string(),
        "meta": b.meta,
        "marks": {
            "deletion": b.objects.deletion_mark,
            "no_compact": b.objects.no_compact_mark,
        },
        "partial": !b.objects.meta,
        "files": b.files,
    })
}

async fn write_inspect(out: &mut impl Write, bucket: &Bucket, b: &BlockInfo) -> anyhow::Result<()> {
    writeln!(out, "Block {}", b.id)?;
    match &b.meta {
        Some(m) => {
            writeln!(
                out,
                "  time range:  {} .. {} ({} .. {}, {})",
                fmt_time(m.min_time),
                fmt_time(m.max_time),
                m.min_time,
                m.max_time,
                fmt_range(m.max_time - m.min_time)
            )?;
            writeln!(out, "  resolution:  {}", fmt_resolution(b.resolution()))?;
            writeln!(out, "  level:       {}", m.compaction.level)?;
            writeln!(out, "  series:      {}", m.stats.num_series)?;
            writeln!(out, "  samples:     {}", m.stats.num_samples)?;
            writeln!(out, "  chunks:      {}", m.stats.num_chunks)?;
            writeln!(out, "  labels:      {}", b.labels_string())?;
            writeln!(
                out,
                "  source:      {}",
                m.thanos.as_ref().map_or("", |t| t.source.as_str())
            )?;
        }
        None => match &b.meta_error {
            Some(e) => writeln!(out, "  meta.json unparseable: {e}")?,
            None => writeln!(out, "  partial upload (no meta.json)")?,
        },
    }
    writeln!(out, "  marks:       {}", marks_of(b))?;
    writeln!(out, "  files:")?;
    let mut total = 0u64;
    for f in &b.files {
        let size = bucket.attributes(&format!("{}/{f}", b.id)).await?.size;
        total += size;
        writeln!(out, "    {f:<24} {size}")?;
    }
    writeln!(out, "  total size:  {total}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn selectors_and_ids_are_checked() {
        let m = parse_label_selector(r#"{cluster="eu", replica=~"a|b"}"#).expect("parses");
        assert_eq!(m.len(), 2);
        assert!(parse_label_selector("up{a=\"b\"}").is_err());
        assert!(parse_label_selector("{a=").is_err());
        assert!(parse_ids(&["nope".into()]).is_err());
        assert_eq!(
            parse_ids(&["01ARZ3NDEKTSV4RRFFQ69G5FAV".into()])
                .expect("ulid")
                .len(),
            1
        );
    }
}
