//! A TCP proxy in front of a real server that can slow traffic down or cut it off: how tests make
//! a real bucket slow (to widen an upload window) or unreachable (to prove retries), without
//! hooks in the code under test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A running proxy; stops accepting (and drops its connections) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    target: SocketAddr,
    /// Bytes per second in each direction; 0 means unlimited.
    rate: AtomicU64,
    /// While set, new connections are closed at once and open ones are cut.
    down: AtomicBool,
    /// Bumped on every `set_down(true)`, so copy loops of older connections stop.
    epoch: AtomicU64,
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `target` (e.g. `127.0.0.1:9000`).
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("bind the proxy's port"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("read the proxy's address"))?;
        let state = Arc::new(State {
            target,
            rate: AtomicU64::new(0),
            down: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Proxy {
            addr,
            state,
            accept,
        })
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for HTTP servers behind the proxy.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Limits each direction of each connection to about `bytes_per_sec` (0: unlimited).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.state.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Cuts the server off (`true`: open connections are closed, new ones refused at once) or
    /// restores it.
    pub fn set_down(&self, down: bool) {
        if down {
            self.state.epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.state.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set_down(true);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    while let Ok((client, _)) = listener.accept().await {
        if state.down.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(state.target).await else {
                return;
            };
            let epoch = state.epoch.load(Ordering::SeqCst);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pipe(cr, sw, state.clone(), epoch));
            let down = tokio::spawn(pipe(sr, cw, state, epoch));
            let _ = tokio::join!(up, down);
        });
    }
}

/// Copies one direction in small pieces, sleeping to keep to the rate, until EOF, an error or a cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    epoch: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if state.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let rate = state.rate.load(Ordering::SeqCst);
        // Small reads when throttled, so the pace is smooth.
        let want = if rate == 0 {
            buf.len()
        } else {
            (rate / 10).clamp(1, buf.len() as u64) as usize
        };
        let read = tokio::select! {
            r = from.read(&mut buf[..want]) => r,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if state.epoch.load(Ordering::SeqCst) != epoch || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: bytes pass through, `set_down` cuts them off.
    #[tokio::test]
    async fn passes_bytes_and_cuts_off() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        proxy.set_down(true);
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c2.read(&mut b))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "a cut-off proxy closes new connections");

        proxy.set_down(false);
        proxy.set_rate(1000);
        let mut c3 = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = std::time::Instant::now();
        c3.write_all(&[7u8; 1000]).await.unwrap();
        let mut back = vec![0u8; 1000];
        c3.read_exact(&mut back).await.unwrap();
        assert!(back.iter().all(|&b| b == 7));
        // 1000 bytes at 1000 B/s each way take well over half a second (a lower bound only).
        assert!(start.elapsed() >= Duration::from_millis(500));
    }
}
