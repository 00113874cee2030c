//! What the worker says about its models: ModelMetadata, ModelConfig and RepositoryIndex
//! entries, all derived from the package manifest so that tritonclient and perf_analyzer see
//! the same signature the model validates against.

use kiln_model::{Backend, Manifest};
use kiln_proto::datatype::Datatype;
use kiln_proto::inference::model_instance_group::Kind;
use kiln_proto::inference::model_metadata_response::TensorMetadata;
use kiln_proto::inference::repository_index_response::ModelIndex;
use kiln_proto::inference::{
    ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelMetadataResponse,
    ModelOutput, ModelQueuePolicy,
};

use crate::store::{LoadedModel, VersionState};
use crate::tensors::protocol_shape;

/// Platform reported by ModelMetadata (the package format).
pub const METADATA_PLATFORM: &str = "onnx";
/// Platform reported by ModelConfig: Triton's name for ONNX models, which clients recognise.
pub const CONFIG_PLATFORM: &str = "onnxruntime_onnx";
/// Backend reported by ModelConfig.
pub const CONFIG_BACKEND: &str = "kiln";

/// ModelMetadata of a loaded version: shapes are `[-1] + dims` when the model batches.
pub fn metadata(m: &LoadedModel) -> ModelMetadataResponse {
    let manifest = &m.manifest;
    let tensor = |s: &kiln_model::TensorSpec| TensorMetadata {
        name: s.name.clone(),
        datatype: s.datatype.clone(),
        shape: protocol_shape(s, manifest.max_batch_size),
    };
    ModelMetadataResponse {
        name: manifest.name.clone(),
        versions: vec![manifest.version.clone()],
        platform: METADATA_PLATFORM.to_string(),
        inputs: manifest.inputs.iter().map(tensor).collect(),
        outputs: manifest.outputs.iter().map(tensor).collect(),
    }
}

fn config_type(datatype: &str) -> i32 {
    Datatype::parse(datatype).map_or(0, |d| d.config_type() as i32)
}

/// ModelConfig of a loaded version: per-item dims (batch excluded), TYPE_* datatypes, dynamic
/// batching knobs from the manifest, and one instance group with the compute threads.
pub fn config(m: &LoadedModel, backend: Backend) -> ModelConfig {
    let manifest: &Manifest = &m.manifest;
    let batching = &manifest.batching;
    let dynamic_batching = (manifest.max_batch_size > 0).then(|| ModelDynamicBatching {
        preferred_batch_size: batching
            .preferred_batch_size
            .iter()
            .map(|b| i32::try_from(*b).unwrap_or(i32::MAX))
            .collect(),
        max_queue_delay_microseconds: batching.max_queue_delay_microseconds,
        default_queue_policy: Some(ModelQueuePolicy {
            max_queue_size: batching.max_queue_size,
            default_timeout_microseconds: batching.default_timeout_microseconds,
            allow_timeout_override: true,
            ..ModelQueuePolicy::default()
        }),
        ..ModelDynamicBatching::default()
    });
    let kind = match backend {
        Backend::Flex | Backend::Ndarray => Kind::Cpu,
        Backend::Wgpu | Backend::WgpuCpu => Kind::Gpu,
    };
    ModelConfig {
        name: manifest.name.clone(),
        platform: CONFIG_PLATFORM.to_string(),
        backend: CONFIG_BACKEND.to_string(),
        max_batch_size: i32::try_from(manifest.max_batch_size).unwrap_or(i32::MAX),
        input: manifest
            .inputs
            .iter()
            .map(|s| ModelInput {
                name: s.name.clone(),
                data_type: config_type(&s.datatype),
                dims: s.dims.clone(),
                ..ModelInput::default()
            })
            .collect(),
        output: manifest
            .outputs
            .iter()
            .map(|s| ModelOutput {
                name: s.name.clone(),
                data_type: config_type(&s.datatype),
                dims: s.dims.clone(),
                ..ModelOutput::default()
            })
            .collect(),
        dynamic_batching,
        instance_group: vec![ModelInstanceGroup {
            name: format!("{}_{}", manifest.name, backend.name()),
            kind: kind as i32,
            count: i32::try_from(m.threads).unwrap_or(i32::MAX),
            ..ModelInstanceGroup::default()
        }],
        default_model_filename: manifest.model_file.clone(),
        ..ModelConfig::default()
    }
}

/// A RepositoryIndex entry, with Triton's state names (READY, LOADING, UNAVAILABLE).
pub fn index_entry(model: String, version: String, state: VersionState) -> ModelIndex {
    let (state, reason) = match state {
        VersionState::Ready => ("READY", String::new()),
        VersionState::Loading => ("LOADING", String::new()),
        VersionState::Failed(reason) => ("UNAVAILABLE", reason),
    };
    ModelIndex {
        name: model,
        version,
        state: state.to_string(),
        reason,
    }
}
