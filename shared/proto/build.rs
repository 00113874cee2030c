//! Generates Rust for every file under `proto/` into OUT_DIR, plus one descriptor set for gRPC
//! reflection. Needs `protoc` (apt `protobuf-compiler`; `PROTOC` overrides the path).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "inference/model_config.proto",
    "inference/grpc_service.proto",
    "kiln/v1/cluster.proto",
    "kiln/v1/admin.proto",
    "kiln/v1/telemetry.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not `env!`: a build script compiled in one checkout is reused by cargo
    // for another that shares the target directory, and must not read the first one's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .file_descriptor_set_path(out.join("kiln_descriptor.bin"))
        // Service traits get default methods answering UNIMPLEMENTED, so that test fakes
        // implement only what they fake. The gateway and the worker implement every RPC.
        .generate_default_stubs(true)
        // Tensor payloads are forwarded without copying (DESIGN.md §3).
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .bytes(".inference.InferTensorContents.bytes_contents")
        // Cluster records are stored in etcd as JSON.
        .message_attribute(
            ".kiln.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .enum_attribute(
            ".kiln.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        // Replica states read as words ("READY") in etcd and in `--output json`.
        .field_attribute(
            ".kiln.v1.ReplicaRecord.state",
            "#[serde(with = \"crate::replica_state_serde\")]",
        )
        .compile_protos(&files, &[root])?;
    Ok(())
}
