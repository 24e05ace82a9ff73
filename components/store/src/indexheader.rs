//! The binary index-header (Thanos's format v1): the symbol table and postings offset table of a
//! block's index, copied by range reads, behind a small header and TOC.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic 0xBAAAD792 (4) | format version 1 (1) | index version (1) | postings end (8)
//! symbol table section, byte for byte as in the index     (len 4 | body | crc32c 4)
//! postings offset table section, byte for byte as in the index (len 4 | body | crc32c 4),
//!   followed by the rest of the index: its 52-byte TOC (Thanos copies up to the index's end)
//! TOC: symbols offset (8) | postings offset table offset (8) | crc32c of those 16 bytes (4)
//! ```
//!
//! "Postings end" is the index's postings offset table position, which bounds the last postings
//! list. The offsets in the copied postings offset table still point into the index file.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use strata_objstore::Bucket;
use strata_tsdb::crc32c;
use strata_tsdb::index::{
    INDEX_FORMAT_V2, INDEX_FORMAT_V3, MAGIC_INDEX, PostingsTable, Symbols, TOC_LEN, section_body,
};
use ulid::Ulid;

use crate::error::{Error, Result};
use crate::stats::QueryStats;

/// Magic number at the start of an index-header.
pub const MAGIC_INDEX_HEADER: u32 = 0xBAAA_D792;
/// The only index-header format version.
pub const INDEX_HEADER_V1: u8 = 1;
/// Bytes before the symbol table: magic, format version, index version, postings end.
pub const INDEX_HEADER_HEADER_LEN: u64 = 4 + 1 + 1 + 8;
/// Bytes of the index-header TOC.
pub const INDEX_HEADER_TOC_LEN: u64 = 8 + 8 + 4;
/// File name of the index-header inside a block's local directory.
pub const INDEX_HEADER_FILENAME: &str = "index-header";

/// A loaded index-header: what a block needs in memory to turn matchers into postings ranges
/// and series references into labels.
#[derive(Debug)]
pub struct IndexHeader {
    path: PathBuf,
    index_version: u8,
    postings_end: u64,
    symbols: Symbols,
    postings: PostingsTable,
    size: u64,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::IndexHeader {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Length of the `len | body | crc` section at the start of `b`, checked against `b`.
fn section_len(b: &[u8]) -> Option<usize> {
    if b.len() < 4 {
        return None;
    }
    let n = (be32(b) as usize).checked_add(8)?;
    (n <= b.len()).then_some(n)
}

impl IndexHeader {
    /// Parses and validates index-header bytes (`path` names the file in errors).
    pub fn from_bytes(path: &Path, b: Bytes) -> Result<Self> {
        let size = b.len() as u64;
        if size < INDEX_HEADER_HEADER_LEN + INDEX_HEADER_TOC_LEN {
            return Err(bad(path, format!("{size} bytes is too short")));
        }
        let magic = be32(&b);
        if magic != MAGIC_INDEX_HEADER {
            return Err(bad(path, format!("bad magic {magic:#010x}")));
        }
        if b[4] != INDEX_HEADER_V1 {
            return Err(bad(path, format!("unsupported format version {}", b[4])));
        }
        let index_version = b[5];
        if index_version != INDEX_FORMAT_V2 && index_version != INDEX_FORMAT_V3 {
            return Err(bad(
                path,
                format!("unsupported index version {index_version}"),
            ));
        }
        let postings_end = be64(&b[6..]);
        let toc_at = (size - INDEX_HEADER_TOC_LEN) as usize;
        let toc = &b[toc_at..];
        if crc32c(&toc[..16]) != be32(&toc[16..]) {
            return Err(bad(path, "TOC checksum mismatch"));
        }
        let sym_off = be64(toc);
        let pot_off = be64(&toc[8..]);
        let name = path.display().to_string();
        let section = |off: u64, what: &'static str| -> Result<(Bytes, u64)> {
            if off < INDEX_HEADER_HEADER_LEN || off >= toc_at as u64 {
                return Err(bad(path, format!("{what} offset {off} out of bounds")));
            }
            let sec = b.slice(off as usize..toc_at);
            let body =
                section_body(&name, &sec, off, what).map_err(|e| bad(path, e.to_string()))?;
            Ok((body, off + 4))
        };
        let (sym, sym_base) = section(sym_off, "symbol table")?;
        let (pot, pot_base) = section(pot_off, "postings offset table")?;
        let symbols = Symbols::parse(&name, sym, sym_base).map_err(|e| bad(path, e.to_string()))?;
        let postings = PostingsTable::parse(&name, pot, pot_base, postings_end)
            .map_err(|e| bad(path, e.to_string()))?;
        Ok(IndexHeader {
            path: path.to_path_buf(),
            index_version,
            postings_end,
            symbols,
            postings,
            size,
        })
    }

    /// Reads and validates the index-header at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, Bytes::from(b))
    }

    /// Builds the index-header bytes of `<block>/index` with range reads only (the index TOC,
    /// the header and symbol table, the postings offset table), each counted in `stats`.
    pub async fn build_bytes(bucket: &Bucket, block: Ulid, stats: &QueryStats) -> Result<Bytes> {
        let obj = format!("{block}/index");
        let os = |source| Error::Objstore { block, source };
        let corrupt = |what: String| Error::Tsdb {
            block,
            source: strata_tsdb::Error::Corrupt {
                file: obj.clone(),
                offset: 0,
                what,
            },
        };
        let size = bucket.attributes(&obj).await.map_err(os)?.size;
        if size < 5 + TOC_LEN {
            return Err(corrupt(format!("index of {size} bytes is too short")));
        }
        let toc_off = size - TOC_LEN;
        let t = bucket.get_range(&obj, toc_off..size).await.map_err(os)?;
        stats.add_get(t.len() as u64);
        if t.len() as u64 != TOC_LEN {
            return Err(corrupt("short read of the TOC".into()));
        }
        if crc32c(&t[..48]) != be32(&t[48..]) {
            return Err(Error::Tsdb {
                block,
                source: strata_tsdb::Error::CrcMismatch {
                    file: obj.clone(),
                    offset: toc_off,
                    expected: be32(&t[48..]),
                    actual: crc32c(&t[..48]),
                },
            });
        }
        let offs: Vec<u64> = (0..6).map(|i| be64(&t[i * 8..])).collect();
        let (sym_off, pot_off) = (offs[0], offs[5]);
        if sym_off < 5 || sym_off >= toc_off || pot_off <= sym_off || pot_off >= toc_off {
            return Err(corrupt(format!(
                "TOC offsets out of bounds: symbols {sym_off}, postings offset table {pot_off}"
            )));
        }
        // The symbol table ends where the next section starts.
        let sym_end = offs[1..]
            .iter()
            .copied()
            .filter(|&o| o > sym_off)
            .min()
            .unwrap_or(toc_off)
            .min(toc_off);
        let head = bucket.get_range(&obj, 0..sym_end).await.map_err(os)?;
        stats.add_get(head.len() as u64);
        if head.len() as u64 != sym_end {
            return Err(corrupt("short read of the symbol table".into()));
        }
        let magic = be32(&head);
        if magic != MAGIC_INDEX {
            return Err(Error::Tsdb {
                block,
                source: strata_tsdb::Error::BadMagic {
                    file: obj.clone(),
                    expected: MAGIC_INDEX,
                    actual: magic,
                },
            });
        }
        let version = head[4];
        if version != INDEX_FORMAT_V2 && version != INDEX_FORMAT_V3 {
            return Err(Error::Tsdb {
                block,
                source: strata_tsdb::Error::BadVersion {
                    file: obj.clone(),
                    version: u32::from(version),
                },
            });
        }
        let tsdb = |source| Error::Tsdb { block, source };
        let sym_sec = head.slice(sym_off as usize..);
        let sym_len = section_len(&sym_sec)
            .ok_or_else(|| corrupt("symbol table overruns its section".into()))?;
        let sym_sec = sym_sec.slice(..sym_len);
        // Validate before writing: a header that would not load is not worth keeping.
        let body = section_body(&obj, &sym_sec, sym_off, "symbol table").map_err(tsdb)?;
        Symbols::parse(&obj, body, sym_off + 4).map_err(tsdb)?;

        let pot = bucket.get_range(&obj, pot_off..toc_off).await.map_err(os)?;
        stats.add_get(pot.len() as u64);
        if pot.len() as u64 != toc_off - pot_off {
            return Err(corrupt("short read of the postings offset table".into()));
        }
        section_len(&pot)
            .ok_or_else(|| corrupt("postings offset table overruns the index".into()))?;
        let body = section_body(&obj, &pot, pot_off, "postings offset table").map_err(tsdb)?;
        PostingsTable::parse(&obj, body, pot_off + 4, pot_off).map_err(tsdb)?;

        let mut out = BytesMut::with_capacity(
            INDEX_HEADER_HEADER_LEN as usize
                + sym_len
                + pot.len()
                + t.len()
                + INDEX_HEADER_TOC_LEN as usize,
        );
        out.put_u32(MAGIC_INDEX_HEADER);
        out.put_u8(INDEX_HEADER_V1);
        out.put_u8(version);
        out.put_u64(pot_off);
        let new_sym = out.len() as u64;
        out.put_slice(&sym_sec);
        let new_pot = out.len() as u64;
        // Like Thanos, the copy runs from the postings offset table to the end of the index,
        // so the index's own TOC is kept too.
        out.put_slice(&pot);
        out.put_slice(&t);
        let mut toc = [0u8; 16];
        toc[..8].copy_from_slice(&new_sym.to_be_bytes());
        toc[8..].copy_from_slice(&new_pot.to_be_bytes());
        out.put_slice(&toc);
        out.put_u32(crc32c(&toc));
        Ok(out.freeze())
    }

    /// Builds the index-header of `block` from range reads (see [`Self::build_bytes`]), writes
    /// it to `path` atomically (temporary file, fsync, rename) and loads it.
    pub async fn build(
        bucket: &Bucket,
        block: Ulid,
        path: &Path,
        stats: &QueryStats,
    ) -> Result<Self> {
        let b = Self::build_bytes(bucket, block, stats).await?;
        write_atomically(path, &b).await?;
        Self::from_bytes(path, b)
    }

    /// Loads the index-header at `path`, or (when missing or invalid) builds it again.
    /// Returns the header and whether it was built.
    pub async fn load_or_build(
        bucket: &Bucket,
        block: Ulid,
        path: &Path,
        stats: &QueryStats,
    ) -> Result<(Self, bool)> {
        match tokio::fs::read(path).await {
            Ok(b) => match Self::from_bytes(path, Bytes::from(b)) {
                Ok(h) => return Ok((h, false)),
                Err(e) => {
                    tracing::warn!(block = %block, error = %e, "index-header invalid; rebuilding")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(block = %block, error = %e, "index-header unreadable; rebuilding")
            }
        }
        Ok((Self::build(bucket, block, path, stats).await?, true))
    }

    /// The index's format version (2 or 3).
    pub fn index_version(&self) -> u8 {
        self.index_version
    }

    /// Where the index's last postings list ends at the latest.
    pub fn postings_end(&self) -> u64 {
        self.postings_end
    }

    /// The symbol table.
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// The postings offset table.
    pub fn postings(&self) -> &PostingsTable {
        &self.postings
    }

    /// Sorted label names of the block.
    pub fn label_names(&self) -> Vec<String> {
        self.postings.label_names()
    }

    /// Sorted values of `name` in the block.
    pub fn label_values(&self, name: &str) -> Result<Vec<String>> {
        self.postings
            .label_values(name)
            .map_err(|e| bad(&self.path, e.to_string()))
    }

    /// Size of the index-header file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> u64 {
        (self.symbols.memory_bytes() + self.postings.memory_bytes()) as u64
    }
}

async fn write_atomically(path: &Path, b: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let write = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut f, b).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, path).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests_support::write_block;

    #[tokio::test]
    async fn build_load_and_match_the_index() {
        let (tmp, bucket, ulid) = write_block(200, 1).await;
        let stats = QueryStats::default();
        let path = tmp.path().join("hdr").join(INDEX_HEADER_FILENAME);
        let h = IndexHeader::build(&bucket, ulid, &path, &stats)
            .await
            .unwrap();
        assert_eq!(
            stats.snapshot().get_requests,
            3,
            "TOC, symbols, postings offset table"
        );
        let local = strata_tsdb::Block::open(tmp.path().join(ulid.to_string())).unwrap();
        let idx = local.index();
        assert_eq!(h.label_names(), idx.label_names());
        for n in idx.label_names() {
            assert_eq!(h.label_values(&n).unwrap(), idx.label_values(&n).unwrap());
        }
        assert_eq!(h.symbols().len(), idx.num_symbols());
        for i in 0..idx.num_symbols() as u32 {
            assert_eq!(h.symbols().symbol(i).unwrap(), idx.symbol(i).unwrap());
        }
        // Every range starts at the list and covers it.
        let ranges = idx.postings_ranges().unwrap();
        let refs = h.postings().all_refs().unwrap();
        assert_eq!(ranges.len(), refs.len());
        for ((n, v, start, end), r) in ranges.iter().zip(&refs) {
            assert_eq!((n, v, *start), (&r.name, &r.value, r.range.start));
            assert!(
                r.range.end >= *end && r.range.end - *end < 4 + 1,
                "{r:?} vs {end}"
            );
        }
        // Loading from disk gives the same answers.
        let again = IndexHeader::load(&path).unwrap();
        assert_eq!(again.label_names(), h.label_names());
        assert_eq!(again.size(), h.size());
    }

    #[tokio::test]
    async fn corrupt_header_files_are_errors_and_get_rebuilt() {
        let (tmp, bucket, ulid) = write_block(50, 1).await;
        let stats = QueryStats::default();
        let path = tmp.path().join("hdr").join(INDEX_HEADER_FILENAME);
        let good = IndexHeader::build_bytes(&bucket, ulid, &stats)
            .await
            .unwrap();
        for i in (0..good.len()).step_by(3) {
            let mut b = good.to_vec();
            b[i] ^= 0x5a;
            // Either rejected, or (a flip in a padding-free spot cannot go unseen) never a panic.
            let _ = IndexHeader::from_bytes(&path, Bytes::from(b));
        }
        for cut in [0, 5, 13, good.len() / 2, good.len() - 1] {
            assert!(IndexHeader::from_bytes(&path, good.slice(..cut)).is_err());
        }
        let mut b = good.to_vec();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &b).unwrap();
        assert!(IndexHeader::load(&path).is_err());
        let before = stats.snapshot().get_requests;
        let (h, built) = IndexHeader::load_or_build(&bucket, ulid, &path, &stats)
            .await
            .unwrap();
        assert!(built);
        assert!(stats.snapshot().get_requests > before);
        assert_eq!(std::fs::read(&path).unwrap(), good.to_vec());
        assert!(!h.label_names().is_empty());
        let before = stats.snapshot().get_requests;
        let (_, built) = IndexHeader::load_or_build(&bucket, ulid, &path, &stats)
            .await
            .unwrap();
        assert!(!built);
        assert_eq!(stats.snapshot().get_requests, before);
    }
}

#[cfg(test)]
mod thanos_tests {
    use std::process::Command;
    use std::time::Duration;

    use strata_e2e::{Process, Tool, free_port, tool_path, wait_until};

    use super::*;
    use crate::block::tests_support::{copy_dir, promtool_block, upload_dir, write_block_opts};

    /// The real Thanos store gateway builds index-headers for the same blocks: ours must be
    /// byte for byte the same file.
    #[tokio::test]
    async fn index_header_is_byte_identical_to_thanos() {
        let (tmp, _, ours) = write_block_opts(300, 64 * 1024, None).await;
        let prom = promtool_block(tmp.path());
        let bucket_dir = tmp.path().join("bucket");
        let bucket = Bucket::in_memory();
        for u in [ours, prom] {
            copy_dir(
                &tmp.path().join(u.to_string()),
                &bucket_dir.join(u.to_string()),
            );
            upload_dir(&bucket, &tmp.path().join(u.to_string()), u).await;
        }
        let data_dir = tmp.path().join("thanos-data");
        let mut cmd = Command::new(tool_path(Tool::Thanos).expect("thanos installed"));
        cmd.arg("store")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!(
                "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
                bucket_dir.display()
            ))
            .arg(format!("--grpc-address=127.0.0.1:{}", free_port()))
            .arg(format!("--http-address=127.0.0.1:{}", free_port()));
        let mut thanos = Process::spawn("thanos-store", cmd).unwrap();
        let headers: Vec<PathBuf> = [ours, prom]
            .iter()
            .map(|u| data_dir.join(u.to_string()).join(INDEX_HEADER_FILENAME))
            .collect();
        wait_until("thanos index-headers", Duration::from_secs(60), || {
            let ready = headers.iter().all(|p| p.is_file());
            async move { ready.then_some(()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", thanos.log_tail()));
        // Thanos writes to a temporary name and renames: a present file is complete.
        thanos.kill();
        for (u, theirs) in [ours, prom].iter().zip(&headers) {
            let stats = QueryStats::default();
            let mine = IndexHeader::build_bytes(&bucket, *u, &stats).await.unwrap();
            let theirs = std::fs::read(theirs).unwrap();
            assert_eq!(mine.len(), theirs.len(), "block {u}: size");
            assert!(mine[..] == theirs[..], "block {u}: bytes differ");
            // And ours loads Thanos's file.
            let h = IndexHeader::from_bytes(Path::new("thanos"), Bytes::from(theirs)).unwrap();
            assert!(!h.label_names().is_empty());
        }
    }
}
