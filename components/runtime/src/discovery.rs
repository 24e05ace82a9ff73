//! Service discovery shared by the querier (StoreAPI endpoints) and the ruler (query APIs,
//! Alertmanagers): Prometheus file-SD files, and `dns+` (A/AAAA) / `dnssrv+` (SRV) lookups.
//! Each caller keeps its own spec syntax and turns the addresses found here into what it dials.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;

/// One entry of a file-SD file. Prometheus accepts only these two keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetGroup {
    targets: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, not used: Thanos ignores target labels of endpoints too
    labels: BTreeMap<String, String>,
}

/// The targets of a Prometheus file-SD file (YAML or JSON: a list of `{targets: [...], labels:
/// {...}}`), in file order, trimmed. An empty file has none; labels are accepted and ignored.
pub fn file_sd_targets(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let groups: Vec<TargetGroup> = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    Ok(groups
        .into_iter()
        .flat_map(|g| g.targets)
        .map(|t| t.trim().to_string())
        .collect())
}

/// Every A/AAAA address of `host` with `port`, through the system resolver; sorted, no repeats.
pub async fn lookup_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| e.to_string())?
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The addresses behind the SRV records of `name`: each target's A/AAAA addresses with the
/// record's port, or `port` when given. SRV questions go to `dns_server` when given (tests), else
/// to the system's resolver; the targets' A/AAAA lookups always use the system resolver.
/// Sorted, no repeats.
pub async fn lookup_srv(
    name: &str,
    port: Option<u16>,
    dns_server: Option<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let resolver = match dns_server {
        Some(addr) => hickory_resolver::TokioResolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            TokioConnectionProvider::default(),
        )
        .build(),
        None => hickory_resolver::TokioResolver::builder_tokio()
            .map_err(|e| e.to_string())?
            .build(),
    };
    let srv = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for r in srv.iter() {
        let target = r.target().to_utf8();
        let target = target.trim_end_matches('.');
        out.extend(lookup_host(target, port.unwrap_or(r.port())).await?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A fake DNS server for tests of code built on [`lookup_srv`].
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::rdata::SRV;
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    use hickory_resolver::proto::serialize::binary::{BinDecodable, BinEncodable};

    /// Starts a DNS server on a loopback UDP port that answers SRV questions for names starting
    /// with `prefix` with one record per port in `ports`, all pointing at `localhost`, while
    /// `answer` is set; every other question (and every question while `answer` is clear) gets
    /// NXDOMAIN. Returns its address, to pass as `dns_server`.
    pub async fn fake_srv_server(
        prefix: &'static str,
        ports: Vec<u16>,
        answer: Arc<AtomicBool>,
    ) -> std::io::Result<SocketAddr> {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let target = Name::from_utf8("localhost.")
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                let mut r = Message::new();
                r.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(q.op_code())
                    .set_recursion_desired(q.recursion_desired())
                    .set_recursion_available(true)
                    .set_authoritative(true);
                for query in q.queries() {
                    r.add_query(query.clone());
                    if answer.load(Ordering::SeqCst)
                        && query.query_type() == RecordType::SRV
                        && query.name().to_utf8().starts_with(prefix)
                    {
                        for &port in &ports {
                            r.add_answer(Record::from_rdata(
                                query.name().clone(),
                                0,
                                RData::SRV(SRV::new(0, 0, port, target.clone())),
                            ));
                        }
                    } else {
                        r.set_response_code(ResponseCode::NXDomain);
                    }
                }
                if let Ok(bytes) = r.to_bytes() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        Ok(addr)
    }
}

#[cfg(test)]
mod tests;
