//! Generates the ONNX protobuf types (proto/onnx.proto, the subset of ONNX's IR we read).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    prost_build::Config::new().compile_protos(&["proto/onnx.proto"], &["proto"])?;
    Ok(())
}
