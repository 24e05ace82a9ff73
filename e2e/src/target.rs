//! A tiny scrape target served from the test itself: the test decides, per request path, which
//! metrics text a scraper gets, so it can give two Prometheus replicas different views or cut a
//! series off at a chosen moment.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// Largest request head read; longer requests are answered 400.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Produces the exposition text for a request path, or `None` for 404.
pub type TargetHandler = dyn Fn(&str) -> Option<String> + Send + Sync;

/// A running HTTP scrape target on a loopback port; stops when dropped.
pub struct MetricsTarget {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for MetricsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsTarget")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsTarget {
    /// Serves `handler(path)` as Prometheus text format (0.0.4) on a free loopback port.
    pub async fn start(
        handler: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("bind the target's port"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("read the target's address"))?;
        let handler: Arc<TargetHandler> = Arc::new(handler);
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, handler.clone()));
            }
        });
        Ok(Self { addr, accept })
    }

    /// `127.0.0.1:PORT`, for a `static_configs` target.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for MetricsTarget {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut conn: TcpStream, handler: Arc<TargetHandler>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST_HEAD {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    // "GET /path?query HTTP/1.1"
    let path = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/");
    let response = match handler(path) {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_per_path_text_and_404() {
        let target = MetricsTarget::start(|path| {
            (path == "/a").then(|| "# TYPE x counter\nx_total 1\n".to_string())
        })
        .await
        .expect("start");
        let base = format!("http://{}", target.address());
        let resp = reqwest::get(format!("{base}/a?x=1")).await.expect("get");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.text().await.expect("body"),
            "# TYPE x counter\nx_total 1\n"
        );
        let resp = reqwest::get(format!("{base}/b")).await.expect("get");
        assert_eq!(resp.status(), 404);
    }
}
