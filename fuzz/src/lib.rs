//! Shared fixtures of Kiln's fuzz targets: the model versions a fuzzed `ModelInferRequest` is
//! served by, and the worker's request path from decoding to the encoded response, with the
//! invariants every accepted request must satisfy (a failed invariant panics: a fuzz crash).
//!
//! Model versions (picked by the request's `model_name`, digits when it names none of them):
//! - `digits`, `logreg`, `digits_cnn`: the demo packages under `models/`, loaded on the flex
//!   backend as the worker loads them, so an accepted request also runs through the model,
//!   the batcher's concat/split and the response encoding;
//! - `typed` and `unbatched`: manifests only (no graph), with one input of every datatype the
//!   worker decodes, `-1` dims and `max_batch_size = 0`, for the decoding paths the demo models
//!   (all FP32 inputs) never take. (A manifest with a datatype the worker cannot carry, such as
//!   FP16, is refused at load, so no request path reaches one.)

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Instant;

use kiln_model::{Backend, Manifest, Model};
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::{ModelInferRequest, ModelInferResponse};
use kiln_worker::tensors::{self, DecodedRequest};
use kiln_worker::{batch, infer};
use prost::Message;

/// One model version requests can be sent to.
pub struct Target {
    /// The manifest the worker decodes against.
    pub manifest: Manifest,
    /// The loaded model (`None`: decoding only).
    pub model: Option<Model>,
}

/// The repository's `models/` directory.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

const TYPED: &str = r#"
name = "typed"
version = "1"
max_batch_size = 8
[batching]
default_timeout_microseconds = 1000
[[inputs]]
name = "f32"
datatype = "FP32"
dims = [-1, 3]
[[inputs]]
name = "f64"
datatype = "FP64"
dims = [2]
[[inputs]]
name = "i32"
datatype = "INT32"
dims = []
[[inputs]]
name = "i64"
datatype = "INT64"
dims = [2, -1]
[[inputs]]
name = "u8"
datatype = "UINT8"
dims = [4]
[[inputs]]
name = "bool"
datatype = "BOOL"
dims = [1]
[[inputs]]
name = "bytes"
datatype = "BYTES"
dims = [-1]
[[outputs]]
name = "y"
datatype = "FP32"
dims = [1]
[[outputs]]
name = "z"
datatype = "BYTES"
dims = []
"#;

const UNBATCHED: &str = r#"
name = "unbatched"
version = "3"
max_batch_size = 0
[[inputs]]
name = "ids"
datatype = "INT64"
dims = [-1, 2]
[[inputs]]
name = "text"
datatype = "BYTES"
dims = []
[[outputs]]
name = "out"
datatype = "INT64"
dims = [-1]
"#;

/// Every target, `digits` first (the default).
pub static TARGETS: LazyLock<Vec<Target>> = LazyLock::new(|| {
    let mut targets: Vec<Target> = ["digits", "logreg", "digits_cnn"]
        .iter()
        .map(|name| {
            let dir = models_dir().join(name).join("1");
            let model = Model::load(&dir, Backend::Flex)
                .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
            Target {
                manifest: model.manifest().clone(),
                model: Some(model),
            }
        })
        .collect();
    for text in [TYPED, UNBATCHED] {
        targets.push(Target {
            manifest: Manifest::parse(text).expect("fuzz manifest"),
            model: None,
        });
    }
    targets
});

/// The target a request names (digits when it names none).
pub fn target_of(model_name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.manifest.name == model_name)
        .unwrap_or(&TARGETS[0])
}

/// Runs `req` through what the gateway and the worker do with a request before and after the
/// model: the gateway's version ordering, the worker's request parameters, decoding and
/// validation, and for an accepted request the model, the batcher and the response encoding.
pub fn serve(mut req: ModelInferRequest) {
    let target = target_of(&req.model_name);
    let m = &target.manifest;

    // Gateway: versions are ordered with compare_versions when it picks one.
    let _ = kiln_gateway::routing::compare_versions(&req.model_version, &m.version);
    // Worker: request parameters, read before decoding.
    let _ = infer::priority_of(&req);
    let timeout = infer::timeout_of(&req);
    let _ = infer::queue_deadline(
        None,
        timeout,
        m.batching.default_timeout_microseconds,
        Instant::now(),
    );

    match tensors::decode_request(m, &mut req) {
        Err(e) => {
            let _ = e.to_string();
            let _ = tonic::Status::from(e);
        }
        Ok(decoded) => accepted(target, decoded),
    }
}

/// The invariants of an accepted request, then the rest of its way through the worker.
fn accepted(target: &Target, decoded: DecodedRequest) {
    let m = &target.manifest;
    let batching = m.max_batch_size > 0;
    assert_eq!(decoded.inputs.len(), m.inputs.len(), "one tensor per input");
    if batching {
        assert!(
            (1..=u64::from(m.max_batch_size)).contains(&decoded.batch),
            "batch {} outside 1..={}",
            decoded.batch,
            m.max_batch_size
        );
    } else {
        assert_eq!(decoded.batch, 1);
    }
    for ((name, t), spec) in decoded.inputs.iter().zip(&m.inputs) {
        assert_eq!(*name, spec.name, "inputs in manifest order");
        assert_eq!(t.datatype(), spec.dtype(), "input {name}: datatype");
        assert_eq!(
            t.len(),
            t.shape.iter().product::<usize>(),
            "input {name}: element count of shape {:?}",
            t.shape
        );
        let dims = if batching {
            assert_eq!(t.shape.first().map(|b| *b as u64), Some(decoded.batch));
            &t.shape[1..]
        } else {
            &t.shape[..]
        };
        assert_eq!(dims.len(), spec.dims.len(), "input {name}: rank");
        for (d, s) in dims.iter().zip(&spec.dims) {
            assert!(*s == -1 || *d as i64 == *s, "input {name}: dims {dims:?}");
        }
    }
    let mut seen = vec![false; m.outputs.len()];
    for o in &decoded.outputs {
        let i = o.index;
        assert!(!std::mem::replace(&mut seen[i], true), "output {i} twice");
    }
    assert_eq!(
        batch::rows_of(&decoded.inputs, batching) as u64,
        decoded.batch
    );

    let Some(model) = &target.model else {
        return;
    };
    // What the worker accepted, the runtime must accept too.
    if let Err(e) = model.check_inputs(&decoded.inputs) {
        panic!("decode_request accepted what Model::check_inputs rejects: {e}");
    }
    if let Ok(outputs) = model.infer(decoded.inputs.clone()) {
        respond(m, &decoded, outputs);
    }
    // Two copies of the request merged into one batch, as the dynamic batcher does.
    let rows = decoded.batch as usize;
    if batching && 2 * rows <= m.max_batch_size as usize {
        let merged = batch::concat(&[&decoded.inputs, &decoded.inputs])
            .expect("requests with one signature concatenate");
        if let Ok(outputs) = model.infer(merged) {
            for part in batch::split(outputs, &[rows, rows]) {
                respond(m, &decoded, part);
            }
        }
    }
}

/// Encodes the model's outputs as the worker answers.
fn respond(m: &Manifest, decoded: &DecodedRequest, outputs: kiln_worker::executor::Tensors) {
    let mut resp = ModelInferResponse::default();
    tensors::encode_response(&mut resp, m, &decoded.outputs, decoded.raw, outputs)
        .expect("the model produces every declared output");
    assert_eq!(resp.outputs.len(), decoded.outputs.len());
    if decoded.raw {
        assert_eq!(resp.raw_output_contents.len(), resp.outputs.len());
    }
    let _ = resp.encoded_len();
}

/// The protocol datatype names, and a few that are not.
pub const DATATYPES: [&str; 17] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BF16", "BYTES", "", "fp32", "FLOAT",
];

/// Element size of a datatype name in raw contents (4 for unknown names).
pub fn raw_size(datatype: &str) -> usize {
    Datatype::parse(datatype)
        .and_then(|d| d.size())
        .unwrap_or(4)
}
