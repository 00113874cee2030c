//! `kiln.toml`: what a model package declares about itself.

use std::path::Path;

use kiln_proto::datatype::Datatype;
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// The manifest of a model package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name (a key segment: letters, digits, `-_.`).
    pub name: String,
    /// Version, a string as in the protocol.
    pub version: String,
    /// Package format; only `onnx` today.
    #[serde(default = "default_format")]
    pub format: String,
    /// The model file inside the package.
    #[serde(default = "default_model_file")]
    pub model_file: String,
    /// Largest batch the model accepts in one request; 0 = the model has no batch dimension.
    #[serde(default)]
    pub max_batch_size: u32,
    /// Reference data (training sample) for drift, relative to the package.
    #[serde(default)]
    pub reference: Option<String>,
    /// Inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in order.
    pub outputs: Vec<TensorSpec>,
    /// Dynamic batching knobs.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Model instances serving this version, each on its own compute thread, running batches
    /// concurrently (they share the read-only weights); default: the worker's
    /// `--compute-threads`. Reported as the `instance_group` count of `ModelConfig`.
    #[serde(default)]
    pub instance_count: Option<u32>,
}

/// The most instances a manifest may ask for.
pub const MAX_INSTANCE_COUNT: u32 = 64;

/// The longest queue a package or a deployment may configure (`max_queue_size`): a bound on
/// what one model version may hold, not a default.
pub const MAX_QUEUE_SIZE: u32 = 65_536;

/// The longest batching delay a package or a deployment may configure, µs (10 s).
pub const MAX_QUEUE_DELAY_US: u64 = 10_000_000;

/// One input or output of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Tensor name, as in the ONNX graph.
    pub name: String,
    /// v2 datatype string (`FP32`, `INT64`, ...).
    pub datatype: String,
    /// Per-item dims, the batch dimension excluded when `max_batch_size > 0`; -1 = any.
    pub dims: Vec<i64>,
    /// Class labels of an output, by index: Triton's classification answers `value:index:label`
    /// with them (its `label_filename`, inline so the manifest holds everything the worker
    /// reads besides the checksummed model file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// The most labels an output may have.
pub const MAX_LABELS: usize = 100_000;

/// The longest label, bytes.
pub const MAX_LABEL_BYTES: usize = 256;

impl TensorSpec {
    /// The parsed datatype (validated at load).
    pub fn dtype(&self) -> Datatype {
        Datatype::parse(&self.datatype).unwrap_or(Datatype::Fp32)
    }
}

/// Dynamic batching configuration (issue 3 uses all of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Longest a request waits for others to fill a batch.
    #[serde(default)]
    pub max_queue_delay_microseconds: u64,
    /// Batch sizes the batcher prefers to form.
    #[serde(default)]
    pub preferred_batch_size: Vec<u32>,
    /// Requests queued per model version before new ones are refused.
    #[serde(default = "default_queue")]
    pub max_queue_size: u32,
    /// Queue timeout of a request that brings no deadline of its own (no gRPC deadline, no
    /// `timeout` parameter), in microseconds; 0 = none. An expired request is answered
    /// DEADLINE_EXCEEDED and never computed.
    #[serde(default)]
    pub default_timeout_microseconds: u64,
    /// Refuse a request at once (RESOURCE_EXHAUSTED) while every compute instance is running a
    /// batch, rather than queueing it behind them: an admitted request then waits only for the
    /// batch being formed (at most `max_queue_delay_microseconds`), never for one in compute.
    /// Latency over throughput under overload; `max_queue_size` still bounds the queue.
    #[serde(default)]
    pub refuse_when_busy: bool,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_queue_delay_microseconds: 0,
            preferred_batch_size: Vec::new(),
            max_queue_size: default_queue(),
            default_timeout_microseconds: 0,
            refuse_when_busy: false,
        }
    }
}

fn default_format() -> String {
    "onnx".into()
}
fn default_model_file() -> String {
    "model.onnx".into()
}
fn default_queue() -> u32 {
    1024
}

impl Manifest {
    /// Parses and validates a manifest.
    pub fn parse(text: &str) -> Result<Self> {
        let m: Manifest = toml::from_str(text).map_err(|e| ModelError::Manifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Reads `kiln.toml` from a package directory.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("kiln.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Manifest(m));
        if self.format != "onnx" {
            return bad(format!("format {:?} is not supported (onnx)", self.format));
        }
        if self.model_file.contains("..") || self.model_file.starts_with('/') {
            return bad(format!(
                "model_file {:?} must stay inside the package",
                self.model_file
            ));
        }
        if let Some(n) = self.instance_count
            && !(1..=MAX_INSTANCE_COUNT).contains(&n)
        {
            return bad(format!(
                "instance_count {n} must be between 1 and {MAX_INSTANCE_COUNT}"
            ));
        }
        let b = &self.batching;
        if !(1..=MAX_QUEUE_SIZE).contains(&b.max_queue_size) {
            return bad(format!(
                "max_queue_size {} must be between 1 and {MAX_QUEUE_SIZE}",
                b.max_queue_size
            ));
        }
        if b.max_queue_delay_microseconds > MAX_QUEUE_DELAY_US {
            return bad(format!(
                "max_queue_delay_microseconds {} is above {MAX_QUEUE_DELAY_US} (10 s)",
                b.max_queue_delay_microseconds
            ));
        }
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return bad("a model needs at least one input and one output".into());
        }
        for t in self.inputs.iter().chain(&self.outputs) {
            match Datatype::parse(&t.datatype) {
                None => {
                    return bad(format!(
                        "tensor {:?}: unknown datatype {:?}",
                        t.name, t.datatype
                    ));
                }
                // Refused here rather than on every request once the version is READY.
                Some(dt) if !crate::HostData::carries(dt) => {
                    return bad(format!(
                        "tensor {:?}: datatype {} is not supported (supported: {})",
                        t.name,
                        t.datatype,
                        crate::HostData::DATATYPES
                    ));
                }
                Some(_) => {}
            }
            if t.dims.iter().any(|d| *d < -1 || *d == 0) {
                return bad(format!("tensor {:?}: dims must be positive or -1", t.name));
            }
            if t.labels.len() > MAX_LABELS || t.labels.iter().any(|l| l.len() > MAX_LABEL_BYTES) {
                return bad(format!(
                    "tensor {:?}: at most {MAX_LABELS} labels of at most {MAX_LABEL_BYTES} bytes",
                    t.name
                ));
            }
        }
        if let Some(t) = self.inputs.iter().find(|t| !t.labels.is_empty()) {
            return bad(format!("input {:?}: labels are for outputs", t.name));
        }
        Ok(())
    }
}

/// Every package directory `MODEL/VERSION/` holding a `kiln.toml` under a model repository,
/// sorted by path.
pub fn packages(root: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let subdirs = |dir: &Path| -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                entries.push(path);
            }
        }
        entries.sort();
        Ok(entries)
    };
    let mut found = Vec::new();
    for model in subdirs(root)? {
        for version in subdirs(&model)? {
            if version.join("kiln.toml").is_file() {
                found.push(version);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_demo_manifest() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1");
        let m = Manifest::read(&dir).unwrap();
        assert_eq!(m.name, "digits");
        assert_eq!(m.inputs[0].dims, vec![64]);
        assert_eq!(m.outputs.len(), 2);
    }

    #[test]
    fn finds_the_packages_of_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let found = packages(&root).unwrap();
        assert!(found.iter().any(|p| p.ends_with("digits/1")), "{found:?}");
        assert!(found.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn rejects_bad_manifests() {
        let base = "name='m'\nversion='1'\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[2]\n";
        let out = "[[outputs]]\nname='y'\ndatatype='FP32'\ndims=[1]\n";
        assert!(Manifest::parse(&format!("{base}{out}")).is_ok());
        let bad_type = format!("{}{out}", base.replace("FP32", "FLOAT"));
        assert!(Manifest::parse(&bad_type).is_err());
        let labelled = format!("{base}{out}labels = ['cat', 'dog']\n");
        assert_eq!(
            Manifest::parse(&labelled).unwrap().outputs[0].labels,
            ["cat", "dog"]
        );
        let on_input = format!("{base}labels = ['x']\n{out}");
        assert!(
            Manifest::parse(&on_input)
                .unwrap_err()
                .to_string()
                .contains("for outputs")
        );
        let long = format!(
            "{base}{out}labels = ['{}']\n",
            "x".repeat(MAX_LABEL_BYTES + 1)
        );
        assert!(Manifest::parse(&long).is_err());
        let half = format!("{}{out}", base.replace("FP32", "FP16"));
        let err = Manifest::parse(&half).unwrap_err().to_string();
        assert!(err.contains("datatype FP16 is not supported"), "{err}");
        let escape = format!("model_file='../x.onnx'\n{base}{out}");
        assert!(Manifest::parse(&escape).is_err());
        assert!(Manifest::parse(base).is_err());
        let instances = |n: u32| Manifest::parse(&format!("instance_count={n}\n{base}{out}"));
        assert_eq!(instances(4).unwrap().instance_count, Some(4));
        assert!(instances(0).is_err());
        assert!(instances(MAX_INSTANCE_COUNT + 1).is_err());
        let batching = |b: &str| Manifest::parse(&format!("{base}{out}[batching]\n{b}\n"));
        assert!(batching("max_queue_size = 0").is_err(), "no queue at all");
        assert!(batching(&format!("max_queue_size = {}", MAX_QUEUE_SIZE + 1)).is_err());
        assert!(batching(&format!("max_queue_size = {MAX_QUEUE_SIZE}")).is_ok());
        let delay = format!("max_queue_delay_microseconds = {}", MAX_QUEUE_DELAY_US + 1);
        assert!(batching(&delay).unwrap_err().to_string().contains("10 s"));
    }

    #[test]
    fn batching_policy_defaults_to_queueing_and_reads_refuse_when_busy() {
        let base = "name='m'\nversion='1'\n[[inputs]]\nname='x'\ndatatype='FP32'\ndims=[2]\n\
                    [[outputs]]\nname='y'\ndatatype='FP32'\ndims=[1]\n";
        let m = Manifest::parse(base).unwrap();
        assert!(!m.batching.refuse_when_busy);
        assert_eq!(m.batching.max_queue_size, 1024);
        let busy = format!("{base}[batching]\nrefuse_when_busy = true\nmax_queue_size = 8\n");
        let m = Manifest::parse(&busy).unwrap();
        assert!(m.batching.refuse_when_busy);
        assert_eq!(m.batching.max_queue_size, 8);
    }
}
