//! `strata tools promqltest` on Prometheus's core PromQL test files: every statement passes, and a
//! wrong expectation is reported with its file and line and a failing exit code.

use std::path::PathBuf;
use std::process::Command;

const CORE: &[&str] = &[
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "literals",
    "name_label_dropping",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
];

fn corpus() -> PathBuf {
    std::env::var_os("STRATA_PROMQL_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promql-tests")
        })
}

#[test]
fn core_files_pass_completely() {
    let dir = corpus();
    let files: Vec<PathBuf> = CORE.iter().map(|f| dir.join(format!("{f}.test"))).collect();
    for f in &files {
        assert!(f.is_file(), "corpus file {} is missing", f.display());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tools", "promqltest"])
        .args(&files)
        .output()
        .expect("run strata");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let summaries: Vec<&str> = stdout.lines().filter(|l| l.contains(" passed, ")).collect();
    assert_eq!(
        summaries.len(),
        CORE.len(),
        "one summary per file:\n{stdout}"
    );
    let mut total = 0usize;
    for line in summaries {
        assert!(line.ends_with(" passed, 0 failed"), "{line}");
        total += line
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    assert!(total >= 1400, "only {total} statements ran:\n{stdout}");
}

#[test]
fn a_wrong_expectation_fails_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("wrong.test");
    std::fs::write(
        &script,
        "load 1m\n  m{a=\"x\"} 1 2 3\n\neval instant at 2m m\n  m{a=\"x\"} 3\n\neval instant at 2m m\n  m{a=\"x\"} 4\n",
    )
    .expect("write script");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tools", "promqltest"])
        .arg(&script)
        .output()
        .expect("run strata");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("wrong.test:7:"), "{stdout}");
    assert!(stdout.contains("2 passed, 1 failed"), "{stdout}");
}
