//! Generated protobuf and gRPC code for the Thanos StoreAPI and Metadata API (`thanos`), its hints (`hintspb`) and the
//! Info API (`thanos.info`).
#![allow(missing_docs, clippy::all)]

/// Proto package `thanos`: the Store service and its messages.
pub mod thanos {
    include!(concat!(env!("OUT_DIR"), "/thanos.rs"));

    /// Proto package `thanos.info`: the Info service.
    pub mod info {
        include!(concat!(env!("OUT_DIR"), "/thanos.info.rs"));
    }
}

/// Proto package `hintspb`: hints carried in `google.protobuf.Any` fields.
pub mod hintspb {
    include!(concat!(env!("OUT_DIR"), "/hintspb.rs"));
}

pub use self::hintspb as hints;
pub use self::thanos::info;
