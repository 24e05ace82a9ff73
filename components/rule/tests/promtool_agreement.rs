//! `promtool check rules` and the ruler's parser must agree on every file of the corpus:
//! `corpus/good/*.yml` are accepted by both, `corpus/bad/*.yml` rejected by both. Runs the real
//! promtool (Prometheus 3.x, from `e2e/tools/install.sh`); a missing promtool fails the test.

use std::path::{Path, PathBuf};

use strata_e2e::promtool;
use strata_rule::rules::load_file;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_is_large_enough() {
    assert!(corpus("good").len() >= 10);
    assert!(corpus("bad").len() >= 15);
}

#[test]
fn ours_agrees_with_the_expected_verdict() {
    let mut wrong = Vec::new();
    for (kind, want_ok) in [("good", true), ("bad", false)] {
        for f in corpus(kind) {
            let got = load_file(&f);
            if got.is_ok() != want_ok {
                wrong.push(format!("{}: {:?}", f.display(), got.err()));
            }
        }
    }
    assert!(wrong.is_empty(), "strata disagrees:\n{}", wrong.join("\n"));
}

#[test]
fn promtool_agrees_on_every_corpus_file() {
    let mut wrong = Vec::new();
    for (kind, want_ok) in [("good", true), ("bad", false)] {
        for f in corpus(kind) {
            let path = f.to_str().expect("utf-8 path");
            let out = promtool(&["check", "rules", path])
                .unwrap_or_else(|e| panic!("promtool is needed for this test: {e}"));
            let theirs = out.status.success();
            let ours = load_file(&f);
            if theirs != want_ok || ours.is_ok() != theirs {
                wrong.push(format!(
                    "{path}: promtool {} ({}), strata {}",
                    if theirs { "accepts" } else { "rejects" },
                    String::from_utf8_lossy(&out.stderr).trim(),
                    match &ours {
                        Ok(_) => "accepts".to_string(),
                        Err(e) => format!("rejects ({e})"),
                    }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "disagreements:\n{}", wrong.join("\n"));
}
