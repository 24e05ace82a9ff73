//! Chunk segment files (`chunks/000001`, …): an 8-byte header, then records of
//! `len uvarint | encoding byte | data | CRC32C(encoding + data)`.
//!
//! A chunk is addressed by a [`ChunkRef`]: segment index (0-based) in the upper 32 bits, byte
//! offset of the record in the lower 32.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chunkenc::{Chunk, Encoding};
use crate::encoding::{crc32c, put_uvarint, uvarint};
use crate::error::{Error, Result};
use crate::meta::sync_dir;
use crate::source::{ByteSource, MmapSource};

/// Magic number at the start of a segment.
pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
/// Segment format version.
pub const CHUNKS_FORMAT_V1: u8 = 1;
/// Bytes of the segment header (magic, version, 3 bytes padding).
pub const SEGMENT_HEADER_SIZE: u64 = 8;
/// Default maximum segment size (512 MiB), as Prometheus uses.
pub const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024 * 1024;
/// Largest data length a record may claim (Prometheus reads the length as at most 5 bytes).
const MAX_CHUNK_LEN_FIELD: usize = 5;
/// Largest chunk data accepted when reading (far above anything Prometheus writes).
pub const MAX_CHUNK_DATA_LEN: u64 = 16 * 1024 * 1024;

/// A chunk's address in a block: `(segment index << 32) | offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChunkRef(pub u64);

impl ChunkRef {
    /// Packs a segment index and offset.
    pub fn new(segment: u32, offset: u32) -> Self {
        ChunkRef((u64::from(segment) << 32) | u64::from(offset))
    }

    /// The 0-based segment index.
    pub fn segment(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The byte offset of the record inside the segment.
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

/// File name of segment `seq` (1-based): `000001`.
pub fn segment_file_name(seq: u32) -> String {
    format!("{seq:06}")
}

/// Writes chunks into numbered segment files, cutting a new one when the current would exceed
/// the segment size.
#[derive(Debug)]
pub struct SegmentWriter {
    dir: PathBuf,
    segment_size: u64,
    cur: Option<(BufWriter<File>, PathBuf)>,
    /// Segments started so far.
    segments: u32,
    /// Bytes in the current segment.
    n: u64,
    /// Paths of finished and current segments.
    files: Vec<PathBuf>,
    /// Finished segments being fsynced in the background while the next one is written.
    syncing: Vec<(PathBuf, std::thread::JoinHandle<std::io::Result<()>>)>,
}

impl SegmentWriter {
    /// A writer creating `000001…` in `dir` (created if missing). `segment_size` must fit a
    /// 32-bit offset.
    pub fn new(dir: &Path, segment_size: u64) -> Result<Self> {
        if segment_size <= SEGMENT_HEADER_SIZE || segment_size > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(format!(
                "segment size {segment_size} must be between {} and {}",
                SEGMENT_HEADER_SIZE + 1,
                u32::MAX
            )));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            segment_size,
            cur: None,
            segments: 0,
            n: 0,
            files: Vec::new(),
            syncing: Vec::new(),
        })
    }

    /// Flushes the current segment and starts its fsync on a background thread.
    fn finish_current(&mut self) -> Result<()> {
        if let Some((w, path)) = self.cur.take() {
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            let sync = std::thread::Builder::new()
                .name("segment-fsync".into())
                .spawn(move || f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            self.syncing.push((path, sync));
        }
        Ok(())
    }

    /// Waits for every background fsync; the first failure is the error.
    fn wait_synced(&mut self) -> Result<()> {
        let mut first = Ok(());
        for (path, sync) in self.syncing.drain(..) {
            let r = sync
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")));
            if let (Err(e), true) = (r, first.is_ok()) {
                first = Err(Error::io(&path, e));
            }
        }
        first
    }

    fn cut(&mut self) -> Result<()> {
        self.finish_current()?;
        let seq = self.segments + 1;
        let path = self.dir.join(segment_file_name(seq));
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut hdr = [0u8; SEGMENT_HEADER_SIZE as usize];
        hdr[..4].copy_from_slice(&MAGIC_CHUNKS.to_be_bytes());
        hdr[4] = CHUNKS_FORMAT_V1;
        w.write_all(&hdr).map_err(|e| Error::io(&path, e))?;
        self.cur = Some((w, path.clone()));
        self.files.push(path);
        self.segments = seq;
        self.n = SEGMENT_HEADER_SIZE;
        Ok(())
    }

    /// Appends one chunk record and returns its reference.
    pub fn write_chunk(&mut self, encoding: Encoding, data: &[u8]) -> Result<ChunkRef> {
        // Same estimate Prometheus uses: the length field counted at its maximum.
        let est = (MAX_CHUNK_LEN_FIELD + 1 + data.len() + 4) as u64;
        if self.cur.is_none() || (self.n > SEGMENT_HEADER_SIZE && self.n + est > self.segment_size)
        {
            self.cut()?;
        }
        let offset = u32::try_from(self.n).map_err(|_| {
            Error::InvalidArgument(format!("segment offset {} exceeds 32 bits", self.n))
        })?;
        let r = ChunkRef::new(self.segments - 1, offset);
        let mut head = Vec::with_capacity(MAX_CHUNK_LEN_FIELD + 1);
        put_uvarint(&mut head, data.len() as u64);
        let enc = encoding.as_u8();
        head.push(enc);
        let crc = crc32c::crc32c_append(crc32c(&[enc]), data);
        let Some((w, path)) = self.cur.as_mut() else {
            return Err(Error::InvalidArgument("no open segment".into()));
        };
        let write = |w: &mut BufWriter<File>| -> std::io::Result<()> {
            w.write_all(&head)?;
            w.write_all(data)?;
            w.write_all(&crc.to_be_bytes())
        };
        write(w).map_err(|e| Error::io(path.as_path(), e))?;
        self.n += (head.len() + data.len() + 4) as u64;
        Ok(r)
    }

    /// Flushes and fsyncs every segment and the directory; returns the segment paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.finish_current()?;
        self.wait_synced()?;
        sync_dir(&self.dir)?;
        Ok(std::mem::take(&mut self.files))
    }
}

/// Reads chunks from the segments of a block.
#[derive(Clone)]
pub struct ChunksReader {
    segments: Vec<Arc<dyn ByteSource>>,
}

impl std::fmt::Debug for ChunksReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunksReader")
            .field(
                "segments",
                &self
                    .segments
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ChunksReader {
    /// Uses the given segment sources (in segment order), checking each header.
    pub fn new(segments: Vec<Arc<dyn ByteSource>>) -> Result<Self> {
        for s in &segments {
            let name = s.name();
            if s.len() < SEGMENT_HEADER_SIZE {
                return Err(Error::Truncated {
                    file: name.to_string(),
                    offset: 0,
                    what: "segment header",
                });
            }
            let h = s.read_range(0, SEGMENT_HEADER_SIZE as usize)?;
            let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            if magic != MAGIC_CHUNKS {
                return Err(Error::BadMagic {
                    file: name.to_string(),
                    expected: MAGIC_CHUNKS,
                    actual: magic,
                });
            }
            if h[4] != CHUNKS_FORMAT_V1 {
                return Err(Error::BadVersion {
                    file: name.to_string(),
                    version: u32::from(h[4]),
                });
            }
        }
        Ok(ChunksReader { segments })
    }

    /// Memory-maps the numbered files in `dir` (ordered by number).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let name = e.file_name();
            if let Some(n) = name.to_str().and_then(|s| s.parse::<u64>().ok()) {
                files.push((n, e.path()));
            }
        }
        files.sort();
        let mut segs: Vec<Arc<dyn ByteSource>> = Vec::with_capacity(files.len());
        for (_, p) in files {
            segs.push(Arc::new(MmapSource::open(&p)?));
        }
        Self::new(segs)
    }

    /// Number of segments.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes of all segments.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.len()).sum()
    }

    /// Reads and checks (CRC32C) the chunk at `r`.
    pub fn chunk(&self, r: ChunkRef) -> Result<Chunk> {
        let Some(seg) = self.segments.get(r.segment() as usize) else {
            return Err(Error::OutOfRange {
                file: "chunks".into(),
                offset: r.0,
                what: format!("chunk ref {:#x}: segment index {}", r.0, r.segment()),
            });
        };
        let name = seg.name();
        let off = u64::from(r.offset());
        let len = seg.len();
        if off < SEGMENT_HEADER_SIZE || off >= len {
            return Err(Error::OutOfRange {
                file: name.to_string(),
                offset: off,
                what: format!("chunk ref {:#x}", r.0),
            });
        }
        let avail = (len - off).min(MAX_CHUNK_LEN_FIELD as u64) as usize;
        let lenb = seg.read_range(off, avail)?;
        let (data_len, n) = match uvarint(&lenb) {
            Ok(Some((v, n))) if n <= MAX_CHUNK_LEN_FIELD => (v, n),
            Ok(None) => {
                return Err(Error::Truncated {
                    file: name.to_string(),
                    offset: off,
                    what: "chunk length",
                });
            }
            _ => {
                return Err(Error::Corrupt {
                    file: name.to_string(),
                    offset: off,
                    what: "chunk length varint longer than 5 bytes".into(),
                });
            }
        };
        let rest = len - off - n as u64;
        if data_len > MAX_CHUNK_DATA_LEN || data_len + 5 > rest {
            return Err(Error::TooLarge {
                file: name.to_string(),
                offset: off,
                what: "chunk data",
                len: data_len,
            });
        }
        let body = seg.read_range(off + n as u64, data_len as usize + 5)?;
        let (payload, crc) = body.split_at(data_len as usize + 1);
        crate::encoding::check_crc(name, off, payload, crc)?;
        Chunk::new(body[0], body.slice(1..1 + data_len as usize))
            .map_err(|e| e.with_file(name, off))
    }
}

/// The full size of the chunk record starting at `b[0]` (length varint, encoding byte, data
/// and CRC), or `None` when `b` is too short to hold the length varint.
pub fn chunk_record_size(file: &str, b: &[u8], off: u64) -> Result<Option<u64>> {
    match uvarint(b) {
        Ok(Some((v, n))) if n <= MAX_CHUNK_LEN_FIELD => {
            if v > MAX_CHUNK_DATA_LEN {
                return Err(Error::TooLarge {
                    file: file.to_string(),
                    offset: off,
                    what: "chunk data",
                    len: v,
                });
            }
            Ok(Some(v + n as u64 + 5))
        }
        Ok(None) if b.len() < MAX_CHUNK_LEN_FIELD => Ok(None),
        _ => Err(Error::Corrupt {
            file: file.to_string(),
            offset: off,
            what: "chunk length varint longer than 5 bytes".into(),
        }),
    }
}

/// Decodes the chunk record at the start of `b` (file offset `off`): checks its CRC32C and
/// returns the encoding byte and the data. Unlike [`ChunksReader::chunk`] it accepts any
/// encoding byte (Thanos's aggregate chunks use 0xff). Trailing bytes are ignored.
pub fn decode_chunk_record(file: &str, b: &bytes::Bytes, off: u64) -> Result<(u8, bytes::Bytes)> {
    let Some(size) = chunk_record_size(file, b, off)? else {
        return Err(Error::Truncated {
            file: file.to_string(),
            offset: off,
            what: "chunk length",
        });
    };
    if size > b.len() as u64 {
        return Err(Error::Truncated {
            file: file.to_string(),
            offset: off,
            what: "chunk record",
        });
    }
    let size = size as usize;
    let n = match uvarint(b) {
        Ok(Some((_, n))) => n,
        _ => {
            return Err(Error::Truncated {
                file: file.to_string(),
                offset: off,
                what: "chunk length",
            });
        }
    };
    let payload = &b[n..size - 4];
    crate::encoding::check_crc(file, off, payload, &b[size - 4..size])?;
    Ok((b[n], b.slice(n + 1..size - 4)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::BytesSource;

    #[test]
    fn write_read_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::new(dir.path(), 100).unwrap();
        let c = Chunk::from_floats(&[(1, 1.0), (2, 2.0), (3, 3.0)]).unwrap();
        let refs: Vec<ChunkRef> = (0..5)
            .map(|_| w.write_chunk(Encoding::Xor, c.data()).unwrap())
            .collect();
        let files = w.finish().unwrap();
        assert!(files.len() > 1, "small segment size cuts segments");
        assert_eq!(refs[0], ChunkRef::new(0, 8));
        let r = ChunksReader::open_dir(dir.path()).unwrap();
        for cr in &refs {
            assert_eq!(r.chunk(*cr).unwrap(), c);
        }
        assert!(r.chunk(ChunkRef::new(9, 8)).is_err());
        assert!(r.chunk(ChunkRef::new(0, 3)).is_err());
        assert!(r.chunk(ChunkRef::new(0, 1 << 30)).is_err());
    }

    #[test]
    fn corrupt_segments_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::new(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        let c = Chunk::from_floats(&[(1, 1.0), (2, 2.0)]).unwrap();
        let cr = w.write_chunk(Encoding::Xor, c.data()).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(dir.path().join("000001")).unwrap();
        // Bytes 5..8 are header padding, which readers ignore.
        for i in (0..bytes.len()).filter(|i| !(5..8).contains(i)) {
            let mut b = bytes.clone();
            b[i] ^= 0x41;
            let src: Arc<dyn ByteSource> = Arc::new(BytesSource::new("seg", b));
            if let Ok(r) = ChunksReader::new(vec![src]) {
                assert!(r.chunk(cr).is_err(), "flip at {i} undetected");
            }
        }
        for cut in 0..bytes.len() {
            let src: Arc<dyn ByteSource> = Arc::new(BytesSource::new("seg", bytes[..cut].to_vec()));
            if let Ok(r) = ChunksReader::new(vec![src]) {
                assert!(r.chunk(cr).is_err());
            }
        }
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use crate::chunkenc::aggr;

    #[test]
    fn records_decode_any_encoding_and_check_the_crc() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::new(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        let c = Chunk::from_floats(&[(1, 1.0), (2, 2.0)]).unwrap();
        let payload = aggr::encode(&[Some((1, c.data().clone())), None, None, None, None]);
        let r1 = w.write_chunk(Encoding::Xor, c.data()).unwrap();
        let r2 = w.write_chunk(Encoding::Aggr, &payload).unwrap();
        w.finish().unwrap();
        let seg = bytes::Bytes::from(std::fs::read(dir.path().join("000001")).unwrap());
        let at = |r: ChunkRef| seg.slice(r.offset() as usize..);
        let (enc, data) = decode_chunk_record("s", &at(r1), 8).unwrap();
        assert_eq!((enc, &data), (1, c.data()));
        let (enc, data) = decode_chunk_record("s", &at(r2), 0).unwrap();
        assert_eq!((enc, &data[..]), (aggr::AGGR_ENCODING, &payload[..]));
        // The reader accepts the aggregate encoding too.
        let reader = ChunksReader::open_dir(dir.path()).unwrap();
        assert_eq!(reader.chunk(r2).unwrap().encoding(), Encoding::Aggr);
        let size = chunk_record_size("s", &at(r1), 8).unwrap().unwrap() as usize;
        assert_eq!(u64::from(r2.offset()) - u64::from(r1.offset()), size as u64);
        assert!(decode_chunk_record("s", &at(r1).slice(..size - 1), 8).is_err());
        let mut bad = at(r1)[..size].to_vec();
        bad[3] ^= 0x10;
        assert!(decode_chunk_record("s", &bytes::Bytes::from(bad), 8).is_err());
        assert_eq!(chunk_record_size("s", &[0x80], 8).unwrap(), None);
    }
}
