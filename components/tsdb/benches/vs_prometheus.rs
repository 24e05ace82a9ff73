//! XOR chunk encode and decode, ours against Prometheus's own Go code on the same machine and data.
//!
//! Runs `go test -bench` on `github.com/prometheus/prometheus/tsdb/chunkenc` (the version pinned in
//! `e2e/tools/prometheus/go.mod`, GOMAXPROCS=1) for `BenchmarkXorRead` and the XOR / constant-interval
//! case of `BenchmarkAppender`, measures our codec on identical samples, and prints ns per chunk and
//! the ratio. Run with `cargo bench -p strata-tsdb --bench vs_prometheus`.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_tsdb::chunkenc::{XorAppender, XorIterator};

const ROUNDS: usize = 5;

/// `BenchmarkXorRead`'s chunk: t = 0, 1000, …, 119000; v = t + t/10 + t/100 + t/1000.
fn xor_read_samples() -> Vec<(i64, f64)> {
    (0..120)
        .map(|i| {
            let t = i * 1000;
            let f = t as f64;
            (t, f + f / 10.0 + f / 100.0 + f / 1000.0)
        })
        .collect()
}

/// `BenchmarkAppender/fmt=XOR/t=constant/v=constant/st=0`: 120 samples 15 s apart from
/// 2025-11-04 10:01:20 UTC (+15 s), value 1243535.123.
fn appender_samples() -> Vec<(i64, f64)> {
    (0..120)
        .map(|i| (1_762_250_465_000 + 30_000 + 15_000 * i, 1_243_535.123))
        .collect()
}

fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut app = XorAppender::new();
    for &(t, v) in samples {
        app.append(t, v).expect("append");
    }
    app.into_bytes()
}

/// Median ns per call of `f` over [`ROUNDS`] rounds of about 0.5 s each.
fn measure(mut f: impl FnMut()) -> f64 {
    let mut per_call = Vec::new();
    for _ in 0..ROUNDS {
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed() < Duration::from_millis(500) {
            for _ in 0..100 {
                f();
            }
            n += 100;
        }
        per_call.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    per_call.sort_by(f64::total_cmp);
    per_call[ROUNDS / 2]
}

/// Median ns/op of each Go benchmark matching `pattern`, keyed by name.
fn go_bench(pattern: &str) -> Vec<(String, f64)> {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/tools/prometheus");
    // A scratch copy: resolving the package's test-only dependencies may add go.sum lines.
    let scratch = tempfile::tempdir().expect("tempdir");
    for f in ["go.mod", "go.sum"] {
        std::fs::copy(module.join(f), scratch.path().join(f)).expect("copy wrapper module");
    }
    let go = std::env::var("GO").unwrap_or_else(|_| "go".into());
    let out = Command::new(go)
        .current_dir(scratch.path())
        .env("GOFLAGS", "-mod=mod")
        .env("GOMAXPROCS", "1")
        .args(["test", "-run", "^$", "-bench", pattern, "-benchtime", "1s"])
        .args(["-count", &ROUNDS.to_string(), "-cpu", "1"])
        .arg("github.com/prometheus/prometheus/tsdb/chunkenc")
        .output()
        .expect("run go (Go must be installed)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go test failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut runs: Vec<(String, Vec<f64>)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("Benchmark")) {
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default().to_string();
        let ns = fields
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1] == "ns/op")
            .and_then(|w| w[0].parse::<f64>().ok());
        if let Some(ns) = ns {
            match runs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(ns),
                None => runs.push((name, vec![ns])),
            }
        }
    }
    runs.into_iter()
        .map(|(n, mut v)| {
            v.sort_by(f64::total_cmp);
            (n, v[v.len() / 2])
        })
        .collect()
}

fn report(what: &str, go_ns: f64, ours_ns: f64) {
    let per_s = |ns: f64| 120.0 / ns * 1e9 / 1e6;
    println!(
        "{what}: prometheus {go_ns:.0} ns/chunk ({:.0} M samples/s), strata {ours_ns:.0} ns/chunk ({:.0} M samples/s): strata is {:.2}x prometheus",
        per_s(go_ns),
        per_s(ours_ns),
        go_ns / ours_ns
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then only check it runs.
    if !std::env::args().any(|a| a == "--bench") {
        let chunk = encode(&xor_read_samples());
        assert_eq!(XorIterator::new(&chunk).count(), 120);
        return;
    }
    // `-bench` patterns are split at `/`, one regex per sub-benchmark level.
    let mut go = go_bench("^BenchmarkXorRead$");
    go.extend(go_bench(
        "^BenchmarkAppender$/^fmt=XOR$/^t=constant$/^v=constant$/^st=0$",
    ));
    let find = |prefix: &str| {
        go.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, ns)| *ns)
            .unwrap_or_else(|| panic!("no Go result for {prefix}: {go:?}"))
    };

    let read_chunk = encode(&xor_read_samples());
    let ours_decode = measure(|| {
        let mut last = (0i64, 0f64);
        for s in XorIterator::new(black_box(&read_chunk)) {
            last = s.expect("decode");
        }
        black_box(last);
    });
    report(
        "XOR decode, BenchmarkXorRead chunk",
        find("BenchmarkXorRead"),
        ours_decode,
    );

    let samples = appender_samples();
    let ours_encode = measure(|| {
        black_box(encode(black_box(&samples)));
    });
    report(
        "XOR encode, BenchmarkAppender XOR t=constant v=constant",
        find("BenchmarkAppender/fmt=XOR/t=constant/v=constant/st=0"),
        ours_encode,
    );
}
