//! Compaction speed and peak memory against Prometheus's own compactor, on the same blocks in the
//! same run.
//!
//! Input: 4 consecutive 2h blocks of `STRATA_BENCH_SERIES` (default 200 000) series scraped every
//! 15 s (480 samples a series and block), written with `strata-tsdb`'s block writer from a seeded
//! generator (half counters with occasional resets, 70 % of them integer with idle scrapes,
//! 30 % fractional; half gauges, half of those constant, the rest an integer random walk; a few
//! ms of scrape jitter), 8h-aligned.
//!
//! - **Strata**: `strata_compact::compact_with_stats` runs in a child process (this bench binary
//!   re-executed with `--compact-child`), so its peak RSS is its own: the child reports `VmHWM`
//!   from `/proc/self/status` just before it exits; the parent also samples `RssAnon`.
//! - **Prometheus** (the real 3.x, `$STRATA_PROMETHEUS`) is started on a data dir holding hard
//!   links to the same 4 blocks. Its TSDB only compacts persisted blocks on its reload tick (once
//!   a minute after start; nothing happens at start), and its planner needs two things, both
//!   read from `tsdb/compact.go` / `tsdb/db.go`:
//!   1. a compaction range of exactly 8h. Prometheus's ranges are `min-block-duration × 3^k`,
//!      cut at `max-block-duration`, so with `--storage.tsdb.min-block-duration=2h` the ranges are
//!      2h, 6h, 18h… and the 4 blocks would become one 6h block plus a 2h one. The bench starts it
//!      with `min-block-duration=160m` (ranges 160m, 8h, 24h) and `max-block-duration=24h`; the
//!      input blocks are still 2h blocks, the minimum only matters for head blocks (the head stays
//!      empty: no scrape configs).
//!   2. a newer block: the planner never selects the most recent block (it leaves a window for
//!      backups), so a one-series block in the next 2h is added to Prometheus's dir only.
//!
//! Prometheus runs with retention 100y (the data is in the past). Compaction time is the `duration`
//! Prometheus logs for the `compact blocks` step (the same work as Strata's call: open the
//! inputs, merge, write the new block); peak RSS is sampled (`VmRSS`, `RssAnon` every 20 ms)
//! from just before the first tick to the end of the compaction, and reported both as the peak
//! and as the peak minus the idle baseline measured just before the tick.
//!
//! CPU time (user + system from `/proc/<pid>/stat`: the child's own at its end; Prometheus's
//! difference across the compaction window, in which it does nothing else) is printed beside
//! the wall time because these machines are shared: wall time depends on the neighbours' load.
//!
//! The output blocks' series and sample counts (`meta.json` stats) must agree.
//!
//! Run with `cargo bench -p strata --bench compact_vs_prometheus` (heavy: ~384 M samples, a few
//! GB of temporary disk; `TMPDIR` chooses where). `STRATA_BENCH_SERIES=2000` is a quick smoke
//! run. `cargo test --benches` runs it without `--bench`: then it only checks that it was built.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)] // a benchmark reports on stdout; fixtures are ours

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_compact::{CompactOptions, compact_with_stats};
use strata_e2e::Prometheus;
use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};

/// 8h-aligned start of the data (a multiple of 8h in ms since the epoch).
const T0: i64 = 60_763 * EIGHT_HOURS;
const TWO_HOURS: i64 = 2 * 3600 * 1000;
const EIGHT_HOURS: i64 = 4 * TWO_HOURS;
const SCRAPE_MS: i64 = 15_000;
const BLOCKS: i64 = 4;
const METRICS: u64 = 200;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--compact-child") {
        child(&args[2..]);
        return;
    }
    // For profiling: `--write-inputs <dir> <series>` writes the 4 input blocks and prints them.
    if args.get(1).map(String::as_str) == Some("--write-inputs") {
        let (blocks, _) = write_blocks(Path::new(&args[2]), args[3].parse().unwrap());
        for b in blocks {
            println!("{}", b.display());
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// The child: `--compact-child <out_parent> <input>...`; prints one `CHILD` line.
fn child(args: &[String]) {
    let out = PathBuf::from(&args[0]);
    let inputs: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
    let start = Instant::now();
    let (ulid, stats) = compact_with_stats(&inputs, &out, &CompactOptions::default()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let hwm = proc_status_kib(std::process::id(), "VmHWM:");
    let cpu = cpu_secs(std::process::id());
    println!(
        "CHILD ulid={} secs={secs} cpu={cpu} hwm_kib={hwm} series={} copied={} recut={}",
        ulid.unwrap(),
        stats.series,
        stats.chunks_copied,
        stats.chunks_recut
    );
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds a process has used (`/proc/<pid>/stat`, at 100 ticks a second,
/// the Linux `USER_HZ`).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

/// SplitMix64: a small, seeded, deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Series `i`: 200 metric families (even ones counters), 1 000 instances, `job` of 10.
fn series_labels(i: u64) -> Labels {
    let metric = i % METRICS;
    let name = if metric.is_multiple_of(2) {
        format!("bench_requests_{metric}_total")
    } else {
        format!("bench_gauge_{metric}")
    };
    Labels::from_pairs([
        ("__name__", name),
        ("instance", format!("host-{:04}:9100", (i / METRICS) % 1000)),
        ("job", format!("job-{}", (i / METRICS) % 10)),
        ("shard", format!("{}", i / (METRICS * 1000))),
    ])
    .unwrap()
}

/// Per-series generator state carried from block to block.
#[derive(Clone, Copy)]
struct State {
    value: f64,
    step: f64,
    kind: u8,
}

fn initial_state(i: u64) -> State {
    let mut r = Rng(i ^ 0x5EED);
    let counter = (i % METRICS).is_multiple_of(2);
    let kind = if counter {
        // 0: integer counter (7 in 10), 1: fractional counter (seconds…)
        u8::from(r.next() % 10 >= 7)
    } else {
        // 2: random-walk gauge, 3: constant gauge (half each)
        if r.next().is_multiple_of(2) { 3 } else { 2 }
    };
    State {
        value: (r.next() % 10_000) as f64,
        step: 0.1 + r.unit() * 50.0,
        kind,
    }
}

fn next_value(s: &mut State, r: &mut Rng) -> f64 {
    match s.kind {
        0 | 1 => {
            if r.next().is_multiple_of(5_000) {
                s.value = 0.0; // counter reset (restart)
            }
            if s.kind == 0 {
                // Idle scrapes happen: a third of them add nothing.
                if !r.next().is_multiple_of(3) {
                    s.value += (s.step * 15.0 * (0.5 + r.unit())).round();
                }
            } else {
                s.value += (s.step * (0.5 + r.unit()) * 1000.0).round() / 1000.0;
            }
        }
        2 => s.value = (s.value + (r.unit() - 0.5) * s.step).round(),
        _ => {}
    }
    s.value
}

/// Writes the 4 input blocks into `dir`; returns their paths and the total samples.
fn write_blocks(dir: &Path, series: u64) -> (Vec<PathBuf>, u64) {
    let mut order: Vec<(Labels, u64)> = (0..series).map(|i| (series_labels(i), i)).collect();
    order.sort();
    let mut states: Vec<State> = (0..series).map(initial_state).collect();
    let mut out = Vec::new();
    let mut total = 0;
    let mut samples = Vec::with_capacity(480);
    for b in 0..BLOCKS {
        let start = T0 + b * TWO_HOURS;
        let mut w = BlockWriter::new(dir, BlockWriterOptions::default()).unwrap();
        w.set_time_range(start, start + TWO_HOURS);
        for (labels, i) in &order {
            let mut r = Rng((*i << 8) ^ b as u64 ^ 0xB10C);
            let s = &mut states[*i as usize];
            samples.clear();
            let mut t = start;
            while t < start + TWO_HOURS {
                let jitter = (r.next() % 7) as i64 - 3;
                samples.push((t + jitter.max(0), next_value(s, &mut r)));
                t += SCRAPE_MS;
            }
            w.add_series(labels, &samples).unwrap();
        }
        total += w.num_samples();
        let ulid = w.finish().unwrap();
        out.push(dir.join(ulid.to_string()));
    }
    (out, total)
}

/// A one-series block right after the inputs: Prometheus's planner never picks the newest block.
fn write_newer_block(dir: &Path) -> PathBuf {
    let start = T0 + BLOCKS * TWO_HOURS;
    let mut w = BlockWriter::new(dir, BlockWriterOptions::default()).unwrap();
    w.set_time_range(start, start + TWO_HOURS);
    let l = Labels::from_pairs([("__name__", "bench_newer")]).unwrap();
    w.add_series(&l, &[(start, 1.0), (start + SCRAPE_MS, 1.0)])
        .unwrap();
    dir.join(w.finish().unwrap().to_string())
}

fn link_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            link_dir(&e.path(), &target);
        } else {
            std::fs::hard_link(e.path(), &target).unwrap();
        }
    }
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap()
}

/// Peaks of `VmRSS` and `RssAnon` (KiB) of a process, sampled every 20 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut rss, mut anon) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                rss = rss.max(proc_status_kib(pid, "VmRSS:"));
                anon = anon.max(proc_status_kib(pid, "RssAnon:"));
                std::thread::sleep(Duration::from_millis(20));
            }
            (rss, anon)
        });
        Sampler { stop, handle }
    }
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

struct Outcome {
    secs: f64,
    /// CPU seconds (user + system) spent compacting.
    cpu: f64,
    peak_rss_mib: f64,
    peak_anon_mib: f64,
    /// Peak minus the idle baseline before compaction (Prometheus only).
    delta_rss_mib: Option<f64>,
    series: u64,
    samples: u64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn run_strata(inputs: &[PathBuf], out: &Path) -> Outcome {
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--compact-child").arg(out).args(inputs);
    let child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let sampler = Sampler::start(child.id());
    let output = child.wait_with_output().unwrap();
    let (_, anon) = sampler.stop();
    assert!(output.status.success(), "strata compaction child failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.starts_with("CHILD ")).unwrap();
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let m = meta(&out.join(field("ulid")));
    Outcome {
        secs: field("secs").parse().unwrap(),
        cpu: field("cpu").parse().unwrap(),
        peak_rss_mib: mib(field("hwm_kib").parse().unwrap()),
        peak_anon_mib: mib(anon),
        delta_rss_mib: None,
        series: m["stats"]["numSeries"].as_u64().unwrap(),
        samples: m["stats"]["numSamples"].as_u64().unwrap(),
    }
}

/// The level ≥ 2 block Prometheus wrote, if any.
fn compacted_block(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.join("meta.json")).ok()?).ok()?;
        (m["compaction"]["level"].as_u64()? >= 2).then_some(p)
    })
}

/// The `duration` of Prometheus's `compact blocks` log line, in seconds.
fn logged_compaction_secs(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("compact blocks"))?;
    let d = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("duration="))?;
    parse_go_duration(d.trim_matches('"'))
}

/// Go's `1m2.5s` / `850ms` / `1.2s` duration format.
fn parse_go_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() || n == '.' {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "µs" | "us" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
    }
    Some(total)
}

async fn run_prometheus(data: &Path) -> Outcome {
    let started = Instant::now();
    let mut prometheus = Prometheus::builder()
        .config("global:\n  scrape_interval: 1m\n")
        .data_dir(data)
        .arg("--storage.tsdb.min-block-duration=160m")
        .arg("--storage.tsdb.max-block-duration=24h")
        .arg("--storage.tsdb.retention.time=100y")
        .start()
        .await
        .expect("prometheus starts");
    let pid = prometheus.process().pid();
    // Idle baseline: the first reload tick comes one minute after start; sample until 50 s.
    let mut baseline = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(50) {
        baseline = (
            proc_status_kib(pid, "VmRSS:"),
            proc_status_kib(pid, "RssAnon:"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_before = cpu_secs(pid);
    let sampler = Sampler::start(pid);
    let deadline = Instant::now() + Duration::from_secs(1800);
    let block = loop {
        let log = prometheus.process().log();
        if log.contains("compact blocks")
            && let Some(b) = compacted_block(data)
        {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never compacted:\n{log}"
        );
        prometheus
            .process()
            .check_running()
            .expect("prometheus runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (rss, anon) = sampler.stop();
    let hwm = proc_status_kib(pid, "VmHWM:");
    let cpu = cpu_secs(pid) - cpu_before;
    let log = prometheus.process().log();
    let secs = logged_compaction_secs(&log).expect("compaction duration in the log");
    let m = meta(&block);
    println!(
        "prometheus: idle baseline VmRSS {:.0} MiB (RssAnon {:.0} MiB), VmHWM over its life {:.0} MiB",
        mib(baseline.0),
        mib(baseline.1),
        mib(hwm)
    );
    Outcome {
        secs,
        cpu,
        peak_rss_mib: mib(rss),
        peak_anon_mib: mib(anon),
        delta_rss_mib: Some(mib(rss.saturating_sub(baseline.0))),
        series: m["stats"]["numSeries"].as_u64().unwrap(),
        samples: m["stats"]["numSamples"].as_u64().unwrap(),
    }
}

async fn run() {
    let series = env_or("STRATA_BENCH_SERIES", 200_000);
    let root = tempfile::Builder::new()
        .prefix("strata-bench-compact-")
        .tempdir()
        .unwrap();
    println!(
        "compaction of {BLOCKS} x 2h blocks of {series} series at 15 s scrape (STRATA_BENCH_SERIES={series}), data in {}",
        root.path().display()
    );
    let t = Instant::now();
    let inputs_dir = root.path().join("inputs");
    let (inputs, samples) = write_blocks(&inputs_dir, series);
    let input_bytes: u64 = inputs.iter().map(|p| dir_bytes(p)).sum();
    println!(
        "generated {samples} samples ({:.0} MiB of blocks) in {:.1}s",
        mib(input_bytes / 1024),
        t.elapsed().as_secs_f64()
    );

    let strata = run_strata(&inputs, &root.path().join("strata-out"));
    println!("strata: compacted in {:.2}s", strata.secs);

    let prom_dir = root.path().join("prometheus");
    for p in &inputs {
        link_dir(p, &prom_dir.join(p.file_name().unwrap()));
    }
    write_newer_block(&prom_dir);
    let prom = run_prometheus(&prom_dir).await;
    println!("prometheus: compacted in {:.2}s", prom.secs);

    println!();
    println!(
        "{:<12} {:>14} {:>10} {:>8} {:>14} {:>16} {:>16}",
        "", "samples/s", "wall s", "CPU s", "peak RSS MiB", "peak RssAnon MiB", "RSS - idle MiB"
    );
    for (name, o) in [("strata", &strata), ("prometheus", &prom)] {
        println!(
            "{name:<12} {:>14.0} {:>10.2} {:>8.2} {:>14.0} {:>16.0} {:>16}",
            samples as f64 / o.secs,
            o.secs,
            o.cpu,
            o.peak_rss_mib,
            o.peak_anon_mib,
            o.delta_rss_mib.map_or("-".into(), |d| format!("{d:.0}"))
        );
    }
    println!(
        "ratios (prometheus / strata): speed {:.2}x, CPU {:.2}x, peak RSS {:.2}x (vs Prometheus's RSS minus idle: {:.2}x), peak RssAnon {:.2}x",
        prom.secs / strata.secs,
        prom.cpu / strata.cpu,
        prom.peak_rss_mib / strata.peak_rss_mib,
        prom.delta_rss_mib.unwrap_or(f64::NAN) / strata.peak_rss_mib,
        prom.peak_anon_mib / strata.peak_anon_mib,
    );
    let same = strata.samples == prom.samples && strata.series == prom.series;
    println!(
        "output: strata {} series / {} samples, prometheus {} series / {} samples, input {samples} samples -> {}",
        strata.series,
        strata.samples,
        prom.series,
        prom.samples,
        if same && strata.samples == samples {
            "match"
        } else {
            "MISMATCH"
        }
    );
    assert!(
        same && strata.samples == samples,
        "output sample counts differ"
    );
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        dir_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
