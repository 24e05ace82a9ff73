//! The block shipper.
