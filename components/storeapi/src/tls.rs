//! File-based TLS configuration for servers (optionally requiring client certificates: mTLS) and
//! clients. Errors name the file.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// Server TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Client TLS files (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA that signed the server's certificate; the system roots when unset.
    pub ca: Option<PathBuf>,
    /// The client certificate (for mTLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// The client private key (for mTLS); needs `cert`.
    pub key: Option<PathBuf>,
    /// The name to verify the server certificate against; the endpoint's host when unset.
    pub server_name: Option<String>,
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

impl ServerTlsFiles {
    /// Reads the files into a tonic server TLS configuration.
    pub fn load(&self) -> Result<ServerTlsConfig> {
        let cert = read_pem("server certificate", &self.cert)?;
        let key = read_pem("server key", &self.key)?;
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?));
        }
        Ok(cfg)
    }
}

impl ClientTlsFiles {
    /// Reads the files into a tonic client TLS configuration.
    pub fn load(&self) -> Result<ClientTlsConfig> {
        let mut cfg = ClientTlsConfig::new();
        match &self.ca {
            Some(ca) => cfg = cfg.ca_certificate(Certificate::from_pem(read_pem("CA", ca)?)),
            None => cfg = cfg.with_native_roots(),
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let cert = read_pem("client certificate", c)?;
                let key = read_pem("client key", k)?;
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            (Some(_), None) => {
                return Err(Error::HalfIdentity {
                    given: "certificate",
                });
            }
            (None, Some(_)) => return Err(Error::HalfIdentity { given: "key" }),
            (None, None) => {}
        }
        if let Some(name) = &self.server_name {
            cfg = cfg.domain_name(name.clone());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let files = ServerTlsFiles {
            cert: missing.clone(),
            key: missing.clone(),
            client_ca: None,
        };
        let e = files.load().map(|_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("read server certificate file {}", missing.display())
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a pem").expect("write");
        let files = ClientTlsFiles {
            ca: Some(junk.clone()),
            ..Default::default()
        };
        let e = files.load().map(|_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("CA file {} holds no PEM block", junk.display())
        );

        let files = ClientTlsFiles {
            key: Some(junk),
            ..Default::default()
        };
        assert!(matches!(
            files.load(),
            Err(Error::HalfIdentity { given: "key" })
        ));
    }
}
