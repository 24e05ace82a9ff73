//! The compactor's planner: pure decisions over block metas already synced from a bucket (no
//! I/O). It decides which blocks form a group, what to compact next in a group, which blocks
//! to downsample and which to delete by retention, following the rules of a Thanos compactor
//! so that Strata and Thanos make the same choices on the same bucket.

use std::collections::{BTreeMap, HashSet};

use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

use crate::{COMPACTOR_SOURCE, RES_1H, RES_5M, RES_RAW};

const HOUR_MS: i64 = 60 * 60 * 1000;

/// Thanos's compaction levels in milliseconds: 1h, 2h, 8h, 2d, 14d. The first entry is the
/// base level and is never a compaction target, so blocks are compacted into 2h, 8h, 2d and
/// 14d blocks (Thanos's `--debug.max-compaction-level` default of 4).
pub const DEFAULT_RANGES: [i64; 5] = [
    HOUR_MS,
    2 * HOUR_MS,
    8 * HOUR_MS,
    48 * HOUR_MS,
    336 * HOUR_MS,
];

/// A raw block is downsampled to 5m once it spans at least this long (40h).
pub const DOWNSAMPLE_RANGE_5M: i64 = 40 * HOUR_MS;

/// A 5m block is downsampled to 1h once it spans at least this long (10 days).
pub const DOWNSAMPLE_RANGE_1H: i64 = 10 * 24 * HOUR_MS;

/// Block sources exempt from the consistency delay (blocks a compactor or repair wrote are
/// complete when their meta.json appears).
const DELAY_EXEMPT_SOURCES: [&str; 3] = [COMPACTOR_SOURCE, "compactor.repair", "bucket.repair"];

/// The separator Prometheus puts after each label name and value when hashing labels.
const LABEL_SEP: u8 = 0xff;

/// Options of [`plan`].
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Compaction levels in milliseconds, smallest first; the first is the base level and is
    /// never a target (as in Thanos). Defaults to [`DEFAULT_RANGES`].
    pub ranges: Vec<i64>,
    /// Blocks whose ULID time is younger than this (relative to `now_ms`) are ignored, unless a
    /// compactor or repair wrote them.
    pub consistency_delay_ms: i64,
    /// The current time in Unix milliseconds.
    pub now_ms: i64,
    /// Blocks marked `no-compact`: never compacted, never planned.
    pub no_compact: HashSet<Ulid>,
    /// Blocks marked for deletion: treated as already gone.
    pub deletion_marked: HashSet<Ulid>,
    /// Vertical compaction: overlapping blocks are planned together instead of halting.
    pub vertical: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            ranges: DEFAULT_RANGES.to_vec(),
            consistency_delay_ms: 30 * 60 * 1000,
            now_ms: 0,
            no_compact: HashSet::new(),
            deletion_marked: HashSet::new(),
            vertical: false,
        }
    }
}

/// What to do next in one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to compact.
    Nothing,
    /// Compact these blocks (in min-time order) into one.
    Compact(Vec<Ulid>),
    /// Two blocks overlap and vertical compaction is off: the group must halt.
    Overlap {
        /// The earlier block (by min time).
        a: Ulid,
        /// A later block whose range overlaps `a`'s.
        b: Ulid,
    },
}

/// Prometheus's `labels.Hash()`: xxhash64 (seed 0) over each label's name and value, sorted by
/// name, each followed by a `0xff` byte.
pub fn labels_hash(labels: &BTreeMap<String, String>) -> u64 {
    let len: usize = labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut buf = Vec::with_capacity(len);
    for (name, value) in labels {
        buf.extend_from_slice(name.as_bytes());
        buf.push(LABEL_SEP);
        buf.extend_from_slice(value.as_bytes());
        buf.push(LABEL_SEP);
    }
    xxhash_rust::xxh64::xxh64(&buf, 0)
}

fn resolution(meta: &BlockMeta) -> i64 {
    meta.thanos
        .as_ref()
        .map_or(RES_RAW, |t| t.downsample.resolution)
}

/// A block's compaction group, as Thanos's `DefaultGroupKey` writes it:
/// `<resolution>@<labels hash>` (a block without a `thanos` section has no labels, raw).
pub fn group_key(meta: &BlockMeta) -> String {
    let empty = BTreeMap::new();
    let labels = meta
        .thanos
        .as_ref()
        .and_then(|t| t.labels.as_ref())
        .unwrap_or(&empty);
    format!("{}@{}", resolution(meta), labels_hash(labels))
}

/// Blocks grouped by [`group_key`]: same external labels and resolution. Each group is sorted
/// by min time (then ULID).
pub fn groups(metas: &[BlockMeta]) -> BTreeMap<String, Vec<BlockMeta>> {
    let mut out: BTreeMap<String, Vec<BlockMeta>> = BTreeMap::new();
    for meta in metas {
        out.entry(group_key(meta)).or_default().push(meta.clone());
    }
    for group in out.values_mut() {
        group.sort_by_key(|m| (m.min_time, m.ulid));
    }
    out
}

/// Whether the consistency delay hides this block: its ULID is younger than the delay and it
/// was not written by a compactor or repair.
fn too_young(meta: &BlockMeta, opts: &PlanOptions) -> bool {
    let exempt = meta
        .thanos
        .as_ref()
        .is_some_and(|t| DELAY_EXEMPT_SOURCES.contains(&t.source.as_str()));
    let created = i64::try_from(meta.ulid.timestamp_ms()).unwrap_or(i64::MAX);
    !exempt && opts.now_ms.saturating_sub(created) < opts.consistency_delay_ms
}

/// Plans the next compaction in one group (blocks of one [`group_key`], in any order).
///
/// Deletion-marked blocks and blocks within the consistency delay are dropped first. Without
/// vertical compaction any overlap halts the group ([`Plan::Overlap`]). Otherwise, like
/// Thanos: overlapping blocks (not no-compact marked) are compacted together; else the
/// freshest block is set aside and, for each level after the first, the blocks are split into
/// level-aligned runs and the first run of at least two blocks with no failed compaction that
/// covers the whole level or ends before the freshest block's start is chosen (cut at
/// no-compact blocks); else a big enough block with more than 5% tombstones is rewritten alone.
pub fn plan(group_metas: &[BlockMeta], opts: &PlanOptions) -> Plan {
    let mut metas: Vec<&BlockMeta> = group_metas
        .iter()
        .filter(|m| !opts.deletion_marked.contains(&m.ulid) && !too_young(m, opts))
        .collect();
    metas.sort_by_key(|m| (m.min_time, m.ulid));
    if metas.is_empty() {
        return Plan::Nothing;
    }
    if !opts.vertical
        && let Some((a, b)) = first_overlap(&metas)
    {
        return Plan::Overlap { a, b };
    }

    let mut allowed: Vec<&BlockMeta> = metas
        .iter()
        .copied()
        .filter(|m| !opts.no_compact.contains(&m.ulid))
        .collect();
    let overlapping = select_overlapping(&allowed);
    if !overlapping.is_empty() {
        return Plan::Compact(overlapping.iter().map(|m| m.ulid).collect());
    }

    // Leave the freshest block (the highest min time) alone for now.
    let freshest = metas[metas.len() - 1];
    if !opts.no_compact.contains(&freshest.ulid) {
        allowed.pop();
    }
    metas.pop();
    if let Some(picked) = select_by_ranges(&opts.ranges, &opts.no_compact, &metas) {
        return Plan::Compact(picked.iter().map(|m| m.ulid).collect());
    }

    if let Some(&mid) = opts.ranges.get(opts.ranges.len() / 2) {
        for meta in allowed.iter().rev() {
            if meta.max_time - meta.min_time < mid {
                break;
            }
            let ratio = meta.stats.num_tombstones as f64 / (meta.stats.num_series as f64 + 1.0);
            if ratio > 0.05 {
                return Plan::Compact(vec![meta.ulid]);
            }
        }
    }
    Plan::Nothing
}

/// The first pair of blocks (sorted by min time) whose half-open ranges overlap.
fn first_overlap(sorted: &[&BlockMeta]) -> Option<(Ulid, Ulid)> {
    let mut widest = *sorted.first()?;
    for m in &sorted[1..] {
        if m.min_time < widest.max_time {
            return Some((widest.ulid, m.ulid));
        }
        if m.max_time > widest.max_time {
            widest = m;
        }
    }
    None
}

/// The first run of blocks (sorted by min time) that overlap each other's span so far.
fn select_overlapping<'a>(sorted: &[&'a BlockMeta]) -> Vec<&'a BlockMeta> {
    let mut out: Vec<&BlockMeta> = Vec::new();
    let Some(first) = sorted.first() else {
        return out;
    };
    let mut max_t = first.max_time;
    for pair in sorted.windows(2) {
        let (prev, m) = (pair[0], pair[1]);
        if m.min_time < max_t {
            if out.is_empty() {
                out.push(prev);
            }
            out.push(m);
        } else if !out.is_empty() {
            break;
        }
        max_t = max_t.max(m.max_time);
    }
    out
}

/// Thanos's level rule over non-overlapping blocks sorted by min time.
fn select_by_ranges<'a>(
    ranges: &[i64],
    no_compact: &HashSet<Ulid>,
    sorted: &[&'a BlockMeta],
) -> Option<Vec<&'a BlockMeta>> {
    let high_time = sorted.last()?.min_time;
    for &range in ranges.iter().skip(1) {
        for part in split_by_range(sorted, range) {
            if part.len() < 2 || part.iter().any(|m| m.compaction.failed) {
                continue;
            }
            let (min_t, max_t) = (part[0].min_time, part[part.len() - 1].max_time);
            if max_t - min_t != range && max_t > high_time {
                continue;
            }
            // No-compact blocks cut the run; the first piece of two or more blocks wins.
            for piece in part.split(|m| no_compact.contains(&m.ulid)) {
                if piece.len() > 1 {
                    return Some(piece.to_vec());
                }
            }
        }
    }
    None
}

/// Splits blocks sorted by min time into runs that each fit one `range`-aligned window;
/// blocks that fit no window (misaligned or larger than `range`) are left out.
fn split_by_range<'a>(sorted: &[&'a BlockMeta], range: i64) -> Vec<Vec<&'a BlockMeta>> {
    let mut out = Vec::new();
    if range <= 0 {
        return out;
    }
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i].min_time.div_euclid(range) * range;
        let end = start.saturating_add(range);
        if sorted[i].max_time > end {
            i += 1;
            continue;
        }
        let mut run = Vec::new();
        while i < sorted.len() && sorted[i].max_time <= end {
            run.push(sorted[i]);
            i += 1;
        }
        out.push(run);
    }
    out
}

/// Blocks to downsample next, with the target resolution: raw blocks spanning at least
/// [`DOWNSAMPLE_RANGE_5M`] with a source not yet covered by a 5m block, and 5m blocks spanning
/// at least [`DOWNSAMPLE_RANGE_1H`] with a source not yet covered by a 1h block. Pass the
/// metas left after deletion marks and the consistency delay are applied.
pub fn downsample_candidates(metas: &[BlockMeta]) -> Vec<(Ulid, i64)> {
    downsample_candidates_with(metas, DOWNSAMPLE_RANGE_5M, DOWNSAMPLE_RANGE_1H)
}

/// [`downsample_candidates`] with other minimum spans (milliseconds) for raw → 5m and 5m → 1h;
/// tests lower them to downsample small blocks.
pub fn downsample_candidates_with(
    metas: &[BlockMeta],
    min_span_5m: i64,
    min_span_1h: i64,
) -> Vec<(Ulid, i64)> {
    let mut covered_5m = HashSet::new();
    let mut covered_1h = HashSet::new();
    for meta in metas {
        let set = match resolution(meta) {
            RES_5M => &mut covered_5m,
            RES_1H => &mut covered_1h,
            _ => continue,
        };
        set.extend(meta.compaction.sources.iter().copied());
    }
    let mut out = Vec::new();
    for meta in metas {
        let (covered, min_span, target) = match resolution(meta) {
            RES_RAW => (&covered_5m, min_span_5m, RES_5M),
            RES_5M => (&covered_1h, min_span_1h, RES_1H),
            _ => continue,
        };
        let missing = meta.compaction.sources.iter().any(|s| !covered.contains(s));
        if missing && meta.max_time - meta.min_time >= min_span {
            out.push((meta.ulid, target));
        }
    }
    out
}

/// Blocks whose data is older than the retention of their resolution (milliseconds; 0 keeps
/// forever): `now_ms` is past the block's max time (cut to whole seconds, as Thanos does) plus
/// the retention. Blocks of any other resolution are kept.
pub fn retention(
    metas: &[BlockMeta],
    raw_ms: i64,
    five_m_ms: i64,
    one_h_ms: i64,
    now_ms: i64,
) -> Vec<Ulid> {
    metas
        .iter()
        .filter(|meta| {
            let keep = match resolution(meta) {
                RES_RAW => raw_ms,
                RES_5M => five_m_ms,
                RES_1H => one_h_ms,
                _ => 0,
            };
            let max_secs_ms = (meta.max_time / 1000).saturating_mul(1000);
            keep > 0 && now_ms > max_secs_ms.saturating_add(keep)
        })
        .map(|meta| meta.ulid)
        .collect()
}

#[cfg(test)]
mod tests;
