//! Loading an ONNX graph into the interpreter's form.
//!
//! Values live in numbered slots. Initializers and `Constant` nodes are decoded once at load
//! (floats uploaded to the device), every other node is parsed into an [`Op`], and each slot's
//! last use is recorded so intermediate tensors are freed as soon as nothing needs them.

use std::collections::HashMap;

use burn::tensor::Device;
use prost::Message;

use crate::onnx::{ModelProto, TensorProto, tensor_proto::DataType};
use crate::ops::{Attrs, Op};
use crate::value::{Float, Int, Value};
use crate::{ModelError, Result};

/// One node ready to run.
#[derive(Debug)]
pub struct Node {
    /// The node's name (or `op_type#index` when unnamed), for errors.
    pub name: String,
    /// The op type, for errors.
    pub op_type: String,
    /// The parsed op.
    pub op: Op,
    /// Input slots; `None` for an absent optional input.
    pub inputs: Vec<Option<usize>>,
    /// Output slots.
    pub outputs: Vec<usize>,
    /// Slots to free after this node ran (their last use).
    pub free: Vec<usize>,
}

/// A loaded graph.
#[derive(Debug)]
pub struct Graph {
    /// Nodes in execution (topological) order.
    pub nodes: Vec<Node>,
    /// Values known at load (initializers, constants), by slot.
    pub constants: Vec<Option<Value>>,
    /// Graph inputs that are not initializers: (name, slot).
    pub inputs: Vec<(String, usize)>,
    /// Graph outputs: (name, slot).
    pub outputs: Vec<(String, usize)>,
}

fn onnx_err(m: impl Into<String>) -> ModelError {
    ModelError::Onnx(m.into())
}

/// Decodes an initializer or constant tensor.
pub fn decode_tensor(t: &TensorProto, device: &Device) -> Result<Value> {
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| onnx_err(format!("tensor {:?}: negative dim", t.name())))
        })
        .collect::<Result<Vec<usize>>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| onnx_err(format!("tensor {:?}: too many elements", t.name())))?;
    if t.data_location == Some(1) {
        return Err(onnx_err(format!(
            "tensor {:?}: external data is not supported",
            t.name()
        )));
    }
    let raw = t.raw_data.as_deref();
    fn le<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("exact chunk")))
            .collect()
    }
    let value = match DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined) {
        DataType::Float => {
            let data = raw.map_or_else(|| t.float_data.clone(), |r| le(r, f32::from_le_bytes));
            check_len(t, data.len(), n)?;
            Value::Float(Float::from_host(data, shape, device).map_err(onnx_err)?)
        }
        DataType::Double => {
            let data: Vec<f64> =
                raw.map_or_else(|| t.double_data.clone(), |r| le(r, f64::from_le_bytes));
            check_len(t, data.len(), n)?;
            let data = data.into_iter().map(|x| x as f32).collect();
            Value::Float(Float::from_host(data, shape, device).map_err(onnx_err)?)
        }
        DataType::Int64 => {
            let data = raw.map_or_else(|| t.int64_data.clone(), |r| le(r, i64::from_le_bytes));
            check_len(t, data.len(), n)?;
            Value::Int(Int { shape, data })
        }
        DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint8
        | DataType::Uint16
        | DataType::Bool => {
            let is_bool = t.data_type == Some(DataType::Bool as i32);
            let data: Vec<i64> = match (raw, t.data_type) {
                (Some(r), Some(6)) => le(r, i32::from_le_bytes)
                    .into_iter()
                    .map(i64::from)
                    .collect(),
                (Some(r), Some(5) | Some(4)) => le(r, i16::from_le_bytes)
                    .into_iter()
                    .map(i64::from)
                    .collect(),
                (Some(r), Some(3)) => r.iter().map(|b| i64::from(*b as i8)).collect(),
                (Some(r), _) => r.iter().map(|b| i64::from(*b)).collect(),
                (None, _) => t.int32_data.iter().map(|x| i64::from(*x)).collect(),
            };
            check_len(t, data.len(), n)?;
            if is_bool {
                let data = data.into_iter().map(|x| x != 0).collect();
                Value::Bool(crate::value::Bool { shape, data })
            } else {
                Value::Int(Int { shape, data })
            }
        }
        DataType::String => {
            check_len(t, t.string_data.len(), n)?;
            Value::Str(crate::value::Str {
                shape,
                data: t.string_data.iter().map(|s| s.to_vec()).collect(),
            })
        }
        other => {
            return Err(onnx_err(format!(
                "tensor {:?}: data type {other:?} is not supported",
                t.name()
            )));
        }
    };
    Ok(value)
}

fn check_len(t: &TensorProto, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(onnx_err(format!(
            "tensor {:?}: {got} values for {want} elements",
            t.name()
        )))
    }
}

/// The value of a `Constant` node (any of its attribute forms).
fn constant_value(node: &crate::onnx::NodeProto, device: &Device) -> Result<Value> {
    let a = Attrs::new(node);
    if let Some(t) = a.tensor("value") {
        return decode_tensor(t, device);
    }
    if a.has("value_float") {
        return Ok(Value::Float(
            Float::from_host(vec![a.float("value_float", 0.0)], vec![], device)
                .map_err(onnx_err)?,
        ));
    }
    if let Some(v) = a.floats("value_floats") {
        let n = v.len();
        return Ok(Value::Float(
            Float::from_host(v, vec![n], device).map_err(onnx_err)?,
        ));
    }
    if a.has("value_int") {
        return Ok(Value::Int(Int {
            shape: vec![],
            data: vec![a.int("value_int", 0)],
        }));
    }
    if let Some(v) = a.ints("value_ints") {
        return Ok(Value::Int(Int::vector(v)));
    }
    Err(ModelError::UnsupportedOp {
        op: format!("Constant({})", a.names().join(",")),
        domain: String::new(),
        node: node.name().to_string(),
    })
}

impl Graph {
    /// Parses ONNX bytes; every op must be supported.
    pub fn load(bytes: &[u8], device: &Device) -> Result<Self> {
        let model =
            ModelProto::decode(bytes).map_err(|e| onnx_err(format!("not an ONNX model: {e}")))?;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| onnx_err("model has no graph"))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
            .map_or(1, |o| o.version());
        if !(7..=22).contains(&opset) {
            return Err(onnx_err(format!("opset {opset} is not supported (7..=22)")));
        }
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut constants: Vec<Option<Value>> = Vec::new();
        let mut slot_of = |name: &str, constants: &mut Vec<Option<Value>>| -> usize {
            *slots.entry(name.to_string()).or_insert_with(|| {
                constants.push(None);
                constants.len() - 1
            })
        };
        for init in &graph.initializer {
            let s = slot_of(init.name(), &mut constants);
            constants[s] = Some(decode_tensor(init, device)?);
        }
        let inputs: Vec<(String, usize)> = graph
            .input
            .iter()
            .filter(|i| !graph.initializer.iter().any(|t| t.name() == i.name()))
            .map(|i| (i.name().to_string(), slot_of(i.name(), &mut constants)))
            .collect();
        let mut nodes = Vec::new();
        for (index, node) in graph.node.iter().enumerate() {
            let name = if node.name().is_empty() {
                format!("{}#{index}", node.op_type())
            } else {
                node.name().to_string()
            };
            let unsupported = |reason: String| ModelError::UnsupportedOp {
                op: reason,
                domain: if node.domain().is_empty() {
                    String::new()
                } else {
                    format!("{}.", node.domain())
                },
                node: name.clone(),
            };
            let op = Op::parse(node, opset).map_err(unsupported)?;
            let outputs: Vec<usize> = node
                .output
                .iter()
                .filter(|o| !o.is_empty())
                .map(|o| slot_of(o, &mut constants))
                .collect();
            let Some(op) = op else {
                let s = *outputs
                    .first()
                    .ok_or_else(|| onnx_err(format!("Constant {name} has no output")))?;
                constants[s] = Some(constant_value(node, device)?);
                continue;
            };
            let inputs = node
                .input
                .iter()
                .map(|i| (!i.is_empty()).then(|| slot_of(i, &mut constants)))
                .collect();
            nodes.push(Node {
                name,
                op_type: node.op_type().to_string(),
                op,
                inputs,
                outputs,
                free: Vec::new(),
            });
        }
        let outputs: Vec<(String, usize)> = graph
            .output
            .iter()
            .map(|o| (o.name().to_string(), slot_of(o.name(), &mut constants)))
            .collect();
        let mut graph = Graph {
            nodes,
            constants,
            inputs,
            outputs,
        };
        graph.check_dataflow()?;
        graph.plan_frees();
        Ok(graph)
    }

    /// Every node input must be produced before it is read.
    fn check_dataflow(&self) -> Result<()> {
        let mut known: Vec<bool> = self.constants.iter().map(Option::is_some).collect();
        for (_, s) in &self.inputs {
            known[*s] = true;
        }
        for node in &self.nodes {
            if let Some(missing) = node.inputs.iter().flatten().find(|s| !known[**s]) {
                return Err(onnx_err(format!(
                    "node {} reads slot {missing} before it is written (graph not topologically sorted?)",
                    node.name
                )));
            }
            for o in &node.outputs {
                known[*o] = true;
            }
        }
        if let Some((name, _)) = self.outputs.iter().find(|(_, s)| !known[*s]) {
            return Err(onnx_err(format!("graph output {name:?} is never produced")));
        }
        Ok(())
    }

    /// Records, for each node, the non-constant slots it reads for the last time.
    fn plan_frees(&mut self) {
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for s in node.inputs.iter().flatten() {
                last_use.insert(*s, i);
            }
        }
        for (_, s) in &self.outputs {
            last_use.remove(s);
        }
        for (slot, i) in last_use {
            if self.constants[slot].is_none() {
                self.nodes[i].free.push(slot);
            }
        }
    }

    /// Runs the graph on values for its inputs (in `self.inputs` order).
    pub fn run(&self, inputs: Vec<Value>, device: &Device) -> Result<Vec<Value>> {
        let mut slots: Vec<Option<Value>> = vec![None; self.constants.len()];
        for ((_, s), v) in self.inputs.iter().zip(inputs) {
            slots[*s] = Some(v);
        }
        for node in &self.nodes {
            let args: Vec<Option<&Value>> = node
                .inputs
                .iter()
                .map(|s| s.and_then(|s| slots[s].as_ref().or(self.constants[s].as_ref())))
                .collect();
            let outs = node
                .op
                .run(&args, device)
                .map_err(|reason| ModelError::Runtime {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    reason,
                })?;
            for (s, v) in node.outputs.iter().zip(outs) {
                slots[*s] = Some(v);
            }
            for s in &node.free {
                slots[*s] = None;
            }
        }
        self.outputs
            .iter()
            .map(|(name, s)| {
                slots[*s]
                    .take()
                    .or_else(|| self.constants[*s].clone())
                    .ok_or_else(|| onnx_err(format!("output {name:?} was not produced")))
            })
            .collect()
    }
}
