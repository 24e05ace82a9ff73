//! Writes `crds/*.yaml` and `docs/operator.md` from the Rust types (`cargo run -p strata-operator --bin crdgen`).

use std::path::PathBuf;
use std::process::ExitCode;

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ok = true;
    for (name, text) in strata_operator::docs::crd_files() {
        let path = root.join("crds").join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("write {}: {e}", path.display());
            ok = false;
        }
    }
    let doc = root.join("docs/operator.md");
    if let Err(e) = std::fs::write(&doc, strata_operator::docs::api_reference()) {
        eprintln!("write {}: {e}", doc.display());
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
