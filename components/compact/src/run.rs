//! The compactor over a bucket: one pass syncs the metas, then per group plans, downloads,
//! compacts, uploads (meta.json last) and marks the sources for deletion; then downsamples,
//! applies retention and cleans up.
//!
//! NOT DONE: skeleton only (helper `compact-run` fills it in).
