//! ONNX protobuf types (generated from `proto/onnx.proto`) and helpers to read them.

#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
