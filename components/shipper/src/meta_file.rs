//! `thanos.shipper.json`: the blocks already shipped, in Thanos's format `{"version": 1, "uploaded":
//! [ulid, …]}`. Prometheus ≥ 3.9 reads the same file through `--storage.tsdb.delay-compact-file.path`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::error::{Error, Result};

/// File name Thanos uses in the TSDB directory.
pub const SHIPPER_META_FILENAME: &str = "thanos.shipper.json";
/// The only version written and read.
pub const SHIPPER_META_VERSION: u32 = 1;

/// Content of `thanos.shipper.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipperMeta {
    /// Always 1.
    pub version: u32,
    /// Shipped blocks; Go writes `null` for none, which reads as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub uploaded: Vec<Ulid>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Ulid>, D::Error> {
    Ok(Option::<Vec<Ulid>>::deserialize(d)?.unwrap_or_default())
}

impl ShipperMeta {
    /// Reads the file; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let meta: ShipperMeta =
            serde_json::from_slice(&data).map_err(|e| Error::BadShipperMeta {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        if meta.version != SHIPPER_META_VERSION {
            return Err(Error::BadShipperMeta {
                path: path.to_path_buf(),
                message: format!("unexpected version {}", meta.version),
            });
        }
        Ok(Some(meta))
    }

    /// Writes the file atomically: `<path>.tmp`, fsync, rename, fsync of the directory. Formatted as
    /// Thanos writes it (tab-indented, trailing newline).
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |p: &Path| {
            let p: PathBuf = p.to_path_buf();
            move |source| Error::Io { path: p, source }
        };
        let mut data = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut data,
            serde_json::ser::PrettyFormatter::with_indent(b"\t"),
        );
        self.serialize(&mut ser)
            .map_err(|e| Error::BadShipperMeta {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        data.push(b'\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&data).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_thanos_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SHIPPER_META_FILENAME);
        assert_eq!(ShipperMeta::read(&path).expect("read"), None);
        let id: Ulid = "01JZ8Q3W5F6G7H8J9K0M1N2P3Q".parse().expect("ulid");
        let m = ShipperMeta {
            version: 1,
            uploaded: vec![id],
        };
        m.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("text");
        assert_eq!(
            text,
            "{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t\"01JZ8Q3W5F6G7H8J9K0M1N2P3Q\"\n\t]\n}\n"
        );
        assert_eq!(ShipperMeta::read(&path).expect("read"), Some(m));
        assert!(!dir.path().join("thanos.shipper.json.tmp").exists());
    }

    #[test]
    fn go_null_and_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SHIPPER_META_FILENAME);
        std::fs::write(&path, "{\"version\":1,\"uploaded\":null}").expect("write");
        assert_eq!(
            ShipperMeta::read(&path).expect("null"),
            Some(ShipperMeta {
                version: 1,
                uploaded: vec![]
            })
        );
        std::fs::write(&path, "{\"version\":2,\"uploaded\":[]}").expect("write");
        assert!(ShipperMeta::read(&path).is_err());
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(
            ShipperMeta::read(&path),
            Err(Error::BadShipperMeta { .. })
        ));
    }
}
