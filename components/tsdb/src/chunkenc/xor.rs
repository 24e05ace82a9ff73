//! The XOR float chunk (encoding 1): Gorilla-style delta-of-delta timestamps and XORed values,
//! bit-exact with Prometheus.

use crate::chunkenc::bstream::{BitReader, BitWriter};
use crate::error::{Error, Result};

/// Bytes of the sample-count header.
pub(crate) const XOR_HEADER_SIZE: usize = 2;

/// Leading-zero sentinel meaning "no previous window" in the writer.
const NO_WINDOW: u8 = 0xff;

/// Whether `x` fits the signed `nbits` bucket as Prometheus defines it
/// (`-(2^(n-1) - 1) ..= 2^(n-1)`).
#[inline]
pub(crate) fn bit_range(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// Writes `new ^ cur` with the leading/trailing-zero window scheme.
pub(crate) fn xor_write(
    w: &mut BitWriter,
    new: u64,
    cur: u64,
    leading: &mut u8,
    trailing: &mut u8,
) {
    let delta = new ^ cur;
    if delta == 0 {
        w.write_bit(false);
        return;
    }
    w.write_bit(true);
    let mut new_leading = delta.leading_zeros() as u8;
    let new_trailing = delta.trailing_zeros() as u8;
    if new_leading >= 32 {
        new_leading = 31;
    }
    if *leading != NO_WINDOW && new_leading >= *leading && new_trailing >= *trailing {
        w.write_bit(false);
        w.write_bits(
            delta >> *trailing,
            64 - u32::from(*leading) - u32::from(*trailing),
        );
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    w.write_bit(true);
    w.write_bits(u64::from(new_leading), 5);
    // 64 significant bits do not fit in 6 bits; they are written as 0 and read back as 64.
    let sigbits = 64 - u32::from(new_leading) - u32::from(new_trailing);
    w.write_bits(u64::from(sigbits), 6);
    w.write_bits(delta >> new_trailing, sigbits);
}

/// Reads a value written by [`xor_write`], updating `value` (as bits) and the window.
#[inline(always)]
pub(crate) fn xor_read(
    r: &mut BitReader<'_>,
    value: &mut u64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Result<()> {
    let end = xor_decode_at(r, r.pos(), value, leading, trailing)?;
    r.seek(end, "xor value")
}

/// Decodes an XOR value starting at bit `pos` from zero-padded 64-bit loads and returns the bit
/// position after it, unchecked: the caller must [`BitReader::seek`] there, which reports
/// truncation. The window is validated, so shifts stay in range on any input.
#[inline(always)]
fn xor_decode_at(
    r: &BitReader<'_>,
    pos: usize,
    value: &mut u64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Result<usize> {
    let w = r.load(pos);
    if w >> 63 == 0 {
        return Ok(pos + 1);
    }
    let (body, mbits, trail) = if (w >> 62) & 1 == 0 {
        // `10`: the previous window.
        let mbits = 64u32
            .checked_sub(u32::from(*leading) + u32::from(*trailing))
            .filter(|&m| m > 0)
            .ok_or_else(|| r.corrupt("xor window exceeds 64 bits"))?;
        (pos + 2, mbits, u32::from(*trailing))
    } else {
        // `11`: 5 bits of leading zeros, 6 of significant bits (0 means 64), then the bits.
        let lead = ((w >> 57) & 0x1f) as u32;
        let mut mbits = ((w >> 51) & 0x3f) as u32;
        if mbits == 0 {
            mbits = 64;
        }
        let trail = 64u32
            .checked_sub(lead + mbits)
            .ok_or_else(|| r.corrupt("xor leading zeros plus significant bits exceed 64"))?;
        *leading = lead as u8;
        *trailing = trail as u8;
        (pos + 13, mbits, trail)
    };
    // 1 ≤ mbits ≤ 64 and trail = 64 - lead - mbits < 64, so both shifts are in range.
    let bits = r.load(body) >> (64 - mbits);
    *value ^= bits << trail;
    Ok(body + mbits as usize)
}

/// Builds an XOR chunk sample by sample.
#[derive(Debug, Clone)]
pub struct XorAppender {
    w: BitWriter,
    num: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// An empty chunk.
    pub fn new() -> Self {
        XorAppender {
            w: BitWriter::with_header(&[0, 0]),
            num: 0,
            t: i64::MIN,
            v: 0,
            t_delta: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Samples appended so far.
    pub fn num_samples(&self) -> u16 {
        self.num
    }

    /// Current encoded size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.w.bytes().len()
    }

    /// The chunk bytes so far (a valid chunk at any point).
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Consumes the appender, returning the chunk bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.w.into_bytes()
    }

    /// Appends a sample. Timestamps are expected to increase (this is not checked here: the
    /// encoding itself tolerates any order); errors only when the chunk holds 65535 samples.
    pub fn append(&mut self, t: i64, v: f64) -> Result<()> {
        let vbits = v.to_bits();
        let mut t_delta = 0u64;
        match self.num {
            0 => {
                let mut buf = Vec::with_capacity(10);
                crate::encoding::put_varint(&mut buf, t);
                for b in buf {
                    self.w.write_byte(b);
                }
                self.w.write_bits(vbits, 64);
            }
            1 => {
                t_delta = (t as u64).wrapping_sub(self.t as u64);
                let mut buf = Vec::with_capacity(10);
                crate::encoding::put_uvarint(&mut buf, t_delta);
                for b in buf {
                    self.w.write_byte(b);
                }
                xor_write(
                    &mut self.w,
                    vbits,
                    self.v,
                    &mut self.leading,
                    &mut self.trailing,
                );
            }
            u16::MAX => {
                return Err(Error::InvalidArgument(
                    "xor chunk holds 65535 samples already".into(),
                ));
            }
            _ => {
                t_delta = (t as u64).wrapping_sub(self.t as u64);
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.w.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.w.write_bits(0b10, 2);
                    self.w.write_bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    self.w.write_bits(0b110, 3);
                    self.w.write_bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    self.w.write_bits(0b1110, 4);
                    self.w.write_bits(dod as u64, 20);
                } else {
                    self.w.write_bits(0b1111, 4);
                    self.w.write_bits(dod as u64, 64);
                }
                xor_write(
                    &mut self.w,
                    vbits,
                    self.v,
                    &mut self.leading,
                    &mut self.trailing,
                );
            }
        }
        self.t = t;
        self.v = vbits;
        self.t_delta = t_delta;
        self.num += 1;
        let n = self.num.to_be_bytes();
        let b = self.w.bytes_mut();
        b[0] = n[0];
        b[1] = n[1];
        Ok(())
    }
}

/// Iterates the `(t, v)` samples of an XOR chunk. Yields `Err` once and then stops when the
/// data is corrupt.
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> XorIterator<'a> {
    /// An iterator over chunk data (starting with the 2-byte sample count).
    pub fn new(data: &'a [u8]) -> Self {
        if data.len() < XOR_HEADER_SIZE {
            // Reports truncation on the first `next`.
            return XorIterator {
                r: BitReader::new(&[], 0),
                total: 1,
                read: 0,
                t: 0,
                v: 0,
                t_delta: 0,
                leading: 0,
                trailing: 0,
            };
        }
        XorIterator {
            r: BitReader::new(&data[XOR_HEADER_SIZE..], XOR_HEADER_SIZE),
            total: u16::from_be_bytes([data[0], data[1]]),
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
        }
    }

    #[inline(always)]
    fn step(&mut self) -> Result<(i64, f64)> {
        let r = &mut self.r;
        if self.read >= 2 {
            // Up to four prefix bits (the number of leading ones, ended by a zero), then
            // 0, 14, 17, 20 or 64 bits of delta of delta; then the value.
            let pos = r.pos();
            let w = r.load(pos);
            let (dod, next) = match w.leading_ones() {
                0 => (0, pos + 1),
                1 => (signed_bits((w >> 48) & 0x3fff, 14), pos + 16),
                2 => (signed_bits((w >> 44) & 0x1_ffff, 17), pos + 20),
                3 => (signed_bits((w >> 40) & 0xf_ffff, 20), pos + 24),
                _ => (r.load(pos + 4) as i64, pos + 68),
            };
            let end = xor_decode_at(r, next, &mut self.v, &mut self.leading, &mut self.trailing)?;
            r.seek(end, "sample")?;
            self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
            self.t = self.t.wrapping_add(self.t_delta as i64);
        } else if self.read == 0 {
            self.t = r.read_varint()?;
            self.v = r.read_bits(64)?;
        } else {
            self.t_delta = r.read_uvarint()?;
            self.t = self.t.wrapping_add(self.t_delta as i64);
            xor_read(r, &mut self.v, &mut self.leading, &mut self.trailing)?;
        }
        self.read += 1;
        Ok((self.t, f64::from_bits(self.v)))
    }
}

/// Interprets `bits` (n wide) the way Prometheus does: values above 2^(n-1) are negative.
#[inline]
pub(crate) fn signed_bits(bits: u64, n: u32) -> i64 {
    if bits > (1u64 << (n - 1)) {
        bits.wrapping_sub(1u64 << n) as i64
    } else {
        bits as i64
    }
}

impl Iterator for XorIterator<'_> {
    type Item = Result<(i64, f64)>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.read >= self.total {
            return None;
        }
        match self.step() {
            Ok(s) => Some(Ok(s)),
            Err(e) => {
                // Nothing after a decoding error is trustworthy.
                self.read = self.total;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::from(self.total.saturating_sub(self.read));
        (0, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(samples: &[(i64, f64)]) -> Vec<u8> {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, v).unwrap();
        }
        let bytes = a.into_bytes();
        let got: Vec<(i64, f64)> = XorIterator::new(&bytes).map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), samples.len());
        for (g, w) in got.iter().zip(samples) {
            assert_eq!(g.0, w.0);
            assert_eq!(g.1.to_bits(), w.1.to_bits());
        }
        bytes
    }

    #[test]
    fn known_bytes_single_sample() {
        // t=1000 → zigzag 2000 = 0xd0 0x0f; v=1.0 bits 0x3ff0000000000000.
        let b = roundtrip(&[(1000, 1.0)]);
        assert_eq!(b, [0, 1, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn special_values() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        roundtrip(&[
            (0, 0.0),
            (15, -0.0),
            (30, f64::INFINITY),
            (45, f64::NEG_INFINITY),
            (60, stale),
            (75, f64::NAN),
            (90, f64::from_bits(0x7ff8_dead_beef_0001)),
            (91, 1.5),
            (91, 1.5),
            (i64::MAX / 2, 2.0),
            (-5, f64::MIN_POSITIVE),
        ]);
    }

    #[test]
    fn dod_bucket_edges() {
        let mut s = vec![(0i64, 1.0), (10, 1.0)];
        let mut t = 10;
        let mut delta = 10i64;
        for dod in [
            0i64,
            8192,
            -8191,
            8193,
            -8192,
            65536,
            -65535,
            65537,
            524288,
            -524287,
            524289,
            1 << 40,
            -(1 << 40),
        ] {
            delta += dod;
            t += delta;
            s.push((t, t as f64));
        }
        roundtrip(&s);
    }

    #[test]
    fn truncated_data_errors() {
        let mut a = XorAppender::new();
        for i in 0..50 {
            a.append(i * 1000 + (i % 3), (i as f64).sin()).unwrap();
        }
        let b = a.into_bytes();
        for cut in 0..b.len() {
            let res: Result<Vec<_>> = XorIterator::new(&b[..cut]).collect();
            assert!(res.is_err(), "cut at {cut} should fail");
        }
    }

    fn value_bits() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u64>(),
            Just(0x7ff0_0000_0000_0002u64), // stale marker
            Just(0x7ff8_0000_0000_0001u64), // Go's NaN
            (0u64..(1 << 52)).prop_map(|p| 0x7ff0_0000_0000_0000 | p.max(1)), // NaN payloads
            (0u64..(1 << 52)).prop_map(|p| 0xfff0_0000_0000_0000 | p.max(1)),
            Just(f64::INFINITY.to_bits()),
            Just(f64::NEG_INFINITY.to_bits()),
            Just((-0.0f64).to_bits()),
            Just(0u64),
            (0i32..1000).prop_map(|i| f64::from(i).to_bits()),
        ]
    }

    fn ts_delta() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![
            Just(0i64),
            Just(15_000i64),
            -10i64..10,
            0i64..100_000,
            any::<i64>(),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn xor_roundtrips_any_bits(
            t0 in proptest::prelude::any::<i64>(),
            steps in proptest::collection::vec((ts_delta(), value_bits()), 0..300),
        ) {
            let mut t = t0;
            let mut samples = vec![(t0, 1.0f64)];
            for (d, v) in steps {
                t = t.wrapping_add(d);
                samples.push((t, f64::from_bits(v)));
            }
            let mut a = XorAppender::new();
            for &(t, v) in &samples {
                a.append(t, v).unwrap();
            }
            let bytes = a.into_bytes();
            let got: Vec<(i64, f64)> = XorIterator::new(&bytes).map(|r| r.unwrap()).collect();
            proptest::prop_assert_eq!(got.len(), samples.len());
            for (g, w) in got.iter().zip(&samples) {
                proptest::prop_assert_eq!(g.0, w.0);
                proptest::prop_assert_eq!(g.1.to_bits(), w.1.to_bits());
            }
        }

        #[test]
        fn xor_decoding_garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            for s in XorIterator::new(&data) {
                if s.is_err() {
                    break;
                }
            }
        }
    }
}
