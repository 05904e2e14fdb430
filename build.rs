//! Compiles the wire contract with protox (a pure-Rust protobuf compiler), so a fresh machine
//! needs nothing but cargo. The encoded descriptor sets feed gRPC server reflection: ours,
//! and Google's `google/rpc/{error_details,status}.proto` (googleapis' files, Apache-2.0,
//! vendored unchanged under proto/google/rpc as tonic-types ships them; only described,
//! never generated: tonic-types has their Rust types), so reflection clients can decode the
//! ErrorInfo / RetryInfo details our errors carry.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(["fintoc/refresh/v1/refresh.proto"], ["proto"])?;
    // compile_fds() does not write file_descriptor_set_path, so encode it ourselves.
    std::fs::write(
        out.join("refresh_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let details = protox::compile(
        ["google/rpc/error_details.proto", "google/rpc/status.proto"],
        ["proto"],
    )?;
    std::fs::write(
        out.join("error_details_descriptor.bin"),
        prost::Message::encode_to_vec(&details),
    )?;
    // The messages and the client are the client library's (`client/`): one set of wire
    // types for the server, the CLI and every Rust consumer. Only the server side is made here.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .extern_path(".fintoc.refresh.v1", "::fintoc_refresh_client::pb")
        // Small per-call buffers: see src/grpc/codec.rs.
        .codec_path("crate::grpc::codec::LeanCodec")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
