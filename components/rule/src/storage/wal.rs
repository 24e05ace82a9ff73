//! The write-ahead log: one file of records, each `[u32 LE payload length][u32 LE CRC32C of the
//! payload][payload]`; a payload is one appended batch of samples. Fsynced per batch. A torn or
//! corrupt tail (after a crash) is cut off on replay with a warning.
//!
//! Payload: uvarint sample count, then per sample: uvarint label count, per label uvarint-prefixed
//! name and value bytes, then the timestamp (i64 LE) and the value's bits (u64 LE).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use strata_promql::Labels;

use crate::{Error, OutSample, Result};

/// The WAL file's name inside `wal/`.
pub const WAL_FILENAME: &str = "wal";
/// Largest payload accepted on replay (a longer length is treated as corruption).
const MAX_RECORD: u32 = 256 << 20;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage(format!("{what} {}: {e}", path.display()))
}

/// An open WAL, appending at its end.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    file: File,
    size: u64,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The samples of every intact record, in order.
    pub samples: Vec<OutSample>,
    /// Bytes cut off the end (a torn or corrupt tail), 0 when the log was intact.
    pub truncated_bytes: u64,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, replaying it; a bad tail is truncated.
    pub fn open(dir: &Path) -> Result<(Self, Replay)> {
        fs::create_dir_all(dir).map_err(|e| io_err("create WAL dir", dir, e))?;
        let path = dir.join(WAL_FILENAME);
        let mut data = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)
                    .map_err(|e| io_err("read WAL", &path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("open WAL", &path, e)),
        }
        let (samples, good) = decode_all(&data);
        let truncated_bytes = (data.len() - good) as u64;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err("open WAL", &path, e))?;
        if truncated_bytes > 0 {
            tracing::warn!(
                wal = %path.display(),
                offset = good,
                bytes = truncated_bytes,
                "WAL has a torn or corrupt tail (crash during a write?); truncating it"
            );
            file.set_len(good as u64)
                .and_then(|_| file.sync_all())
                .map_err(|e| io_err("truncate WAL", &path, e))?;
        }
        Ok((
            Wal {
                path,
                file,
                size: good as u64,
            },
            Replay {
                samples,
                truncated_bytes,
            },
        ))
    }

    /// Appends one record with `samples` and fsyncs. On failure the file is cut back to its
    /// previous length (best effort) so a later record does not follow a partial one.
    pub fn append(&mut self, samples: &[OutSample]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let rec = encode_record(samples);
        let r = self
            .file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = r {
            let _ = self.file.set_len(self.size);
            return Err(io_err("append to WAL", &self.path, e));
        }
        self.size += rec.len() as u64;
        Ok(())
    }

    /// Current size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Replaces the log by one holding only `samples` (a checkpoint after a block cut): written
    /// to a temporary file, fsynced and renamed over the log, so a crash leaves the old or the new
    /// log, never a mix.
    pub fn rewrite(&mut self, samples: &[OutSample]) -> Result<()> {
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let tmp = dir.join(format!("{WAL_FILENAME}.tmp"));
        let mut buf = Vec::new();
        for batch in samples.chunks(10_000) {
            buf.extend_from_slice(&encode_record(batch));
        }
        let write = || -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&dir)?.sync_all()?;
            OpenOptions::new().append(true).open(&self.path)
        };
        self.file = write().map_err(|e| io_err("rewrite WAL", &self.path, e))?;
        self.size = buf.len() as u64;
        Ok(())
    }
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Encodes one framed record.
pub fn encode_record(samples: &[OutSample]) -> Vec<u8> {
    let mut p = Vec::with_capacity(samples.len() * 64);
    put_uvarint(&mut p, samples.len() as u64);
    for s in samples {
        let pairs: Vec<&(String, String)> = s.labels.iter().collect();
        put_uvarint(&mut p, pairs.len() as u64);
        for (n, v) in pairs {
            put_str(&mut p, n);
            put_str(&mut p, v);
        }
        p.extend_from_slice(&s.t.to_le_bytes());
        p.extend_from_slice(&s.v.to_bits().to_le_bytes());
    }
    let mut rec = Vec::with_capacity(p.len() + 8);
    rec.extend_from_slice(&(p.len() as u32).to_le_bytes());
    rec.extend_from_slice(&strata_tsdb::crc32c(&p).to_le_bytes());
    rec.extend_from_slice(&p);
    rec
}

/// Decodes records from the start of `data`; returns the samples and the length of the intact
/// prefix.
fn decode_all(data: &[u8]) -> (Vec<OutSample>, usize) {
    let mut out = Vec::new();
    let mut off = 0usize;
    while data.len() - off >= 8 {
        let len = u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        if len > MAX_RECORD || data.len() - off - 8 < len as usize {
            break;
        }
        let payload = &data[off + 8..off + 8 + len as usize];
        if strata_tsdb::crc32c(payload) != crc {
            break;
        }
        match decode_payload(payload) {
            Some(mut s) => out.append(&mut s),
            None => break,
        }
        off += 8 + len as usize;
    }
    (out, off)
}

struct Cur<'a> {
    b: &'a [u8],
}

impl Cur<'_> {
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first()?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }

    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.uvarint()?).ok()?;
        String::from_utf8(self.bytes(n)?.to_vec()).ok()
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

fn decode_payload(p: &[u8]) -> Option<Vec<OutSample>> {
    let mut c = Cur { b: p };
    let n = c.uvarint()?;
    let mut out = Vec::with_capacity(usize::try_from(n).ok()?.min(p.len()));
    for _ in 0..n {
        let nl = c.uvarint()?;
        let mut pairs = Vec::with_capacity(usize::try_from(nl).ok()?.min(c.b.len()));
        for _ in 0..nl {
            pairs.push((c.string()?, c.string()?));
        }
        let t = c.u64()? as i64;
        let v = f64::from_bits(c.u64()?);
        out.push(OutSample {
            labels: Labels::new(pairs),
            t,
            v,
        });
    }
    c.b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, t: i64, v: f64) -> OutSample {
        OutSample {
            labels: Labels::new([("__name__".to_string(), name.to_string())]),
            t,
            v,
        }
    }

    #[test]
    fn round_trip_and_reopen_appends() {
        let d = tempfile::tempdir().expect("tempdir");
        let (mut w, r) = Wal::open(d.path()).expect("open");
        assert!(r.samples.is_empty());
        w.append(&[s("a", 1, 1.0), s("b", 2, f64::NAN)])
            .expect("append");
        w.append(&[s("a", 3, 3.0)]).expect("append");
        drop(w);
        let (mut w, r) = Wal::open(d.path()).expect("reopen");
        assert_eq!(r.truncated_bytes, 0);
        assert_eq!(r.samples.len(), 3);
        assert_eq!(r.samples[2], s("a", 3, 3.0));
        assert!(r.samples[1].v.is_nan());
        w.append(&[s("c", 4, 4.0)]).expect("append");
        drop(w);
        let (_, r) = Wal::open(d.path()).expect("reopen");
        assert_eq!(r.samples.len(), 4);
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut() {
        let d = tempfile::tempdir().expect("tempdir");
        let (mut w, _) = Wal::open(d.path()).expect("open");
        w.append(&[s("a", 1, 1.0)]).expect("append");
        w.append(&[s("a", 2, 2.0)]).expect("append");
        let full = w.size();
        drop(w);
        let path = d.path().join(WAL_FILENAME);
        // torn: the last record loses its final 3 bytes
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 3).expect("truncate");
        drop(f);
        let (w, r) = Wal::open(d.path()).expect("replay torn");
        assert_eq!(r.samples, vec![s("a", 1, 1.0)]);
        assert!(r.truncated_bytes > 0);
        let good = w.size();
        drop(w);
        assert_eq!(fs::metadata(&path).expect("meta").len(), good);
        // corrupt: a flipped payload byte fails the CRC, and garbage after it is dropped too
        let mut data = fs::read(&path).expect("read");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        data.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        fs::write(&path, &data).expect("write");
        let (_, r) = Wal::open(d.path()).expect("replay corrupt");
        assert!(r.samples.is_empty());
        assert_eq!(fs::metadata(&path).expect("meta").len(), 0);
    }

    #[test]
    fn rewrite_keeps_only_given_samples() {
        let d = tempfile::tempdir().expect("tempdir");
        let (mut w, _) = Wal::open(d.path()).expect("open");
        w.append(&[s("a", 1, 1.0), s("a", 2, 2.0)]).expect("append");
        w.rewrite(&[s("a", 2, 2.0)]).expect("rewrite");
        w.append(&[s("a", 3, 3.0)]).expect("append");
        drop(w);
        let (_, r) = Wal::open(d.path()).expect("reopen");
        assert_eq!(r.samples, vec![s("a", 2, 2.0), s("a", 3, 3.0)]);
        assert!(!d.path().join("wal.tmp").exists());
    }
}
