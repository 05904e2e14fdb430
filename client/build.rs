//! Generates the message types and the client stubs from the service's proto (the workspace's
//! `proto/`), with protox, so a fresh machine needs nothing but cargo. The server crate uses
//! these very message types (it generates only its server side, pointing at them).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let fds = protox::compile(["fintoc/refresh/v1/refresh.proto"], [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
