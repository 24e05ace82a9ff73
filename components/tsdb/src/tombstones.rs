//! The `tombstones` file: deleted time ranges per series.
//!
//! Layout: magic `0x0130BA30` (4 bytes BE), version byte 1, then records of
//! `series ref uvarint | mint varint | maxt varint`, then a CRC32C over the records (the version
//! byte excluded), big endian.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::encoding::{Cursor, crc32c, put_uvarint, put_varint};
use crate::error::{Error, Result};

/// File name inside a block.
pub const TOMBSTONES_FILENAME: &str = "tombstones";
/// Magic number.
pub const MAGIC_TOMBSTONES: u32 = 0x0130_BA30;
/// Format version.
pub const TOMBSTONES_FORMAT_V1: u8 = 1;

/// A closed time interval `[mint, maxt]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    /// First deleted timestamp.
    pub mint: i64,
    /// Last deleted timestamp.
    pub maxt: i64,
}

impl Interval {
    /// Whether `t` lies in the interval.
    pub fn contains(&self, t: i64) -> bool {
        self.mint <= t && t <= self.maxt
    }
}

/// Sorts intervals and merges overlapping or adjacent ones.
fn normalize(list: &mut Vec<Interval>) {
    list.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(list.len());
    for i in list.drain(..) {
        match merged.last_mut() {
            Some(last) if i.mint <= last.maxt.saturating_add(1) => {
                last.maxt = last.maxt.max(i.maxt)
            }
            _ => merged.push(i),
        }
    }
    *list = merged;
}

/// Deleted intervals by series reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstones {
    map: BTreeMap<u64, Vec<Interval>>,
}

impl Tombstones {
    /// No tombstones.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an interval for a series, merging overlapping or adjacent ones.
    pub fn add(&mut self, series: u64, iv: Interval) {
        let list = self.map.entry(series).or_default();
        list.push(iv);
        list.sort();
        let mut merged: Vec<Interval> = Vec::with_capacity(list.len());
        for i in list.drain(..) {
            match merged.last_mut() {
                Some(last) if i.mint <= last.maxt.saturating_add(1) => {
                    last.maxt = last.maxt.max(i.maxt)
                }
                _ => merged.push(i),
            }
        }
        *list = merged;
    }

    /// The intervals of a series.
    pub fn get(&self, series: u64) -> &[Interval] {
        self.map.get(&series).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `t` of `series` is deleted.
    pub fn is_deleted(&self, series: u64, t: i64) -> bool {
        self.get(series).iter().any(|i| i.contains(t))
    }

    /// Total number of intervals (what `numTombstones` counts).
    pub fn num_intervals(&self) -> u64 {
        self.map.values().map(|v| v.len() as u64).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates `(series, intervals)` in series order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[Interval])> {
        self.map.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// Encodes the whole file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.map.len() * 12);
        out.extend_from_slice(&MAGIC_TOMBSTONES.to_be_bytes());
        out.push(TOMBSTONES_FORMAT_V1);
        for (&r, ivs) in &self.map {
            for iv in ivs {
                put_uvarint(&mut out, r);
                put_varint(&mut out, iv.mint);
                put_varint(&mut out, iv.maxt);
            }
        }
        let crc = crc32c(&out[5..]);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a whole file; `name` names it in errors.
    pub fn decode(b: &[u8], name: &str) -> Result<Self> {
        if b.len() < 9 {
            return Err(Error::Truncated {
                file: name.to_string(),
                offset: b.len() as u64,
                what: "tombstones header",
            });
        }
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC_TOMBSTONES {
            return Err(Error::BadMagic {
                file: name.to_string(),
                expected: MAGIC_TOMBSTONES,
                actual: magic,
            });
        }
        let body_end = b.len() - 4;
        crate::encoding::check_crc(name, 5, &b[5..body_end], &b[body_end..])?;
        if b[4] != TOMBSTONES_FORMAT_V1 {
            return Err(Error::BadVersion {
                file: name.to_string(),
                version: u32::from(b[4]),
            });
        }
        let mut c = Cursor::new(name, &b[5..body_end], 5);
        let mut map: BTreeMap<u64, Vec<Interval>> = BTreeMap::new();
        while !c.is_empty() {
            let r = c.uvarint("tombstone series ref")?;
            let mint = c.varint("tombstone mint")?;
            let maxt = c.varint("tombstone maxt")?;
            map.entry(r).or_default().push(Interval { mint, maxt });
        }
        // Merge once per series: adding one by one would be quadratic on hostile input.
        for list in map.values_mut() {
            normalize(list);
        }
        Ok(Tombstones { map })
    }

    /// Reads `<dir>/tombstones`; a missing file means no tombstones.
    pub fn read_from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOMBSTONES_FILENAME);
        match fs::read(&path) {
            Ok(b) => Self::decode(&b, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes `<dir>/tombstones` via a temporary file, fsync and rename; returns its size.
    pub fn write_to_dir(&self, dir: &Path) -> Result<u64> {
        let data = self.encode();
        let path = dir.join(TOMBSTONES_FILENAME);
        let tmp = dir.join(format!("{TOMBSTONES_FILENAME}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_bytes() {
        assert_eq!(
            Tombstones::new().encode(),
            [0x01, 0x30, 0xBA, 0x30, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn roundtrip_and_merge() {
        let mut t = Tombstones::new();
        t.add(5, Interval { mint: 10, maxt: 20 });
        t.add(5, Interval { mint: 21, maxt: 30 });
        t.add(1, Interval { mint: -5, maxt: 5 });
        assert_eq!(t.get(5), &[Interval { mint: 10, maxt: 30 }]);
        assert!(t.is_deleted(1, 0));
        let b = t.encode();
        assert_eq!(Tombstones::decode(&b, "t").unwrap(), t);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(Tombstones::decode(&c, "t").is_err(), "flip {i}");
        }
        for cut in 0..b.len() {
            assert!(Tombstones::decode(&b[..cut], "t").is_err());
        }
    }
}
