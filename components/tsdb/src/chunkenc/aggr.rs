//! Thanos's aggregate chunks (encoding byte 0xff in a segment file), the chunks of downsampled
//! blocks. The payload holds five sub-chunks in `AggrType` order (count, sum, min, max,
//! counter), each written as `uvarint(len(data)) | encoding byte | data`; an absent aggregate
//! is a lone `uvarint(0)`.

use bytes::Bytes;

use crate::encoding::{put_uvarint, uvarint};
use crate::error::{Error, Result};

/// The encoding byte of an aggregate chunk in a segment file.
pub const AGGR_ENCODING: u8 = 0xff;
/// Number of aggregates (count, sum, min, max, counter).
pub const NUM_AGGRS: usize = 5;

/// One sub-chunk: its encoding byte and data.
pub type SubChunk = (u8, Bytes);

/// Encodes the aggregate chunk payload of `subs` (indexed by aggregate).
pub fn encode(subs: &[Option<SubChunk>; NUM_AGGRS]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in subs {
        match s {
            None => put_uvarint(&mut out, 0),
            Some((enc, data)) => {
                put_uvarint(&mut out, data.len() as u64);
                out.push(*enc);
                out.extend_from_slice(data);
            }
        }
    }
    out
}

/// Decodes an aggregate chunk payload into its (up to five) sub-chunks. Trailing bytes after
/// the fifth entry are an error; fewer than five entries are treated as absent aggregates.
pub fn decode(payload: &Bytes) -> Result<[Option<SubChunk>; NUM_AGGRS]> {
    let mut out: [Option<SubChunk>; NUM_AGGRS] = Default::default();
    let mut pos = 0usize;
    for slot in out.iter_mut() {
        if pos == payload.len() {
            break;
        }
        let (len, n) = match uvarint(&payload[pos..]) {
            Ok(Some(v)) => v,
            _ => return Err(corrupt(pos, "aggregate sub-chunk length")),
        };
        pos += n;
        if len == 0 {
            continue;
        }
        let avail = (payload.len() - pos) as u64;
        if len.checked_add(1).is_none_or(|l| l > avail) {
            return Err(corrupt(pos, "aggregate sub-chunk overruns the chunk"));
        }
        let len = len as usize;
        *slot = Some((payload[pos], payload.slice(pos + 1..pos + 1 + len)));
        pos += 1 + len;
    }
    if pos != payload.len() {
        return Err(corrupt(pos, "trailing bytes after five aggregates"));
    }
    Ok(out)
}

fn corrupt(pos: usize, what: &str) -> Error {
    Error::Corrupt {
        file: "aggregate chunk".into(),
        offset: pos as u64,
        what: what.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkenc::Chunk;

    #[test]
    fn round_trip_with_absent_aggregates() {
        let count = Chunk::from_floats(&[(0, 5.0), (300_000, 5.0)]).unwrap();
        let sum = Chunk::from_floats(&[(0, 10.5), (300_000, 7.25)]).unwrap();
        let counter = Chunk::from_floats(&[(0, 1.0), (300_000, 2.0), (600_000, 9.0)]).unwrap();
        let subs: [Option<SubChunk>; NUM_AGGRS] = [
            Some((1, count.data().clone())),
            Some((1, sum.data().clone())),
            None,
            None,
            Some((1, counter.data().clone())),
        ];
        let b = Bytes::from(encode(&subs));
        let got = decode(&b).unwrap();
        assert_eq!(got, subs);
        let c = Chunk::new(1, got[4].as_ref().unwrap().1.clone()).unwrap();
        assert_eq!(c.samples().unwrap().len(), 3);
        assert!(decode(&Bytes::new()).unwrap().iter().all(Option::is_none));
    }

    #[test]
    fn truncated_or_padded_payloads_are_errors() {
        let sum = Chunk::from_floats(&[(0, 10.5), (1, 3.0)]).unwrap();
        let subs: [Option<SubChunk>; NUM_AGGRS] =
            [None, Some((1, sum.data().clone())), None, None, None];
        let b = encode(&subs);
        for cut in 1..b.len() {
            if cut == 1 {
                // Only the first (absent) entry: the rest read as absent.
                assert!(decode(&Bytes::copy_from_slice(&b[..cut])).is_ok());
                continue;
            }
            if cut < b.len() - 3 {
                assert!(
                    decode(&Bytes::copy_from_slice(&b[..cut])).is_err(),
                    "cut {cut}"
                );
            }
        }
        let mut long = b.clone();
        long.push(0);
        assert!(decode(&Bytes::from(long)).is_err());
    }
}
