//! Compaction speed and peak memory against Prometheus's own compactor.
//!
//! NOT DONE: skeleton only (helper `compact-bench` fills it in).

fn main() {}
