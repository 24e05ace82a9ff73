//! Bit streams, most significant bit first, as the Gorilla-style chunk encodings use them.

use crate::error::{Error, Result};

/// Appends bits to a byte vector, MSB first; the last byte is zero-padded.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    /// Unused low bits in the last byte (0 means byte-aligned).
    free: u32,
}

impl BitWriter {
    /// A writer that starts after `header` (byte-aligned).
    pub(crate) fn with_header(header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(header);
        BitWriter { buf, free: 0 }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    pub(crate) fn write_byte(&mut self, b: u8) {
        self.write_bits(u64::from(b), 8);
    }

    /// Writes the low `nbits` (≤ 64) bits of `value`, most significant first.
    pub(crate) fn write_bits(&mut self, value: u64, nbits: u32) {
        let mut remaining = nbits.min(64);
        if remaining == 0 {
            return;
        }
        // Complete the partial last byte.
        if self.free > 0 {
            let take = remaining.min(self.free);
            let bits = ((value >> (remaining - take)) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.buf.last_mut() {
                *last |= bits << (self.free - take);
            }
            self.free -= take;
            remaining -= take;
        }
        // Whole bytes.
        while remaining >= 8 {
            remaining -= 8;
            self.buf.push((value >> remaining) as u8);
        }
        // A new partial byte.
        if remaining > 0 {
            let bits = (value & ((1u64 << remaining) - 1)) as u8;
            self.buf.push(bits << (8 - remaining));
            self.free = 8 - remaining;
        }
    }
}

/// Reads bits from a byte slice, MSB first. `base` is the offset of the slice within the chunk
/// data, used in error offsets.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
    base: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8], base: usize) -> Self {
        BitReader { data, pos: 0, base }
    }

    /// Bits left to read.
    pub(crate) fn remaining_bits(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    pub(crate) fn byte_offset(&self) -> u64 {
        (self.base + self.pos / 8) as u64
    }

    pub(crate) fn truncated(&self, what: &'static str) -> Error {
        Error::Truncated {
            file: "chunk".into(),
            offset: self.byte_offset(),
            what,
        }
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt {
            file: "chunk".into(),
            offset: self.byte_offset(),
            what: what.into(),
        }
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> Result<bool> {
        let byte = self.pos / 8;
        if byte >= self.data.len() {
            return Err(self.truncated("bit"));
        }
        let bit = (self.data[byte] >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n` (≤ 64) bits as the low bits of a u64.
    #[inline]
    pub(crate) fn read_bits(&mut self, n: u32) -> Result<u64> {
        if n == 0 {
            return Ok(0);
        }
        if (n as usize) > self.remaining_bits() {
            return Err(self.truncated("bits"));
        }
        let byte = self.pos / 8;
        let bit = (self.pos % 8) as u32;
        if n <= 56 && byte + 8 <= self.data.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.data[byte..byte + 8]);
            let word = u64::from_be_bytes(w);
            self.pos += n as usize;
            return Ok((word << bit) >> (64 - n));
        }
        let mut out = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.pos / 8;
            let bit = (self.pos % 8) as u32;
            let avail = 8 - bit;
            let take = left.min(avail);
            let cur = u64::from(self.data[byte]);
            let v = (cur >> (avail - take)) & ((1u64 << take) - 1);
            out = (out << take) | v;
            self.pos += take as usize;
            left -= take;
        }
        Ok(out)
    }

    /// The current position in bits from the start of the data.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Total bits in the data.
    #[inline]
    pub(crate) fn len_bits(&self) -> usize {
        self.data.len() * 8
    }

    /// Moves to bit `pos`, which the caller decoded with [`BitReader::load`]; errors (and stays put)
    /// when `pos` lies past the end of the data, i.e. the decoded item was truncated.
    #[inline]
    pub(crate) fn seek(&mut self, pos: usize, what: &'static str) -> Result<()> {
        if pos > self.len_bits() {
            return Err(self.truncated(what));
        }
        self.pos = pos;
        Ok(())
    }

    /// The 64 bits starting at bit `pos`, most significant first, zero-filled past the end of
    /// the data. Never fails: decoders load freely and check the end position once per item.
    #[inline(always)]
    pub(crate) fn load(&self, pos: usize) -> u64 {
        let byte = pos >> 3;
        let shift = (pos & 7) as u32;
        if let Some(nine) = self.data.get(byte..byte + 9) {
            let mut w = [0u8; 8];
            w.copy_from_slice(&nine[..8]);
            let hi = u64::from_be_bytes(w) << shift;
            // `>> 8` of a byte widened to u64 is 0, so shift 0 needs no special case.
            return hi | (u64::from(nine[8]) >> (8 - shift));
        }
        self.load_tail(byte, shift)
    }

    #[cold]
    fn load_tail(&self, byte: usize, shift: u32) -> u64 {
        let mut w = [0u8; 9];
        for (i, slot) in w.iter_mut().enumerate() {
            *slot = self.data.get(byte + i).copied().unwrap_or(0);
        }
        let mut hi = [0u8; 8];
        hi.copy_from_slice(&w[..8]);
        (u64::from_be_bytes(hi) << shift) | (u64::from(w[8]) >> (8 - shift))
    }

    pub(crate) fn read_byte(&mut self) -> Result<u8> {
        Ok(self.read_bits(8)? as u8)
    }

    /// A Go `binary.ReadUvarint` over the bit stream (bytes need not be aligned).
    pub(crate) fn read_uvarint(&mut self) -> Result<u64> {
        let mut x: u64 = 0;
        let mut s = 0u32;
        for i in 0..crate::encoding::MAX_VARINT_LEN64 {
            let b = self.read_byte()?;
            if b < 0x80 {
                if i == crate::encoding::MAX_VARINT_LEN64 - 1 && b > 1 {
                    return Err(self.corrupt("varint overflows 64 bits"));
                }
                return Ok(x | (u64::from(b) << s));
            }
            x |= u64::from(b & 0x7f) << s;
            s += 7;
        }
        Err(self.corrupt("varint overflows 64 bits"))
    }

    pub(crate) fn read_varint(&mut self) -> Result<i64> {
        self.read_uvarint().map(crate::encoding::unzigzag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_roundtrip() {
        let mut w = BitWriter::with_header(&[0xAB]);
        w.write_bit(true);
        w.write_bits(0b101, 3);
        w.write_bits(u64::MAX, 64);
        w.write_byte(0x5A);
        w.write_bits(0x1234_5678_9abc, 48);
        w.write_bits(0, 0);
        let bytes = w.into_bytes();
        assert_eq!(bytes[0], 0xAB);
        let mut r = BitReader::new(&bytes[1..], 1);
        assert!(r.read_bit().unwrap());
        assert_eq!(r.read_bits(3).unwrap(), 0b101);
        assert_eq!(r.read_bits(64).unwrap(), u64::MAX);
        assert_eq!(r.read_byte().unwrap(), 0x5A);
        assert_eq!(r.read_bits(48).unwrap(), 0x1234_5678_9abc);
        assert!(r.remaining_bits() < 8);
        assert!(r.read_bits(8).is_err());
    }
}
