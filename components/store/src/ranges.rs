//! Merging nearby byte ranges so that many small reads become few GETs.
//!
//! CONTRACT (skeleton).
