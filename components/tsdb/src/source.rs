//! `ByteSource`: random access to the bytes of a file, wherever they live. Readers in this
//! crate only ask for byte ranges, so the same code reads an mmap'd local file, a buffer in
//! memory, or (through another implementation) ranges fetched from object storage.

use std::fs::File;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Random-access bytes.
pub trait ByteSource: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes starting at `offset`. Errors with [`Error::Truncated`] when the range ends
    /// past the end of the source.
    fn read_range(&self, offset: u64, len: usize) -> Result<Bytes>;

    /// A name for error messages (a path, or `index`, `chunks/000001`, …).
    fn name(&self) -> &str {
        "bytes"
    }
}

/// A [`ByteSource`] over bytes in memory (zero-copy slicing).
#[derive(Debug, Clone)]
pub struct BytesSource {
    name: String,
    data: Bytes,
}

impl BytesSource {
    /// Wraps `data`, naming it `name` in errors.
    pub fn new(name: impl Into<String>, data: impl Into<Bytes>) -> Self {
        BytesSource {
            name: name.into(),
            data: data.into(),
        }
    }

    /// All bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }
}

fn slice(name: &str, data: &Bytes, offset: u64, len: usize) -> Result<Bytes> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= data.len() as u64 => Ok(data.slice(offset as usize..end as usize)),
        _ => Err(Error::Truncated {
            file: name.to_string(),
            offset,
            what: "byte range",
        }),
    }
}

impl ByteSource for BytesSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_range(&self, offset: u64, len: usize) -> Result<Bytes> {
        slice(&self.name, &self.data, offset, len)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A [`ByteSource`] over a read-only memory-mapped file.
#[derive(Debug, Clone)]
pub struct MmapSource {
    name: String,
    data: Bytes,
}

impl MmapSource {
    /// Maps `path` read-only. An empty file is read into an empty buffer instead (mapping a
    /// zero-length file fails on some platforms).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let data = if len == 0 {
            Bytes::new()
        } else {
            Bytes::from_owner(mmap::map(&file).map_err(|e| Error::io(path, e))?)
        };
        Ok(MmapSource {
            name: path.display().to_string(),
            data,
        })
    }

    /// All mapped bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }
}

impl ByteSource for MmapSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_range(&self, offset: u64, len: usize) -> Result<Bytes> {
        slice(&self.name, &self.data, offset, len)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The crate's only `unsafe` code: creating a memory map.
#[allow(unsafe_code)]
mod mmap {
    use std::fs::File;

    pub(super) fn map(file: &File) -> std::io::Result<memmap2::Mmap> {
        // SAFETY: the map is read-only and block files are immutable once written (Prometheus
        // and this crate write to a temporary directory and rename it into place; nothing
        // rewrites a finished block's files in place). If another process truncated the file
        // anyway, reads could fault — the same contract Prometheus's own mmap reader accepts.
        unsafe { memmap2::Mmap::map(file) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let s = BytesSource::new("mem", vec![1u8, 2, 3]);
        assert_eq!(&s.read_range(1, 2).unwrap()[..], &[2, 3]);
        assert!(s.read_range(2, 2).is_err());
        assert!(s.read_range(u64::MAX, 2).is_err());
    }

    #[test]
    fn mmap_reads_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let m = MmapSource::open(&p).unwrap();
        assert_eq!(&m.read_range(1, 3).unwrap()[..], b"ell");
        std::fs::write(dir.path().join("e"), b"").unwrap();
        assert_eq!(MmapSource::open(&dir.path().join("e")).unwrap().len(), 0);
    }
}
