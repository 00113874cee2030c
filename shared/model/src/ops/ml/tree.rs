//! `TreeEnsembleClassifier` / `TreeEnsembleRegressor` (ai.onnx.ml opset 1 and 3 attribute forms),
//! evaluated on the host with onnxruntime's rules:
//!
//! - a tree's root is its first listed node; a node goes to its true branch when the comparison
//!   holds, or when the value is NaN and `nodes_missing_value_tracks_true` is set;
//! - scores accumulate in float32, tree by tree in listed order;
//! - a single-target regressor uses each leaf's first weight, adds `base_values[0]`, and applies
//!   only PROBIT; multi-target scores get `base_values` only when there is one per target;
//! - classifiers always sum; two classes follow onnxruntime's binary path (one weighted class →
//!   two columns, LOGISTIC on the single score, label from the positive score).

use super::{Labels, Pick, PostTransform, logistic, probit};
use crate::ops::Attrs;

/// A node comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

#[derive(Debug, Clone)]
struct Node {
    mode: Mode,
    feature: usize,
    value: f32,
    /// Node indices of the branches.
    yes: usize,
    no: usize,
    missing_true: bool,
    /// `(target or class, weight)` in listed order.
    weights: Vec<(usize, f32)>,
}

/// How a regressor combines its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// A parsed tree ensemble.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    nodes: Vec<Node>,
    roots: Vec<usize>,
    /// Targets (regressor) or classes (classifier).
    n: usize,
    base: Vec<f32>,
    post: PostTransform,
    aggregate: Aggregate,
    /// Class labels (classifier only).
    pub labels: Option<Labels>,
    /// Two classes and a single weighted class id.
    binary_case: bool,
    weights_all_positive: bool,
    max_feature: usize,
}

/// A FLOATS attribute or its `_as_tensor` (float or double) form.
fn floats_or_tensor(a: &Attrs, name: &str) -> Result<Option<Vec<f32>>, String> {
    let tensor = a.tensor(&format!("{name}_as_tensor"));
    match (a.floats(name), tensor) {
        (Some(_), Some(_)) => Err(format!("both {name} and {name}_as_tensor")),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(t)) => {
            let raw = t.raw_data.as_deref();
            let v: Vec<f32> = match t.data_type() {
                1 => raw.map_or_else(
                    || t.float_data.clone(),
                    |r| {
                        r.chunks_exact(4)
                            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                            .collect()
                    },
                ),
                11 => raw
                    .map_or_else(
                        || t.double_data.clone(),
                        |r| {
                            r.chunks_exact(8)
                                .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                                .collect()
                        },
                    )
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
                d => return Err(format!("{name}_as_tensor of data type {d}")),
            };
            Ok(Some(v))
        }
        (None, None) => Ok(None),
    }
}

impl TreeEnsemble {
    /// Parses a classifier's (`classifier`) or regressor's attributes.
    pub fn parse(a: &Attrs, classifier: bool) -> Result<Self, String> {
        let ints = |name: &str| a.ints(name).unwrap_or_default();
        let tree_ids = ints("nodes_treeids");
        let node_ids = ints("nodes_nodeids");
        let features = ints("nodes_featureids");
        let yes = ints("nodes_truenodeids");
        let no = ints("nodes_falsenodeids");
        let missing = ints("nodes_missing_value_tracks_true");
        let modes = a.strings("nodes_modes").unwrap_or_default();
        let values = floats_or_tensor(a, "nodes_values")?.unwrap_or_default();
        let count = tree_ids.len();
        if count == 0 {
            return Err("tree ensemble without nodes".into());
        }
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_truenodeids", yes.len()),
            ("nodes_falsenodeids", no.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", values.len()),
        ] {
            if len != count {
                return Err(format!("{name} has {len} entries for {count} nodes"));
            }
        }
        let mut index = std::collections::HashMap::new();
        for (i, key) in tree_ids.iter().zip(&node_ids).enumerate() {
            if index.insert((*key.0, *key.1), i).is_some() {
                return Err(format!("node {} of tree {} listed twice", key.1, key.0));
            }
        }
        let find = |tree: i64, node: i64| {
            index
                .get(&(tree, node))
                .copied()
                .ok_or_else(|| format!("tree {tree} has no node {node}"))
        };
        let mut nodes = Vec::with_capacity(count);
        let mut roots = Vec::new();
        let mut max_feature = 0;
        for i in 0..count {
            if i == 0 || tree_ids[i] != tree_ids[i - 1] {
                roots.push(i);
            }
            let mode = match modes[i].as_slice() {
                b"BRANCH_LEQ" => Mode::Leq,
                b"BRANCH_LT" => Mode::Lt,
                b"BRANCH_GTE" => Mode::Gte,
                b"BRANCH_GT" => Mode::Gt,
                b"BRANCH_EQ" => Mode::Eq,
                b"BRANCH_NEQ" => Mode::Neq,
                b"LEAF" => Mode::Leaf,
                m => return Err(format!("node mode {:?}", String::from_utf8_lossy(m))),
            };
            let feature = usize::try_from(features[i]).map_err(|_| "negative feature id")?;
            let (y, n) = if mode == Mode::Leaf {
                (0, 0)
            } else {
                max_feature = max_feature.max(feature);
                (find(tree_ids[i], yes[i])?, find(tree_ids[i], no[i])?)
            };
            nodes.push(Node {
                mode,
                feature,
                value: values[i],
                yes: y,
                no: n,
                missing_true: missing.get(i) == Some(&1),
                weights: Vec::new(),
            });
        }
        let p = if classifier { "class" } else { "target" };
        let w_tree = ints(&format!("{p}_treeids"));
        let w_node = ints(&format!("{p}_nodeids"));
        let w_id = ints(&format!("{p}_ids"));
        let w_val = floats_or_tensor(a, &format!("{p}_weights"))?.unwrap_or_default();
        if [w_node.len(), w_id.len(), w_val.len()] != [w_tree.len(); 3] {
            return Err(format!("{p}_* arrays differ in length"));
        }
        let labels = if classifier {
            Some(Labels::parse(a, "classlabels_int64s")?)
        } else {
            None
        };
        let n = match &labels {
            Some(l) => l.len(),
            None => usize::try_from(a.int("n_targets", 0)).unwrap_or(0),
        };
        if n == 0 {
            return Err("tree ensemble without targets".into());
        }
        if classifier && n == 1 {
            return Err("TreeEnsembleClassifier with a single class".into());
        }
        let mut order: Vec<usize> = (0..w_tree.len()).collect();
        order.sort_by_key(|&k| (w_tree[k], w_node[k], k));
        for k in order {
            let id = usize::try_from(w_id[k])
                .ok()
                .filter(|&id| id < n)
                .ok_or_else(|| format!("{p} id {} out of range for {n}", w_id[k]))?;
            let node = &mut nodes[find(w_tree[k], w_node[k])?];
            // onnxruntime ignores weights on branch nodes (old onnxmltools exports have them).
            if node.mode == Mode::Leaf {
                node.weights.push((id, w_val[k]));
            }
        }
        let base = floats_or_tensor(a, "base_values")?.unwrap_or_default();
        // onnxruntime takes 0 or one per target/class, and one for a binary classifier.
        if !(base.is_empty() || base.len() == n || (classifier && n == 2 && base.len() == 1)) {
            return Err(format!(
                "{} base_values for {n} targets or classes",
                base.len()
            ));
        }
        let aggregate = match a.string("aggregate_function").as_deref().unwrap_or("SUM") {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return Err(format!("aggregate_function={other:?}")),
        };
        let mut classes: Vec<i64> = w_id.clone();
        classes.sort_unstable();
        classes.dedup();
        Ok(Self {
            binary_case: n == 2 && classes.len() == 1,
            weights_all_positive: w_val.iter().all(|&w| w >= 0.0),
            nodes,
            roots,
            n,
            base,
            post: PostTransform::parse(a)?,
            aggregate,
            labels,
            max_feature,
        })
    }

    /// Every feature a branch reads must exist in rows of `c` features.
    pub(super) fn check_features(&self, c: usize) -> Result<(), String> {
        if self.max_feature >= c {
            return Err(format!(
                "a tree reads feature {} but the input has {c}",
                self.max_feature
            ));
        }
        Ok(())
    }

    /// The leaf a row reaches from `root`.
    fn leaf(&self, root: usize, x: &[f32]) -> Result<&Node, String> {
        let mut node = &self.nodes[root];
        for _ in 0..=self.nodes.len() {
            let v = x[node.feature];
            let t = node.value;
            let hit = match node.mode {
                Mode::Leaf => return Ok(node),
                Mode::Leq => v <= t,
                Mode::Lt => v < t,
                Mode::Gte => v >= t,
                Mode::Gt => v > t,
                Mode::Eq => v == t,
                Mode::Neq => v != t,
            } || (node.missing_true && v.is_nan());
            node = &self.nodes[if hit { node.yes } else { node.no }];
        }
        Err("tree has a cycle".into())
    }

    /// Label picks (classifier), scores (row-major) and their width for `rows` rows of `c`
    /// features.
    pub(super) fn run(
        &self,
        x: &[f32],
        rows: usize,
        c: usize,
    ) -> Result<(Vec<Pick>, Vec<f32>, usize), String> {
        self.check_features(c)?;
        let mut scores = Vec::with_capacity(rows * self.n);
        let mut picks = Vec::new();
        for r in 0..rows {
            let row = &x[r * c..(r + 1) * c];
            if self.labels.is_some() {
                let (pick, s) = self.classify(row)?;
                picks.push(pick);
                scores.extend(s);
            } else if self.n == 1 {
                scores.push(self.regress1(row)?);
            } else {
                scores.extend(self.regress(row)?);
            }
        }
        Ok((picks, scores, self.n))
    }

    /// Sums (or min/max) the leaf weights per target: `(score, has_score)`.
    fn accumulate(&self, row: &[f32], agg: Aggregate) -> Result<Vec<(f32, bool)>, String> {
        let mut acc = vec![(0.0f32, false); self.n];
        for &root in &self.roots {
            for &(i, w) in &self.leaf(root, row)?.weights {
                let (s, has) = &mut acc[i];
                *s = match agg {
                    Aggregate::Sum | Aggregate::Average => *s + w,
                    Aggregate::Min if *has && *s <= w => *s,
                    Aggregate::Max if *has && *s >= w => *s,
                    Aggregate::Min | Aggregate::Max => w,
                };
                *has = true;
            }
        }
        Ok(acc)
    }

    fn regress1(&self, row: &[f32]) -> Result<f32, String> {
        let origin = if self.base.len() == 1 {
            self.base[0]
        } else {
            0.0
        };
        let (mut s, mut has) = (0.0f32, false);
        for &root in &self.roots {
            let leaf = self.leaf(root, row)?;
            let w = leaf.weights.first().map_or(leaf.value, |w| w.1);
            s = match self.aggregate {
                Aggregate::Sum | Aggregate::Average => s + w,
                Aggregate::Min if has && s <= w => s,
                Aggregate::Max if has && s >= w => s,
                Aggregate::Min | Aggregate::Max => w,
            };
            has = true;
        }
        let s = match self.aggregate {
            Aggregate::Sum => s + origin,
            Aggregate::Average => s / self.roots.len() as f32 + origin,
            Aggregate::Min | Aggregate::Max if has => s + origin,
            Aggregate::Min | Aggregate::Max => origin,
        };
        Ok(if self.post == PostTransform::Probit {
            probit(s)
        } else {
            s
        })
    }

    fn regress(&self, row: &[f32]) -> Result<Vec<f32>, String> {
        let acc = self.accumulate(row, self.aggregate)?;
        let use_base = self.base.len() == self.n;
        let trees = self.roots.len() as f32;
        let mut out: Vec<f32> = acc
            .iter()
            .enumerate()
            .map(|(j, &(s, has))| {
                // onnxruntime writes a target no leaf scored as 0, base value or not.
                if !has {
                    return 0.0;
                }
                let b = if use_base { self.base[j] } else { 0.0 };
                match self.aggregate {
                    Aggregate::Sum | Aggregate::Min | Aggregate::Max => s + b,
                    Aggregate::Average => s / trees + b,
                }
            })
            .collect();
        self.post.apply_row(&mut out);
        Ok(out)
    }

    /// onnxruntime's `TreeAggregatorClassifier::FinalizeScores` for one row.
    fn classify(&self, row: &[f32]) -> Result<(Pick, Vec<f32>), String> {
        let mut p = self.accumulate(row, Aggregate::Sum)?;
        if self.n > 2 {
            for (k, &b) in self.base.iter().enumerate() {
                p[k] = (p[k].0 + b, true);
            }
            let mut best: Option<usize> = None;
            for (k, &(s, has)) in p.iter().enumerate() {
                if has && best.is_none_or(|b| s > p[b].0) {
                    best = Some(k);
                }
            }
            let best = best.ok_or("no class received a score")?;
            let mut s: Vec<f32> = p.iter().map(|x| x.0).collect();
            self.post.apply_row(&mut s);
            return Ok((Pick::Class(best), s));
        }
        // Binary: onnxruntime's special cases.
        let mut extra = -1;
        let mut len = 2;
        match self.base.len() {
            2 if p[1].1 => {
                p[1] = (self.base[1] + p[0].0, true);
                p[0].0 = -p[1].0;
            }
            2 => {
                p[1].0 += self.base[1];
                p[0].0 += self.base[0];
            }
            1 => {
                p[0].0 += self.base[0];
                if !p[1].1 {
                    len = 1;
                }
            }
            _ => {
                extra = 3;
                if !p[1].1 {
                    len = 1;
                }
            }
        }
        let (s0, h0) = p[0];
        let (s1, h1) = if len == 2 && p[1].1 {
            p[1]
        } else {
            (0.0, false)
        };
        let pos = if h1 {
            s1
        } else if h0 {
            s0
        } else {
            0.0
        };
        let label = if self.binary_case {
            let (positive, code) = if self.weights_all_positive {
                (pos > 0.5, 0)
            } else {
                (pos > 0.0, 2)
            };
            extra = if positive { code } else { code + 1 };
            Pick::Class(usize::from(positive))
        } else {
            // onnxruntime returns the literal 1/0 here (for string labels: index 1/0).
            let v = i64::from(pos > 0.0);
            match self.labels {
                Some(Labels::Strings(_)) => Pick::Class(v as usize),
                _ => Pick::Literal(v),
            }
        };
        // onnxruntime writes a class that never received a score as 0 (base value or not).
        let scored = |(s, has): (f32, bool)| if has { s } else { 0.0 };
        let scores = if len == 2 {
            let mut s = vec![scored(p[0]), scored(p[1])];
            self.post.apply_row(&mut s);
            s
        } else if self.post == PostTransform::Probit {
            vec![probit(s0), 0.0]
        } else {
            match extra {
                0..=3 if self.post == PostTransform::Logistic => {
                    vec![logistic(-s0), logistic(s0)]
                }
                0 | 1 => vec![1.0 - s0, s0],
                2 | 3 => vec![-s0, s0],
                _ => vec![s0, 0.0],
            }
        };
        Ok((label, scores))
    }
}
