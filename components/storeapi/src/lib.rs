//! The Thanos-compatible StoreAPI (`thanos.Store`) and Info (`thanos.info.Info`) gRPC services:
//! protos compiled without `protoc`, and domain-neutral server/client helpers.

pub mod pb;
