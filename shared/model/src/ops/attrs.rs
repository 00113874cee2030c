//! Reading node attributes with ONNX's defaults.

use crate::onnx::{AttributeProto, NodeProto, TensorProto};

/// The attributes of one node, looked up by name.
pub struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    /// Wraps a node.
    pub fn new(node: &'a NodeProto) -> Self {
        Self { node }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    /// An INT attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).and_then(|a| a.i).unwrap_or(default)
    }

    /// A FLOAT attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).and_then(|a| a.f).unwrap_or(default)
    }

    /// A STRING attribute (UTF-8), if present.
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// An INTS attribute, if present.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    /// A FLOATS attribute, if present.
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }

    /// A STRINGS attribute (raw bytes per element), if present.
    pub fn strings(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        self.get(name).map(|a| a.strings.clone())
    }

    /// A TENSOR attribute, if present.
    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// Whether the attribute is present at all.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Names of every attribute present.
    pub fn names(&self) -> Vec<&'a str> {
        self.node.attribute.iter().map(|a| a.name()).collect()
    }
}
