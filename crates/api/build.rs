//! Generates the tonic client and server from `proto/launchway.proto` (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/launchway.proto");
    println!("cargo:rerun-if-changed=proto/builder.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps in a stable order: the same answer prints the same JSON.
        .btree_map(".")
        // The HTTP API's JSON is these messages (snake_case fields, absent
        // fields default), so both doors speak the same shapes.
        .type_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]",
        )
        .message_attribute(".", "#[serde(default, deny_unknown_fields)]")
        .compile_protos(&["proto/launchway.proto"], &["proto"])?;
    // The builder door stays out of the HTTP API's JSON.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/builder.proto"], &["proto"])?;
    Ok(())
}
