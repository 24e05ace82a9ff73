//! `meta.json`: the block's metadata as Prometheus writes it, plus the `thanos` section as
//! Thanos writes it. Unknown fields survive a read → write round trip.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ulid::Ulid;

use crate::error::{Error, Result};

/// File name of the block metadata.
pub const META_FILENAME: &str = "meta.json";
/// The only `version` this crate reads and writes.
pub const META_VERSION_1: u32 = 1;
/// The zero `time.Time` as Go marshals it; Thanos writes it as `upload_time` until upload.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// The block's `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Block id.
    pub ulid: Ulid,
    /// Smallest timestamp in the block (inclusive), ms.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Largest timestamp in the block (exclusive), ms.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    /// Counts; zero counts are omitted from JSON as Prometheus does.
    #[serde(default)]
    pub stats: BlockStats,
    /// Compaction history.
    #[serde(default)]
    pub compaction: BlockMetaCompaction,
    /// Format version; always 1.
    #[serde(default)]
    pub version: u32,
    /// The Thanos section, absent in blocks Prometheus wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanos: Option<ThanosMeta>,
    /// Fields this crate does not know, kept for round trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stats` of a block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockStats {
    /// All samples (floats and histograms).
    #[serde(rename = "numSamples", default, skip_serializing_if = "is_zero_u64")]
    pub num_samples: u64,
    /// Float samples.
    #[serde(
        rename = "numFloatSamples",
        default,
        skip_serializing_if = "is_zero_u64"
    )]
    pub num_float_samples: u64,
    /// Histogram samples (integer and float).
    #[serde(
        rename = "numHistogramSamples",
        default,
        skip_serializing_if = "is_zero_u64"
    )]
    pub num_histogram_samples: u64,
    /// Series.
    #[serde(rename = "numSeries", default, skip_serializing_if = "is_zero_u64")]
    pub num_series: u64,
    /// Chunks.
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero_u64")]
    pub num_chunks: u64,
    /// Tombstone intervals.
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero_u64")]
    pub num_tombstones: u64,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A parent block reference in `compaction.parents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDesc {
    /// Parent id.
    pub ulid: Ulid,
    /// Parent min time.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Parent max time.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

/// `compaction` of a block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockMetaCompaction {
    /// Compaction level; 1 for blocks cut from the head.
    #[serde(default)]
    pub level: u32,
    /// Level-1 blocks that went into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Ulid>,
    /// Marked for deletion because it became empty.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletable: bool,
    /// Direct parents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    /// Compaction of this block failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    /// Hints such as `from-out-of-order`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `thanos` section, field for field as Thanos `pkg/block/metadata` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThanosMeta {
    /// Section version; omitted when 0 (1 is implied).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub version: u32,
    /// External labels; `null` when unset, as Go writes a nil map.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Downsampling resolution.
    #[serde(default)]
    pub downsample: ThanosDownsample,
    /// Who produced the block (`sidecar`, `compactor`, …).
    #[serde(default)]
    pub source: String,
    /// Deprecated list of segment files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_files: Vec<String>,
    /// Files of the block, sorted by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ThanosFile>,
    /// Rewrites applied (kept as raw JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Value>,
    /// Index statistics; Thanos always writes the object (possibly `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_stats: Option<IndexStats>,
    /// Arbitrary extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
    /// Upload time (RFC 3339); Thanos always writes it, [`GO_ZERO_TIME`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_time: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ThanosMeta {
    /// A section as current Thanos writes a fresh one: version 1, the given labels, source and
    /// resolution, empty `index_stats`, zero `upload_time`.
    pub fn new(labels: BTreeMap<String, String>, source: &str, resolution: i64) -> Self {
        ThanosMeta {
            version: 1,
            labels: Some(labels),
            downsample: ThanosDownsample { resolution },
            source: source.to_string(),
            segment_files: Vec::new(),
            files: Vec::new(),
            rewrites: Vec::new(),
            index_stats: Some(IndexStats::default()),
            extensions: None,
            upload_time: Some(GO_ZERO_TIME.to_string()),
            extra: Map::new(),
        }
    }
}

/// `thanos.downsample`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosDownsample {
    /// Resolution in milliseconds; 0 for raw data.
    #[serde(default)]
    pub resolution: i64,
}

/// An entry of `thanos.files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosFile {
    /// Path relative to the block directory.
    pub rel_path: String,
    /// Size; omitted when 0 (e.g. for meta.json).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
    /// Optional hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<ObjectHash>,
}

/// A file hash in `thanos.files[].hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHash {
    /// Hash function name (`SHA256`).
    #[serde(rename = "hashFunc")]
    pub hash_func: String,
    /// Hex value.
    pub value: String,
}

/// `thanos.index_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    /// Largest series entry in the index, bytes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub series_max_size: i64,
    /// Largest chunk, bytes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub chunk_max_size: i64,
}

impl BlockMeta {
    /// A level-1 meta for a fresh block whose only source is itself.
    pub fn new(ulid: Ulid, min_time: i64, max_time: i64) -> Self {
        BlockMeta {
            ulid,
            min_time,
            max_time,
            stats: BlockStats::default(),
            compaction: BlockMetaCompaction {
                level: 1,
                sources: vec![ulid],
                ..Default::default()
            },
            version: META_VERSION_1,
            thanos: None,
            extra: Map::new(),
        }
    }

    /// Parses `meta.json` bytes; `path` only names the file in errors. Rejects versions ≠ 1.
    pub fn from_slice(data: &[u8], path: &Path) -> Result<Self> {
        let meta: BlockMeta = serde_json::from_slice(data).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.version != META_VERSION_1 {
            return Err(Error::BadVersion {
                file: path.display().to_string(),
                version: meta.version,
            });
        }
        Ok(meta)
    }

    /// Reads `<dir>/meta.json`.
    pub fn read_from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILENAME);
        let data = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_slice(&data, &path)
    }

    /// Serializes as Go's `json.MarshalIndent(meta, "", "\t")` does (HTML-escaped strings, tab
    /// indentation). A meta with a `thanos` section ends with a newline, as Thanos's encoder
    /// writes it; one without does not, as Prometheus writes it.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter::new());
        self.serialize(&mut ser).map_err(|source| Error::Json {
            path: PathBuf::from(META_FILENAME),
            source,
        })?;
        if self.thanos.is_some() {
            out.push(b'\n');
        }
        Ok(out)
    }

    /// Writes `<dir>/meta.json` atomically: a temporary file, fsync, rename, fsync of `dir`.
    pub fn write_to_dir(&self, dir: &Path) -> Result<u64> {
        let data = self.to_json_bytes()?;
        let path = dir.join(META_FILENAME);
        let tmp = dir.join(format!("{META_FILENAME}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            Ok(())
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)?;
        Ok(data.len() as u64)
    }
}

/// The `thanos.files` list as Thanos's shipper gathers it before upload: every file under
/// `chunks/` and `index` with their sizes, and `meta.json` without one, sorted by path (no
/// hashes; tombstones are not uploaded and not listed).
pub fn gather_file_stats(block_dir: &Path) -> Result<Vec<ThanosFile>> {
    let chunks = block_dir.join("chunks");
    let mut out = Vec::new();
    for e in fs::read_dir(&chunks).map_err(|e| Error::io(&chunks, e))? {
        let e = e.map_err(|e| Error::io(&chunks, e))?;
        let md = e.metadata().map_err(|err| Error::io(e.path(), err))?;
        out.push(ThanosFile {
            rel_path: format!("chunks/{}", e.file_name().to_string_lossy()),
            size_bytes: md.len() as i64,
            hash: None,
        });
    }
    let index = block_dir.join("index");
    let md = fs::metadata(&index).map_err(|e| Error::io(&index, e))?;
    out.push(ThanosFile {
        rel_path: "index".into(),
        size_bytes: md.len() as i64,
        hash: None,
    });
    let meta = block_dir.join(META_FILENAME);
    fs::metadata(&meta).map_err(|e| Error::io(&meta, e))?;
    out.push(ThanosFile {
        rel_path: META_FILENAME.into(),
        size_bytes: 0,
        hash: None,
    });
    out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(out)
}

/// Fsyncs a directory so renames inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// A `serde_json` formatter producing Go's `MarshalIndent(v, "", "\t")` bytes: pretty printing
/// with tabs, and `<`, `>`, `&`, U+2028, U+2029 escaped as `\u003c`… like Go's HTML-safe encoder.
pub struct GoFormatter<'a> {
    inner: serde_json::ser::PrettyFormatter<'a>,
}

impl GoFormatter<'_> {
    /// A formatter indenting with one tab.
    pub fn new() -> Self {
        GoFormatter {
            inner: serde_json::ser::PrettyFormatter::with_indent(b"\t"),
        }
    }
}

impl Default for GoFormatter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! delegate {
    ($($name:ident $(, $arg:ident : $ty:ty)*;)*) => {
        $(
            fn $name<W: ?Sized + std::io::Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> std::io::Result<()> {
                self.inner.$name(w $(, $arg)*)
            }
        )*
    };
}

impl serde_json::ser::Formatter for GoFormatter<'_> {
    delegate! {
        begin_array;
        end_array;
        begin_array_value, first: bool;
        end_array_value;
        begin_object;
        end_object;
        begin_object_key, first: bool;
        begin_object_value;
        end_object_value;
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulid_at(ms: u64) -> Ulid {
        Ulid::from_parts(ms, 0)
    }

    /// The exact bytes Thanos's own test expects for a fully populated meta.
    const THANOS_GOLDEN: &str = "{
\t\"ulid\": \"00000000050000000000000000\",
\t\"minTime\": 2424,
\t\"maxTime\": 134,
\t\"stats\": {
\t\t\"numSamples\": 245,
\t\t\"numSeries\": 4,
\t\t\"numChunks\": 14
\t},
\t\"compaction\": {
\t\t\"level\": 123,
\t\t\"sources\": [
\t\t\t\"00000000010000000000000000\",
\t\t\t\"00000000020000000000000000\"
\t\t],
\t\t\"parents\": [
\t\t\t{
\t\t\t\t\"ulid\": \"00000000030000000000000000\",
\t\t\t\t\"minTime\": 442,
\t\t\t\t\"maxTime\": 24225
\t\t\t}
\t\t]
\t},
\t\"version\": 1,
\t\"thanos\": {
\t\t\"version\": 1,
\t\t\"labels\": {
\t\t\t\"ext\": \"lset1\"
\t\t},
\t\t\"downsample\": {
\t\t\t\"resolution\": 123144
\t\t},
\t\t\"source\": \"receive\",
\t\t\"files\": [
\t\t\t{
\t\t\t\t\"rel_path\": \"chunks/000001\",
\t\t\t\t\"size_bytes\": 3751
\t\t\t},
\t\t\t{
\t\t\t\t\"rel_path\": \"index\",
\t\t\t\t\"size_bytes\": 401
\t\t\t},
\t\t\t{
\t\t\t\t\"rel_path\": \"meta.json\"
\t\t\t}
\t\t],
\t\t\"index_stats\": {
\t\t\t\"series_max_size\": 2000,
\t\t\t\"chunk_max_size\": 1000
\t\t},
\t\t\"upload_time\": \"0001-01-01T00:00:00Z\"
\t}
}
";

    #[test]
    fn thanos_golden_bytes() {
        let mut m = BlockMeta::new(ulid_at(5), 2424, 134);
        m.compaction.level = 123;
        m.compaction.sources = vec![ulid_at(1), ulid_at(2)];
        m.compaction.parents = vec![BlockDesc {
            ulid: ulid_at(3),
            min_time: 442,
            max_time: 24225,
        }];
        m.stats.num_chunks = 14;
        m.stats.num_samples = 245;
        m.stats.num_series = 4;
        let mut t = ThanosMeta::new(
            BTreeMap::from([("ext".to_string(), "lset1".to_string())]),
            "receive",
            123144,
        );
        t.files = vec![
            ThanosFile {
                rel_path: "chunks/000001".into(),
                size_bytes: 3751,
                hash: None,
            },
            ThanosFile {
                rel_path: "index".into(),
                size_bytes: 401,
                hash: None,
            },
            ThanosFile {
                rel_path: "meta.json".into(),
                size_bytes: 0,
                hash: None,
            },
        ];
        t.index_stats = Some(IndexStats {
            series_max_size: 2000,
            chunk_max_size: 1000,
        });
        m.thanos = Some(t);
        let got = String::from_utf8(m.to_json_bytes().unwrap()).unwrap();
        assert_eq!(got, THANOS_GOLDEN);
        let back = BlockMeta::from_slice(got.as_bytes(), Path::new("meta.json")).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn prometheus_layout_and_unknown_fields_roundtrip() {
        let src = r#"{
	"ulid": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
	"minTime": 0,
	"maxTime": 7200000,
	"stats": {
		"numSamples": 10,
		"numFloatSamples": 10,
		"numSeries": 1,
		"numChunks": 1,
		"numFutureThing": 3
	},
	"compaction": {
		"level": 1,
		"sources": [
			"01ARZ3NDEKTSV4RRFFQ69G5FAV"
		],
		"hints": [
			"from-out-of-order"
		]
	},
	"version": 1,
	"somethingNew": {
		"a": [
			1,
			2
		]
	}
}"#;
        let m = BlockMeta::from_slice(src.as_bytes(), Path::new("meta.json")).unwrap();
        assert_eq!(m.stats.extra.get("numFutureThing"), Some(&Value::from(3)));
        assert!(m.extra.contains_key("somethingNew"));
        let out = String::from_utf8(m.to_json_bytes().unwrap()).unwrap();
        assert_eq!(out, src);
    }

    #[test]
    fn empty_stats_and_go_escaping() {
        let mut m = BlockMeta::new(ulid_at(1), 0, 1);
        m.thanos = Some(ThanosMeta::new(
            BTreeMap::from([("a".to_string(), "<&>".to_string())]),
            "sidecar",
            0,
        ));
        let out = String::from_utf8(m.to_json_bytes().unwrap()).unwrap();
        assert!(out.contains("\"stats\": {},"), "{out}");
        assert!(out.contains("\"index_stats\": {},"), "{out}");
        assert!(out.contains(r#""a": "\u003c\u0026\u003e""#), "{out}");
        let back = BlockMeta::from_slice(out.as_bytes(), Path::new("m")).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn errors_name_the_file() {
        let e = BlockMeta::from_slice(b"{\"ulid\": 3", Path::new("/x/meta.json")).unwrap_err();
        assert_eq!(e.to_string(), "/x/meta.json");
        let cause = std::error::Error::source(&e).expect("the JSON error as source");
        assert!(cause.to_string().contains("expected a string"), "{cause}");
        let e = BlockMeta::from_slice(
            br#"{"ulid":"01ARZ3NDEKTSV4RRFFQ69G5FAV","minTime":0,"maxTime":1,"version":2}"#,
            Path::new("/y/meta.json"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::BadVersion { version: 2, .. }), "{e}");
    }
}
