//! Compiles the wire contract with protox (a pure-Rust protobuf compiler), so a fresh machine
//! needs nothing but cargo. The encoded descriptor set feeds gRPC server reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(["fintoc/refresh/v1/refresh.proto"], ["proto"])?;
    // compile_fds() does not write file_descriptor_set_path, so encode it ourselves.
    std::fs::write(
        out.join("refresh_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Small per-call buffers: see src/grpc/codec.rs.
        .codec_path("crate::grpc::codec::LeanCodec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
