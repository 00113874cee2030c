//! A loaded model: manifest + interpreted graph on one burn device.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::tensor::Device;
use kiln_proto::datatype::Datatype;

use crate::graph::Graph;
use crate::tensor::{HostData, HostTensor};
use crate::value::{Float, Int, Value};
use crate::{Backend, Manifest, ModelError, Result, TensorSpec};

/// A model ready to run. `Send + Sync`: several compute threads may run it at once.
#[derive(Debug)]
pub struct Model {
    manifest: Manifest,
    graph: Graph,
    device: Device,
    backend: Backend,
    /// Graph input index for each manifest input.
    input_order: Vec<usize>,
    /// Graph output index for each manifest output.
    output_order: Vec<usize>,
}

impl Model {
    /// Loads a package directory (`kiln.toml` + the model file). Slow and blocking: run it off
    /// the async runtime.
    pub fn load(dir: &Path, backend: Backend) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let path = dir.join(&manifest.model_file);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_parts(manifest, &bytes, backend)
    }

    /// Builds a model from a manifest and ONNX bytes.
    pub fn from_parts(manifest: Manifest, onnx: &[u8], backend: Backend) -> Result<Self> {
        let device = backend.device()?;
        let graph = catch_unwind(AssertUnwindSafe(|| Graph::load(onnx, &device)))
            .map_err(|p| ModelError::Onnx(format!("loader panicked: {}", panic_text(&p))))??;
        let find = |names: &[(String, usize)], spec: &TensorSpec, what: &str| {
            names
                .iter()
                .position(|(n, _)| *n == spec.name)
                .ok_or_else(|| {
                    ModelError::Manifest(format!(
                        "{what} {:?} is not a graph {what} (graph has {:?})",
                        spec.name,
                        names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                    ))
                })
        };
        let input_order = manifest
            .inputs
            .iter()
            .map(|s| find(&graph.inputs, s, "input"))
            .collect::<Result<Vec<_>>>()?;
        if input_order.len() != graph.inputs.len() {
            return Err(ModelError::Manifest(
                "the manifest must declare every graph input".into(),
            ));
        }
        let output_order = manifest
            .outputs
            .iter()
            .map(|s| find(&graph.outputs, s, "output"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            manifest,
            graph,
            device,
            backend,
            input_order,
            output_order,
        })
    }

    /// The package manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes of the weights and constants the loaded graph holds (the memory a replica costs
    /// beyond the runtime, before activations).
    pub fn memory_bytes(&self) -> u64 {
        self.graph
            .constants
            .iter()
            .flatten()
            .map(|v| v.bytes() as u64)
            .sum()
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks inputs against the manifest: every input present once, no extras, datatype and
    /// shape as declared (batch dimension within `max_batch_size`). Returns the batch size
    /// (1 for models without a batch dimension).
    pub fn check_inputs(&self, inputs: &[(String, HostTensor)]) -> Result<usize> {
        let invalid = |name: &str, reason: String| ModelError::InvalidInput {
            name: name.to_string(),
            reason,
        };
        if let Some((name, _)) = inputs
            .iter()
            .find(|(n, _)| !self.manifest.inputs.iter().any(|s| s.name == *n))
        {
            return Err(invalid(name, "is not an input of the model".into()));
        }
        let mut batch = None;
        for spec in &self.manifest.inputs {
            let mut found = inputs.iter().filter(|(n, _)| *n == spec.name);
            let (_, t) = found
                .next()
                .ok_or_else(|| invalid(&spec.name, "is missing".into()))?;
            if found.next().is_some() {
                return Err(invalid(&spec.name, "is given more than once".into()));
            }
            if t.datatype() != spec.dtype() {
                return Err(invalid(
                    &spec.name,
                    format!(
                        "datatype {} does not match the model's {}",
                        t.datatype(),
                        spec.datatype
                    ),
                ));
            }
            let dims: &[usize] = if self.manifest.max_batch_size > 0 {
                let b = *t
                    .shape
                    .first()
                    .ok_or_else(|| invalid(&spec.name, "needs a batch dimension".into()))?;
                if b == 0 || b > self.manifest.max_batch_size as usize {
                    return Err(invalid(
                        &spec.name,
                        format!(
                            "batch size {b} outside 1..={}",
                            self.manifest.max_batch_size
                        ),
                    ));
                }
                if batch.is_some_and(|x| x != b) {
                    return Err(invalid(
                        &spec.name,
                        "batch size differs from other inputs".into(),
                    ));
                }
                batch = Some(b);
                &t.shape[1..]
            } else {
                &t.shape
            };
            let fits = dims.len() == spec.dims.len()
                && dims
                    .iter()
                    .zip(&spec.dims)
                    .all(|(d, s)| *s == -1 || *d as i64 == *s);
            if !fits {
                return Err(invalid(
                    &spec.name,
                    format!(
                        "shape {:?} does not match the model's {}",
                        t.shape,
                        shape_text(&self.manifest, spec)
                    ),
                ));
            }
            if t.len() != t.shape.iter().product::<usize>() {
                return Err(invalid(
                    &spec.name,
                    "element count does not match its shape".into(),
                ));
            }
        }
        Ok(batch.unwrap_or(1))
    }

    /// Runs one inference. Inputs by name (any order); outputs in manifest order. Blocking.
    pub fn infer(&self, inputs: Vec<(String, HostTensor)>) -> Result<Vec<(String, HostTensor)>> {
        self.check_inputs(&inputs)?;
        let mut values: Vec<Option<Value>> = vec![None; self.graph.inputs.len()];
        for (name, t) in inputs {
            let pos = self
                .manifest
                .inputs
                .iter()
                .position(|s| s.name == name)
                .expect("checked");
            values[self.input_order[pos]] = Some(self.to_value(&name, t)?);
        }
        let values = values
            .into_iter()
            .map(|v| v.expect("every input checked"))
            .collect();
        let outputs = catch_unwind(AssertUnwindSafe(|| self.graph.run(values, &self.device)))
            .map_err(|p| ModelError::Runtime {
                node: String::new(),
                op: String::new(),
                reason: format!("backend panicked: {}", panic_text(&p)),
            })??;
        let mut outputs: Vec<Option<Value>> = outputs.into_iter().map(Some).collect();
        self.manifest
            .outputs
            .iter()
            .zip(&self.output_order)
            .map(|(spec, &i)| {
                let v = outputs[i].take().expect("each output taken once");
                Ok((spec.name.clone(), to_host(spec, v)?))
            })
            .collect()
    }

    fn to_value(&self, name: &str, t: HostTensor) -> Result<Value> {
        let shape = t.shape;
        let value = match t.data {
            HostData::F32(v) => {
                Value::Float(Float::from_host(v, shape, &self.device).map_err(|r| {
                    ModelError::InvalidInput {
                        name: name.into(),
                        reason: r,
                    }
                })?)
            }
            HostData::I64(v) => Value::Int(Int { shape, data: v }),
            HostData::Bool(v) => Value::Bool(crate::value::Bool { shape, data: v }),
            HostData::Bytes(v) => Value::Str(crate::value::Str { shape, data: v }),
            HostData::I32(v) => Value::Int(Int {
                shape,
                data: v.into_iter().map(i64::from).collect(),
            }),
            other => {
                return Err(ModelError::InvalidInput {
                    name: name.into(),
                    reason: format!(
                        "datatype {} is not supported by the runtime",
                        HostTensor { shape, data: other }.datatype()
                    ),
                });
            }
        };
        Ok(value)
    }
}

fn to_host(spec: &TensorSpec, v: Value) -> Result<HostTensor> {
    let wrong = |got: &str| ModelError::Runtime {
        node: spec.name.clone(),
        op: "output".into(),
        reason: format!(
            "graph produced {got} but the manifest declares {}",
            spec.datatype
        ),
    };
    Ok(match (v, spec.dtype()) {
        (Value::Float(f), Datatype::Fp32) => HostTensor {
            data: HostData::F32(f.to_host().map_err(|r| wrong(&r))?),
            shape: f.shape,
        },
        (Value::Int(i), Datatype::Int64) => HostTensor {
            shape: i.shape,
            data: HostData::I64(i.data),
        },
        (Value::Int(i), Datatype::Int32) => HostTensor {
            shape: i.shape,
            data: HostData::I32(i.data.into_iter().map(|x| x as i32).collect()),
        },
        (Value::Bool(b), Datatype::Bool) => HostTensor {
            shape: b.shape,
            data: HostData::Bool(b.data),
        },
        (Value::Str(s), Datatype::Bytes) => HostTensor {
            shape: s.shape,
            data: HostData::Bytes(s.data),
        },
        (v, _) => return Err(wrong(v.kind())),
    })
}

fn shape_text(m: &Manifest, spec: &TensorSpec) -> String {
    let mut dims: Vec<String> = spec
        .dims
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    if m.max_batch_size > 0 {
        dims.insert(0, format!("1..{}", m.max_batch_size));
    }
    format!("[{}]", dims.join(", "))
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
