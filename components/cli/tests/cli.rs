//! The `strata` binary's contract: help and version work; bad flags or config exit 2, runtime
//! failures exit 1, each with a one-line error naming what is at fault.

use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_and_version_succeed() {
    let out = strata(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("version") && help.contains("tools"), "{help}");

    let out = strata(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("strata, version {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains("(commit ") && text.contains("rustc:  rustc 1."),
        "{text}"
    );
}

#[test]
fn a_bad_flag_exits_2_naming_it() {
    let out = strata(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unexpected argument '--no-such-flag'"),
        "{}",
        stderr(&out)
    );

    let out = strata(&["tools", "tsdb", "dump", "--min-time", "yesterday", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--min-time"), "{}", stderr(&out));
}

#[test]
fn a_bad_selector_exits_2_naming_the_flag() {
    let out = strata(&[
        "tools",
        "tsdb",
        "dump",
        "--match",
        "up{job=",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("strata: error: --match \"up{job=\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_runtime_failure_exits_1_naming_the_path() {
    let out = strata(&["tools", "tsdb", "verify", "/nonexistent/block"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/block"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
