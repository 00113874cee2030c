//! Kiln's model runtime.
//!
//! A model package is a directory with `kiln.toml` ([`Manifest`]) and `model.onnx`. [`Model::load`]
//! parses the ONNX graph at run time, checks that every op is supported (an unsupported op fails
//! the load, naming the op), uploads the weights to the chosen burn device, and returns a model
//! that [`Model::infer`] runs by interpreting the graph with burn tensor ops. Nothing is compiled
//! per model. The same code runs on every burn backend ([`Backend`]).
//!
//! Host-side tensors ([`HostTensor`]) are what crosses the boundary: the worker decodes protocol
//! bytes into them and encodes results back (see [`tensor`]).

mod backend;
mod error;
mod graph;
mod manifest;
mod model;
pub mod onnx;
mod ops;
pub mod tensor;
mod value;

pub use backend::Backend;
pub use error::{ModelError, Result};
pub use manifest::{
    BatchingConfig, MAX_QUEUE_DELAY_US, MAX_QUEUE_SIZE, Manifest, TensorSpec, packages,
};
pub use model::Model;
pub use tensor::{HostData, HostTensor};
