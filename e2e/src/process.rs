//! A child process owned by a test: its output goes to a log file, it runs in its own process group, and
//! dropping it kills the whole group. When the test is panicking, the log is printed first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Error, Result};

/// How much of a log is shown in errors and on test failure.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// A running peer. Killed (with its whole process group) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
    // Keeps the log (and any scratch files the caller put there) alive as long as the process.
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to a log file in a fresh temporary directory.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Self> {
        let name = name.into();
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-e2e-{name}-"))
            .tempdir()
            .map_err(Error::io(format!("create log dir for {name}")))?;
        let log_path = dir.path().join(format!("{name}.log"));
        let log =
            File::create(&log_path).map_err(Error::io(format!("create {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(Error::io("clone log handle"))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Own process group, so that kill-on-drop also reaches the peer's children.
            .process_group(0);
        let child = command.spawn().map_err(|source| Error::Spawn {
            name: name.clone(),
            source,
        })?;
        Ok(Self {
            name,
            child,
            log_path,
            _dir: dir,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the combined stdout/stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last 16 KiB of the log.
    pub fn log_tail(&self) -> String {
        let Ok(mut f) = File::open(&self.log_path) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// `Some(status)` if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error if the process has exited (for use while waiting for readiness).
    pub fn check_running(&mut self) -> Result<()> {
        match self.try_exit_status() {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log_tail(),
            }),
        }
    }

    /// Polls `GET url` until it answers 2xx, the process exits, or `timeout` passes.
    pub async fn wait_http_ok(&mut self, url: &str, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Request {
                step: "build HTTP client".into(),
                message: e.to_string(),
            })?;
        self.wait_http_ok_with(&client, url, timeout).await
    }

    /// Like [`Process::wait_http_ok`] with a caller-configured client (auth headers, CA).
    pub async fn wait_http_ok_with(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("no probe yet");
        while start.elapsed() < timeout {
            self.check_running()?;
            match client.get(url).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => last = format!("GET {url}: HTTP {}", resp.status()),
                Err(e) => last = format!("GET {url}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::NotReady {
            name: self.name.clone(),
            waited: timeout,
            last,
            log: self.log_tail(),
        })
    }

    /// Sends a signal to the process (not its group), e.g. SIGTERM to test a graceful stop.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        nix::sys::signal::kill(pid_of(&self.child), signal).map_err(|e| Error::Io {
            step: format!("send {signal} to {}", self.name),
            source: e.into(),
        })
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit_status() {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    name: self.name.clone(),
                    waited: timeout,
                    last: "process did not exit".into(),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the whole process group with SIGKILL and reaps the process. Idempotent.
    pub fn kill(&mut self) {
        if self.try_exit_status().is_none() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pid_of(&self.child), Signal::SIGKILL);
            let _ = self.child.wait();
        } else {
            // The leader is gone; its children may not be.
            let _ = killpg(pid_of(&self.child), Signal::SIGKILL);
        }
    }
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

impl Drop for Process {
    #[expect(clippy::print_stderr, reason = "a failing test shows the peer's log")]
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} (pid {}, {}) -----\n{}\n----- end of log of {} -----",
                self.name,
                self.child.id(),
                self.log_path.display(),
                self.log_tail(),
                self.name
            );
        }
        self.kill();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(Error::NotReady {
                name: what.to_string(),
                waited: timeout,
                last: "condition never held".into(),
                log: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
