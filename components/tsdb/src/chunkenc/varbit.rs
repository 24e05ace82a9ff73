//! Variable bit-width integers used by the histogram encodings: a unary size prefix of up to
//! eight bits selects a value width of 0, 3, 6, 9, 12, 18, 25, 56 or 64 bits.

use crate::chunkenc::bstream::{BitReader, BitWriter};
use crate::chunkenc::xor::{bit_range, signed_bits};
use crate::error::Result;

/// Width of the value for each number of leading one bits in the prefix.
const WIDTHS: [u32; 9] = [0, 3, 6, 9, 12, 18, 25, 56, 64];

fn read_prefix(r: &mut BitReader<'_>) -> Result<usize> {
    let mut ones = 0;
    while ones < 8 {
        if !r.read_bit()? {
            break;
        }
        ones += 1;
    }
    Ok(ones)
}

/// Reads a signed varbit integer.
pub(crate) fn read_varbit_int(r: &mut BitReader<'_>) -> Result<i64> {
    let ones = read_prefix(r)?;
    let width = WIDTHS[ones];
    match width {
        0 => Ok(0),
        64 => Ok(r.read_bits(64)? as i64),
        w => Ok(signed_bits(r.read_bits(w)?, w)),
    }
}

/// Reads an unsigned varbit integer.
pub(crate) fn read_varbit_uint(r: &mut BitReader<'_>) -> Result<u64> {
    let ones = read_prefix(r)?;
    r.read_bits(WIDTHS[ones])
}

fn write_prefix(w: &mut BitWriter, ones: usize) {
    if ones == 8 {
        w.write_bits(0xff, 8);
    } else {
        // `ones` one bits followed by a zero.
        let prefix = ((1u64 << ones) - 1) << 1;
        w.write_bits(prefix, ones as u32 + 1);
    }
}

/// Writes a signed varbit integer.
pub(crate) fn write_varbit_int(w: &mut BitWriter, v: i64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (ones, &width) in WIDTHS.iter().enumerate().skip(1) {
        if width == 64 || bit_range(v, width) {
            write_prefix(w, ones);
            w.write_bits(v as u64, width);
            return;
        }
    }
}

/// Writes an unsigned varbit integer.
pub(crate) fn write_varbit_uint(w: &mut BitWriter, v: u64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    let needed = 64 - v.leading_zeros();
    for (ones, &width) in WIDTHS.iter().enumerate().skip(1) {
        if needed <= width {
            write_prefix(w, ones);
            w.write_bits(v, width);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_edges() {
        let ints = [
            0i64,
            1,
            -1,
            4,
            -3,
            5,
            -4,
            32,
            -31,
            33,
            256,
            -255,
            257,
            2048,
            -2047,
            2049,
            131072,
            -131071,
            131073,
            16777216,
            -16777215,
            16777217,
            1 << 55,
            -(1 << 55) + 1,
            (1 << 55) + 1,
            i64::MAX,
            i64::MIN,
        ];
        let uints = [
            0u64,
            7,
            8,
            63,
            64,
            511,
            512,
            4095,
            4096,
            262143,
            262144,
            33554431,
            33554432,
            (1 << 56) - 1,
            1 << 56,
            u64::MAX,
        ];
        let mut w = BitWriter::with_header(&[]);
        for &v in &ints {
            write_varbit_int(&mut w, v);
        }
        for &v in &uints {
            write_varbit_uint(&mut w, v);
        }
        let b = w.into_bytes();
        let mut r = BitReader::new(&b, 0);
        for &v in &ints {
            assert_eq!(read_varbit_int(&mut r).unwrap(), v);
        }
        for &v in &uints {
            assert_eq!(read_varbit_uint(&mut r).unwrap(), v);
        }
    }

    #[test]
    fn sizes_match_prometheus() {
        // 4 fits the 3-bit bucket (prefix 10 + 3 bits = 5 bits); 5 needs the 6-bit one (9 bits).
        for (v, bits) in [(4i64, 5usize), (5, 9), (-3, 5), (-4, 9)] {
            let mut w = BitWriter::with_header(&[]);
            write_varbit_int(&mut w, v);
            w.write_bit(true);
            let b = w.into_bytes();
            let mut r = BitReader::new(&b, 0);
            read_varbit_int(&mut r).unwrap();
            assert_eq!(b.len() * 8 - r.remaining_bits(), bits);
        }
    }
}
