//! The ruler's local TSDB: head + WAL + 2h blocks, served over the StoreAPI and shipped.
