//! The harness itself: processes die with their owner, also on panic, and logs are kept.

use std::process::Command;
use std::time::Duration;

use strata_e2e::Process;

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

fn sleeper_with_child() -> Process {
    // The shell starts a grandchild; kill-on-drop must reach it through the process group.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo started; sleep 300 & echo child=$!; wait");
    Process::spawn("sleeper", cmd).expect("spawn sh")
}

async fn child_pid(p: &Process) -> u32 {
    strata_e2e::wait_until(
        "sleeper to print its child",
        Duration::from_secs(10),
        || async {
            p.log()
                .lines()
                .find_map(|l| l.strip_prefix("child=")?.trim().parse().ok())
        },
    )
    .await
    .expect("sleeper printed its child pid")
}

#[tokio::test]
async fn drop_kills_the_process_group() {
    let p = sleeper_with_child();
    let (pid, child) = (p.pid(), child_pid(&p).await);
    assert!(alive(pid) && alive(child));
    assert!(p.log().contains("started"));
    drop(p);
    strata_e2e::wait_until("grandchild to die", Duration::from_secs(10), || async {
        (!alive(child)).then_some(())
    })
    .await
    .unwrap();
    assert!(!alive(pid), "leader {pid} still alive");
}

#[tokio::test]
async fn a_panicking_test_still_kills_its_processes() {
    let p = sleeper_with_child();
    let (pid, child) = (p.pid(), child_pid(&p).await);
    let outcome = std::thread::spawn(move || {
        let _owned = p;
        panic!("simulated test failure");
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    strata_e2e::wait_until(
        "processes to die after panic",
        Duration::from_secs(10),
        || async { (!alive(pid) && !alive(child)).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_process_that_exits_early_reports_its_log() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo 'fatal: bad flag --nope' >&2; exit 3");
    let mut p = Process::spawn("early-exit", cmd).unwrap();
    let err = p
        .wait_http_ok("http://127.0.0.1:1/never", Duration::from_secs(10))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("early-exit exited with exit status: 3"),
        "{err}"
    );
    assert!(err.contains("fatal: bad flag --nope"), "{err}");
}

#[test]
fn free_ports_are_not_handed_out_twice() {
    let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| strata_e2e::free_port()).collect();
    assert_eq!(ports.len(), 50);
}
