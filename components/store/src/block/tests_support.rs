//! Test blocks: written with `strata_tsdb::BlockWriter`, uploaded to an in-memory bucket.

use std::path::Path;

use bytes::Bytes;
use strata_objstore::Bucket;
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};
use tempfile::TempDir;
use ulid::Ulid;

/// Labels of test series `i`: several shapes (some series lack `zone`, one metric has `le`).
pub(crate) fn series_labels(i: usize) -> Labels {
    let name = ["up", "requests_total", "latency_bucket"][i % 3];
    let mut pairs = vec![
        ("__name__".to_string(), name.to_string()),
        ("instance".to_string(), format!("host-{:04}", i / 3)),
        (
            "job".to_string(),
            ["api", "db", "web", "cache"][i % 4].to_string(),
        ),
    ];
    if !i.is_multiple_of(5) {
        pairs.push(("zone".to_string(), format!("z{}", i % 7)));
    }
    if name == "latency_bucket" {
        pairs.push(("le".to_string(), ["0.1", "1", "+Inf"][i % 3].to_string()));
    }
    Labels::new(pairs).expect("valid labels")
}

/// Uploads every file of `dir` under `<ulid>/…`.
pub(crate) async fn upload_dir(bucket: &Bucket, dir: &Path, ulid: Ulid) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let data = std::fs::read(&p).unwrap();
                bucket
                    .put(&format!("{ulid}/{rel}"), Bytes::from(data))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Writes a block of `n_series` series (4 chunks each, 30 s apart over 4 h) into a temp dir with
/// small chunk segments (`segment_size`), uploads it to an in-memory bucket.
pub(crate) async fn write_block_opts(
    n_series: usize,
    segment_size: u64,
    thanos: Option<ThanosMeta>,
) -> (TempDir, Bucket, Ulid) {
    let tmp = tempfile::tempdir().unwrap();
    let mut series: Vec<(Labels, Vec<(i64, f64)>)> = (0..n_series)
        .map(|i| {
            let samples = (0..480)
                .map(|j| {
                    (
                        j * 30_000 + (i as i64 % 7),
                        (i * 1000 + j as usize) as f64 * 0.5,
                    )
                })
                .collect();
            (series_labels(i), samples)
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let opts = BlockWriterOptions {
        segment_size,
        thanos,
        ..Default::default()
    };
    let mut w = BlockWriter::new(tmp.path(), opts).unwrap();
    for (l, s) in &series {
        w.add_series(l, s).unwrap();
    }
    let ulid = w.finish().unwrap();
    let bucket = Bucket::in_memory();
    upload_dir(&bucket, &tmp.path().join(ulid.to_string()), ulid).await;
    (tmp, bucket, ulid)
}

/// [`write_block_opts`] with 64 KiB segments and no Thanos section.
pub(crate) async fn write_block(n_series: usize, _variant: u32) -> (TempDir, Bucket, Ulid) {
    write_block_opts(n_series, 64 * 1024, None).await
}
