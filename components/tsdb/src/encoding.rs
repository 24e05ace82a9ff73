//! Byte-level helpers shared by every format: a bounds-checked decoding cursor that names its
//! file and offset in errors, Go-compatible varints, and CRC32C.

use crate::error::{Error, Result};

/// Maximum bytes of a 64-bit varint.
pub(crate) const MAX_VARINT_LEN64: usize = 10;

/// CRC32 with the Castagnoli polynomial, as every TSDB file uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Appends `v` as an unsigned LEB128 varint (Go `binary.PutUvarint`).
pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v` as a zig-zag signed varint (Go `binary.PutVarint`).
pub fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a big-endian u32.
pub fn put_be32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a uvarint length followed by the bytes of `s`.
pub fn put_uvarint_str(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Decodes a uvarint from the start of `b` with Go's rules (at most 10 bytes, no overflow).
/// Returns the value and the bytes consumed; `Ok(None)` means `b` ended first.
pub(crate) fn uvarint(b: &[u8]) -> std::result::Result<Option<(u64, usize)>, ()> {
    let mut x: u64 = 0;
    let mut s: u32 = 0;
    for (i, &byte) in b.iter().enumerate() {
        if i == MAX_VARINT_LEN64 {
            return Err(());
        }
        if byte < 0x80 {
            if i == MAX_VARINT_LEN64 - 1 && byte > 1 {
                return Err(());
            }
            return Ok(Some((x | (u64::from(byte) << s), i + 1)));
        }
        x |= u64::from(byte & 0x7f) << s;
        s += 7;
    }
    Ok(None)
}

/// Undoes zig-zag encoding.
pub(crate) fn unzigzag(ux: u64) -> i64 {
    let x = (ux >> 1) as i64;
    if ux & 1 != 0 { !x } else { x }
}

/// A bounds-checked reader over a byte slice that knows which file and file offset the slice
/// starts at, so every error can name them.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf`, whose first byte is at `base` in `file`.
    pub(crate) fn new(file: &'a str, buf: &'a [u8], base: u64) -> Self {
        Cursor {
            buf,
            pos: 0,
            base,
            file,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn truncated(&self, what: &'static str) -> Error {
        Error::Truncated {
            file: self.file.to_string(),
            offset: self.offset(),
            what,
        }
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt {
            file: self.file.to_string(),
            offset: self.offset(),
            what: what.into(),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn be32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn be64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn uvarint(&mut self, what: &'static str) -> Result<u64> {
        match uvarint(&self.buf[self.pos..]) {
            Ok(Some((v, n))) => {
                self.pos += n;
                Ok(v)
            }
            Ok(None) => Err(self.truncated(what)),
            Err(()) => Err(self.corrupt(format!("{what}: varint overflows 64 bits"))),
        }
    }

    pub(crate) fn uvarint32(&mut self, what: &'static str) -> Result<u32> {
        let at = self.offset();
        let v = self.uvarint(what)?;
        u32::try_from(v).map_err(|_| Error::OutOfRange {
            file: self.file.to_string(),
            offset: at,
            what: format!("{what} {v} exceeds 32 bits"),
        })
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<i64> {
        self.uvarint(what).map(unzigzag)
    }

    /// A uvarint length followed by that many bytes; the length is checked against what is left.
    pub(crate) fn uvarint_bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let at = self.offset();
        let n = self.uvarint(what)?;
        if n > self.remaining() as u64 {
            return Err(Error::TooLarge {
                file: self.file.to_string(),
                offset: at,
                what,
                len: n,
            });
        }
        self.bytes(n as usize, what)
    }

    pub(crate) fn uvarint_str(&mut self, what: &'static str) -> Result<&'a str> {
        let at = self.offset();
        let b = self.uvarint_bytes(what)?;
        std::str::from_utf8(b).map_err(|_| Error::Corrupt {
            file: self.file.to_string(),
            offset: at,
            what: format!("{what} is not valid UTF-8"),
        })
    }
}

/// Checks a big-endian CRC32C stored right after `data`.
pub(crate) fn check_crc(file: &str, offset: u64, data: &[u8], stored: &[u8]) -> Result<()> {
    let mut a = [0u8; 4];
    a.copy_from_slice(&stored[..4]);
    let expected = u32::from_be_bytes(a);
    let actual = crc32c(data);
    if expected != actual {
        return Err(Error::CrcMismatch {
            file: file.to_string(),
            offset,
            expected,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_matches_go_layout() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(uvarint(&b), Ok(Some((v, b.len()))));
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let (u, _) = uvarint(&b).unwrap().unwrap();
            assert_eq!(unzigzag(u), v);
        }
        let mut b = Vec::new();
        put_varint(&mut b, -1);
        assert_eq!(b, [1]);
    }

    #[test]
    fn varint_overflow_and_truncation() {
        assert_eq!(uvarint(&[0x80; 11]), Err(()));
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(())
        );
        assert_eq!(uvarint(&[0x80, 0x80]), Ok(None));
        let mut c = Cursor::new("f", &[0x05, 1, 2], 100);
        assert!(matches!(
            c.uvarint_bytes("s"),
            Err(Error::TooLarge {
                offset: 100,
                len: 5,
                ..
            })
        ));
    }

    #[test]
    fn crc32c_known_value() {
        // CRC-32C check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }
}
