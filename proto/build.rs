//! Compiles `proto/fsql.proto` and `proto/flight_session.proto` with prost. The `protoc` binary comes from the
//! `protoc-bin-vendored` crate (unless `PROTOC` is set), so a fresh machine
//! needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fsql.proto");
    println!("cargo:rerun-if-changed=proto/flight_session.proto");
    let mut config = prost_build::Config::new();
    match std::env::var_os("PROTOC") {
        Some(protoc) => config.protoc_executable(protoc),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    config.bytes(["."]).compile_protos(
        &["proto/fsql.proto", "proto/flight_session.proto"],
        &["proto"],
    )?;
    Ok(())
}
