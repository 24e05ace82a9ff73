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

/// Writes a block with the real `promtool tsdb create-blocks-from openmetrics` (gauges and a
/// counter over 1 h inside one 2 h range, 40 series, several chunks each) into `dir`; returns its ULID.
pub(crate) fn promtool_block(dir: &Path) -> Ulid {
    let mut om = String::from("# HELP temp a gauge\n# TYPE temp gauge\n");
    for i in 0..30 {
        for t in (0..3_600).step_by(10) {
            om.push_str(&format!(
                "temp{{room=\"r{i:02}\",floor=\"{}\"}} {} {}\n",
                i % 4,
                (i * 7 + t) as f64 / 10.0,
                1_700_000_000 + t
            ));
        }
    }
    om.push_str("# HELP hits a counter\n# TYPE hits counter\n");
    for i in 0..10 {
        for t in (0..3_600).step_by(5) {
            om.push_str(&format!(
                "hits_total{{path=\"/p{i}\"}} {} {}\n",
                t * i,
                1_700_000_000 + t
            ));
        }
    }
    om.push_str("# EOF\n");
    let input = dir.join("input.om");
    std::fs::write(&input, om).unwrap();
    let out = dir.join("blocks");
    let o = strata_e2e::promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .expect("promtool (install with e2e/tools/install.sh)");
    assert!(
        o.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut ulids: Vec<Ulid> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(ulids.len(), 1, "one block");
    let ulid = ulids.pop().unwrap();
    copy_dir(&out.join(ulid.to_string()), &dir.join(ulid.to_string()));
    ulid
}

/// Copies a directory tree.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}
