//! Compiles the StoreAPI protos with the pure-Rust `protox` compiler (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/thanos/labels.proto",
        "proto/thanos/types.proto",
        "proto/thanos/rpc.proto",
        "proto/thanos/info/rpc.proto",
        "proto/thanos/metadata/rpc.proto",
        "proto/hintspb/hints.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields as `Bytes`: a decoded chunk is a slice of the received message and an
        // encoded one a reference to the chunk read, not copies.
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
