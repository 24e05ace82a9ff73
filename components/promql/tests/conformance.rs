//! Runs Prometheus's PromQL test files: every statement of the core files must pass (the issue's
//! 100% gate; the counts are listed so a shrinking corpus is noticed too), the native-histogram
//! file is held to a ratchet, and the experimental files are reported as figures.

use std::path::{Path, PathBuf};

use strata_promql::promqltest::{Report, run_script};

/// (file, statements in it: all must pass).
const CORE: &[(&str, usize)] = &[
    ("aggregators", 180),
    ("at_modifier", 83),
    ("collision", 4),
    ("functions", 484),
    ("histograms", 222),
    ("literals", 25),
    ("name_label_dropping", 33),
    ("operators", 231),
    ("range_queries", 28),
    ("selectors", 38),
    ("staleness", 19),
    ("subquery", 40),
    ("trig_functions", 20),
];

/// Prometheus's native-histogram file: its own figure, held to its own ratchet.
const NATIVE_HISTOGRAMS_FLOOR: usize = 486;

/// Experimental-feature files this engine implements: each must pass completely (statement count
/// as in the corpus).
const EXPERIMENTAL_DONE: &[(&str, usize)] = &[("info", 70), ("limit", 38)];

/// Experimental-feature files: counts are printed, not gated.
const OTHER: &[&str] = &[
    "duration_expression",
    "extended_vectors",
    "fill-modifier",
    "start_timestamps",
    "type_and_unit",
];

fn corpus_dir() -> PathBuf {
    std::env::var_os("STRATA_PROMQL_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The corpus sits beside the checkout: <checkout>/../shared/promql-tests.
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promql-tests")
        })
}

/// Runs `<dir>/<name>.test`; the report and its statement count.
fn run_file(dir: &Path, name: &str) -> (Report, usize) {
    let path = dir.join(format!("{name}.test"));
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("corpus file {} must exist: {e}", path.display()));
    let report = run_script(&src);
    let n = report.passed + report.failed();
    (report, n)
}

/// Runs a file whose `floor` statements must all pass; a shortfall is added to `regressions`
/// (and its failures printed). Returns (passed, statements).
#[allow(clippy::print_stderr)] // the conformance figures are the test's report
fn run_complete(
    dir: &Path,
    name: &str,
    floor: usize,
    label: &str,
    regressions: &mut Vec<String>,
) -> (usize, usize) {
    let (report, n) = run_file(dir, name);
    eprintln!("{label}{name}: {}/{n} passed", report.passed);
    let failing = report.failed() > 0 || n != floor;
    if failing || std::env::var_os("STRATA_PROMQL_VERBOSE").is_some() {
        eprint!("{}", report.render(name));
    }
    if failing {
        regressions.push(format!(
            "{name}: {} of {n} passed, expected all {floor} to pass",
            report.passed
        ));
    }
    (report.passed, n)
}

#[test]
fn core_files_pass_completely() {
    let dir = corpus_dir();
    let mut regressions = Vec::new();
    let (mut total_pass, mut total) = (0, 0);
    for (name, floor) in CORE {
        let (passed, n) = run_complete(&dir, name, *floor, "", &mut regressions);
        total_pass += passed;
        total += n;
    }
    eprintln!("core total: {total_pass}/{total} passed");
    let (report, n) = run_file(&dir, "native_histograms");
    eprintln!("native_histograms: {}/{n} passed", report.passed);
    if std::env::var_os("STRATA_PROMQL_VERBOSE").is_some() {
        eprint!("{}", report.render("native_histograms"));
    }
    if report.passed < NATIVE_HISTOGRAMS_FLOOR {
        regressions.push(format!(
            "native_histograms: {} passed, ratchet is {NATIVE_HISTOGRAMS_FLOOR}",
            report.passed
        ));
    }
    for (name, floor) in EXPERIMENTAL_DONE {
        run_complete(&dir, name, *floor, "(experimental) ", &mut regressions);
    }
    for name in OTHER {
        let (report, n) = run_file(&dir, name);
        eprintln!("(not gated) {name}: {}/{n} passed", report.passed);
    }
    assert!(regressions.is_empty(), "regressions: {regressions:?}");
}
