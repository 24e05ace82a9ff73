//! Free loopback ports, never handed out twice by one test process — nor by two test processes
//! running side by side when `STRATA_TEST_PORTS_DIR` names a directory they share
//! (`scripts/run-tests` sets it): a port is claimed there by creating a file named after it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process (and no other
/// process sharing `STRATA_TEST_PORTS_DIR`) has not handed out before.
pub fn free_port() -> u16 {
    let shared = std::env::var_os("STRATA_TEST_PORTS_DIR");
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral loopback port");
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.insert(port) {
            continue;
        }
        match &shared {
            Some(dir) if !claim(Path::new(dir), port) => continue,
            _ => return port,
        }
    }
}

/// Claims `port` in the shared directory; `false` when another process has it. A directory
/// that cannot be written to claims nothing (the in-process check still holds).
fn claim(dir: &Path, port: u16) -> bool {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(port.to_string()))
    {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AlreadyExists,
    }
}

#[cfg(test)]
mod tests {
    use super::claim;

    /// A port claimed in the shared directory is refused to the next claimant.
    #[test]
    fn a_claimed_port_is_not_claimed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(claim(dir.path(), 40001));
        assert!(!claim(dir.path(), 40001));
        assert!(claim(dir.path(), 40002));
        // A directory that does not exist claims nothing and refuses nothing.
        assert!(claim(&dir.path().join("missing"), 40001));
    }
}
