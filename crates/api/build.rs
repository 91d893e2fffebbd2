//! Generates the tonic client and server from `proto/launchway.proto` (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/launchway.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/launchway.proto"], &["proto"])?;
    Ok(())
}
