//! `LinearClassifier` and `LinearRegressor`, with onnxruntime's conventions: scores are
//! `x · coefficientsᵀ + intercepts` in float32; a one-row binary classifier yields two score columns
//! `[1 - s, s]`; post transforms other than PROBIT do not apply to a single score column.

use super::{Labels, Pick, PostTransform, probit};
use crate::ops::Attrs;

/// `LinearClassifier` attributes.
#[derive(Debug, Clone)]
pub struct LinearClassifier {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    /// Class labels.
    pub labels: Labels,
    post: PostTransform,
}

/// `x · wᵀ + b` for `n` rows of `c` features and `t` targets.
fn scores(
    x: &[f32],
    n: usize,
    c: usize,
    w: &[f32],
    b: &[f32],
    t: usize,
) -> Result<Vec<f32>, String> {
    if w.len() != t * c {
        return Err(format!(
            "{} coefficients for {t} targets of {c} features",
            w.len()
        ));
    }
    let mut out = Vec::with_capacity(n * t);
    for r in 0..n {
        let row = &x[r * c..(r + 1) * c];
        for k in 0..t {
            let dot: f32 = row
                .iter()
                .zip(&w[k * c..(k + 1) * c])
                .map(|(a, b)| a * b)
                .sum();
            out.push(dot + b.get(k).copied().unwrap_or(0.0));
        }
    }
    Ok(out)
}

impl LinearClassifier {
    /// Parses the node's attributes.
    pub fn parse(a: &Attrs) -> Result<Self, String> {
        let intercepts = a.floats("intercepts").unwrap_or_default();
        let labels = Labels::parse(a, "classlabels_ints")?;
        let post = PostTransform::parse(a)?;
        if intercepts.is_empty() {
            return Err("LinearClassifier without intercepts".into());
        }
        if intercepts.len() == 1 && labels.len() == 2 && post == PostTransform::Probit {
            return Err("LinearClassifier with PROBIT on one binary score column".into());
        }
        if intercepts.len() > 1 && intercepts.len() != labels.len() {
            return Err(format!(
                "LinearClassifier with {} intercepts for {} labels",
                intercepts.len(),
                labels.len()
            ));
        }
        Ok(Self {
            coefficients: a
                .floats("coefficients")
                .ok_or("LinearClassifier without coefficients")?,
            intercepts,
            labels,
            post,
        })
    }

    /// Label picks, scores (row-major) and the score width for `n` rows of `c` features.
    pub(super) fn run(
        &self,
        x: &[f32],
        n: usize,
        c: usize,
    ) -> Result<(Vec<Pick>, Vec<f32>, usize), String> {
        let t = self.intercepts.len();
        let mut s = scores(x, n, c, &self.coefficients, &self.intercepts, t)?;
        if t == 1 {
            let two = self.labels.len() == 2;
            let picks = s
                .iter()
                .map(|&v| match (v > 0.0, two) {
                    (true, true) => Pick::Class(1),
                    (false, true) => Pick::Class(0),
                    (true, false) => Pick::Literal(1),
                    (false, false) => Pick::Literal(0),
                })
                .collect();
            if self.post == PostTransform::Probit {
                s.iter_mut().for_each(|v| *v = probit(*v));
            }
            if two {
                let p = |v: f32| match self.post {
                    PostTransform::Logistic => super::logistic(v),
                    _ => v,
                };
                let s = s.iter().flat_map(|&v| [1.0 - p(v), p(v)]).collect();
                return Ok((picks, s, 2));
            }
            return Ok((picks, s, 1));
        }
        let mut picks = Vec::with_capacity(n);
        for row in s.chunks_mut(t) {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate().skip(1) {
                if v > row[best] {
                    best = j;
                }
            }
            picks.push(Pick::Class(best));
            self.post.apply_row(row);
        }
        Ok((picks, s, t))
    }
}

/// `LinearRegressor` attributes.
#[derive(Debug, Clone)]
pub struct LinearRegressor {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    targets: usize,
    post: PostTransform,
}

impl LinearRegressor {
    /// Parses the node's attributes.
    pub fn parse(a: &Attrs) -> Result<Self, String> {
        let targets = usize::try_from(a.int("targets", 1))
            .ok()
            .filter(|&t| t > 0)
            .ok_or("LinearRegressor targets must be positive")?;
        let intercepts = a.floats("intercepts").unwrap_or_default();
        if !intercepts.is_empty() && intercepts.len() != targets {
            return Err(format!(
                "LinearRegressor with {} intercepts for {targets} targets",
                intercepts.len()
            ));
        }
        Ok(Self {
            coefficients: a
                .floats("coefficients")
                .ok_or("LinearRegressor without coefficients")?,
            intercepts,
            targets,
            post: PostTransform::parse(a)?,
        })
    }

    /// Scores (row-major) and their width for `n` rows of `c` features.
    pub(super) fn run(&self, x: &[f32], n: usize, c: usize) -> Result<(Vec<f32>, usize), String> {
        let t = self.targets;
        let mut s = scores(x, n, c, &self.coefficients, &self.intercepts, t)?;
        if t == 1 {
            if self.post == PostTransform::Probit {
                s.iter_mut().for_each(|v| *v = probit(*v));
            }
        } else {
            s.chunks_mut(t).for_each(|row| self.post.apply_row(row));
        }
        Ok((s, t))
    }
}
