//! Moving whole blocks between a local directory and the bucket. An upload writes every file
//! first and `meta.json` last, so a reader never sees a block without all its files; a download
//! goes to a temporary directory renamed into place when complete.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_objstore::Bucket;
use strata_tsdb::meta::{BlockMeta, META_FILENAME, gather_file_stats};
use tokio::io::AsyncWriteExt;
use tracing::{Instrument, debug, info_span};
use ulid::Ulid;

use crate::error::{Error, Result};
use crate::marks::{DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME};

/// Bytes fetched per ranged GET while downloading (bounds memory per file).
const DOWNLOAD_PART: u64 = 16 * 1024 * 1024;

/// Suffix of the temporary directory a download goes to before it is renamed into place.
pub const DOWNLOAD_TMP_SUFFIX: &str = ".tmp-download";

fn tsdb_err(path: &Path, e: strata_tsdb::Error) -> Error {
    Error::io(path, std::io::Error::other(e.to_string()))
}

/// Uploads the block in `dir` described by `meta` (whose `thanos` section must be set): chunks
/// and index first, then `meta.json` with the `thanos.files` / `segment_files` lists filled in.
///
/// The local `meta.json` is not modified; tombstones are not uploaded (as Thanos). Errors name
/// the local file (local I/O) or the object `<ulid>/<file>` (bucket).
pub async fn upload_block(bucket: &Bucket, dir: &Path, meta: &BlockMeta) -> Result<()> {
    let id = meta.ulid;
    async {
        let Some(thanos) = meta.thanos.as_ref() else {
            return Err(Error::io(
                dir.join(META_FILENAME),
                std::io::Error::other(format!("block {id}: meta has no thanos section")),
            ));
        };
        let files = gather_file_stats(dir).map_err(|e| tsdb_err(dir, e))?;
        let mut segments = Vec::new();
        // gather_file_stats sorts by path: chunks/* come before index and meta.json.
        for f in &files {
            if f.rel_path == META_FILENAME {
                continue;
            }
            if let Some(seg) = f.rel_path.strip_prefix("chunks/") {
                segments.push(seg.to_string());
            }
            let sent = bucket
                .upload_file(&format!("{id}/{}", f.rel_path), &dir.join(&f.rel_path))
                .await?;
            debug!(block = %id, file = %f.rel_path, bytes = sent, "uploaded");
        }
        let mut out = meta.clone();
        let mut thanos = thanos.clone();
        thanos.segment_files = segments;
        thanos.files = files;
        out.thanos = Some(thanos);
        let meta_path = dir.join(META_FILENAME);
        let data = out.to_json_bytes().map_err(|e| tsdb_err(&meta_path, e))?;
        bucket
            .put(&format!("{id}/{META_FILENAME}"), Bytes::from(data))
            .await?;
        Ok(())
    }
    .instrument(info_span!("upload_block", block = %id))
    .await
}

/// Downloads block `id` into `dir/<id>` (replacing a partial earlier download) and returns its
/// meta.
///
/// Files go to `dir/<id>.tmp-download` first; the directory is renamed to `dir/<id>` only when
/// every file is there, so `dir/<id>` is always a complete block. Files are fetched in ranges of
/// 16 MiB (memory stays bounded for large chunk segments). Marker files are not downloaded.
pub async fn download_block(bucket: &Bucket, id: Ulid, dir: &Path) -> Result<BlockMeta> {
    async {
        let meta_name = format!("{id}/{META_FILENAME}");
        let meta_bytes = bucket.get(&meta_name).await?;
        let meta = BlockMeta::from_slice(&meta_bytes, Path::new(&meta_name))
            .map_err(|e| tsdb_err(Path::new(&meta_name), e))?;
        if meta.ulid != id {
            return Err(Error::io(
                PathBuf::from(&meta_name),
                std::io::Error::other(format!("meta.json describes block {}", meta.ulid)),
            ));
        }

        let final_dir = dir.join(id.to_string());
        let tmp = dir.join(format!("{id}{DOWNLOAD_TMP_SUFFIX}"));
        remove_dir_if_exists(&tmp).await?;
        remove_dir_if_exists(&final_dir).await?;
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| Error::io(&tmp, e))?;

        let prefix = format!("{id}/");
        for name in bucket.list_recursive(&prefix).await? {
            let Some(rel) = name.strip_prefix(&prefix) else {
                continue;
            };
            if rel == META_FILENAME
                || rel == DELETION_MARK_FILENAME
                || rel == NO_COMPACT_MARK_FILENAME
            {
                continue;
            }
            if rel
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(Error::io(
                    PathBuf::from(&name),
                    std::io::Error::other("object name not usable as a local path"),
                ));
            }
            download_file(bucket, &name, &tmp.join(rel)).await?;
        }
        let meta_path = tmp.join(META_FILENAME);
        tokio::fs::write(&meta_path, &meta_bytes)
            .await
            .map_err(|e| Error::io(&meta_path, e))?;
        tokio::fs::rename(&tmp, &final_dir)
            .await
            .map_err(|e| Error::io(&final_dir, e))?;
        Ok(meta)
    }
    .instrument(info_span!("download_block", block = %id))
    .await
}

async fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Copies object `name` into the local file `path`, range by range.
async fn download_file(bucket: &Bucket, name: &str, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io(parent, e))?;
    }
    let size = bucket.attributes(name).await?.size;
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    let mut off = 0u64;
    while off < size {
        let end = size.min(off + DOWNLOAD_PART);
        let data = bucket.get_range(name, off..end).await?;
        if data.is_empty() {
            return Err(Error::io(
                path,
                std::io::Error::other(format!("{name}: object shorter than its size {size}")),
            ));
        }
        f.write_all(&data).await.map_err(|e| Error::io(path, e))?;
        off += data.len() as u64;
    }
    f.sync_all().await.map_err(|e| Error::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_tsdb::meta::ThanosMeta;
    use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};

    use super::*;

    /// A small block with a thanos section, written under `parent`.
    fn write_block(parent: &Path, with_thanos: bool) -> (PathBuf, BlockMeta) {
        let labels: BTreeMap<String, String> = [("cluster".to_string(), "a".to_string())].into();
        let mut w = BlockWriter::new(
            parent,
            BlockWriterOptions {
                thanos: with_thanos.then(|| ThanosMeta::new(labels, "sidecar", 0)),
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..3 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]).unwrap();
            let s: Vec<(i64, f64)> = (0..500).map(|t| (t * 15_000, (t + i) as f64)).collect();
            w.add_series(&l, &s).unwrap();
        }
        let id = w.finish().unwrap();
        let dir = parent.join(id.to_string());
        let meta = BlockMeta::read_from_dir(&dir).unwrap();
        (dir, meta)
    }

    #[tokio::test]
    async fn upload_then_download_round_trips_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, meta) = write_block(tmp.path(), true);
        let bucket = Bucket::in_memory();
        upload_block(&bucket, &dir, &meta).await.unwrap();

        // The uploaded meta lists the files and segments; the local meta is untouched.
        let up = BlockMeta::from_slice(
            &bucket
                .get(&format!("{}/meta.json", meta.ulid))
                .await
                .unwrap(),
            Path::new("meta.json"),
        )
        .unwrap();
        let th = up.thanos.as_ref().unwrap();
        assert_eq!(th.segment_files, vec!["000001".to_string()]);
        let paths: Vec<&str> = th.files.iter().map(|f| f.rel_path.as_str()).collect();
        assert_eq!(paths, ["chunks/000001", "index", "meta.json"]);
        assert!(
            BlockMeta::read_from_dir(&dir)
                .unwrap()
                .thanos
                .unwrap()
                .files
                .is_empty()
        );

        // A leftover partial download is replaced.
        let dl = tmp.path().join("dl");
        std::fs::create_dir_all(dl.join(format!("{}{DOWNLOAD_TMP_SUFFIX}", meta.ulid))).unwrap();
        let got = download_block(&bucket, meta.ulid, &dl).await.unwrap();
        assert_eq!(got.ulid, meta.ulid);
        let out = dl.join(meta.ulid.to_string());
        for f in ["index", "chunks/000001"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(dir.join(f)).unwrap(),
                "{f}"
            );
        }
        assert!(
            !dl.join(format!("{}{DOWNLOAD_TMP_SUFFIX}", meta.ulid))
                .exists()
        );
        strata_tsdb::Block::open(&out).unwrap();
    }

    #[tokio::test]
    async fn meta_json_goes_last_and_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, meta) = write_block(tmp.path(), true);
        // Unreadable chunks: the upload fails naming the file, and no meta.json appears.
        std::fs::remove_file(dir.join("index")).unwrap();
        let bucket = Bucket::in_memory();
        let err = upload_block(&bucket, &dir, &meta).await.unwrap_err();
        assert!(err.to_string().contains("index"), "{err}");
        assert!(
            !bucket
                .exists(&format!("{}/meta.json", meta.ulid))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn upload_without_thanos_section_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, meta) = write_block(tmp.path(), false);
        let bucket = Bucket::in_memory();
        let err = upload_block(&bucket, &dir, &meta).await.unwrap_err();
        assert!(err.to_string().contains("thanos section"), "{err}");
        assert!(bucket.list_recursive("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn download_of_missing_block_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let bucket = Bucket::in_memory();
        let id = Ulid::new();
        let err = download_block(&bucket, id, tmp.path()).await.unwrap_err();
        assert!(err.to_string().contains(&id.to_string()), "{err}");
        assert!(!tmp.path().join(id.to_string()).exists());
    }
}
