//! The binary index-header (Thanos's format v1): the symbol table and postings offset table of a
//! block's index, copied by range reads, behind a small header and TOC.
//!
//! CONTRACT (skeleton).
