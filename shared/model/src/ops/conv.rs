//! Windowed ops: Conv (1-D, 2-D), ConvTranspose (2-D), MaxPool and AveragePool (2-D).

use burn::tensor::Tensor;
use burn::tensor::module;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, ConvTransposeOptions, MaxPoolOptions};

use super::attrs::Attrs;
use super::elementwise::dims_array;
use crate::value::{Float, Ranked};

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    /// `NOTSET`: explicit `pads`.
    NotSet,
    /// `VALID`: no padding.
    Valid,
    /// `SAME_UPPER`: output = ceil(in / stride), extra padding at the end.
    SameUpper,
    /// `SAME_LOWER`: the same, extra padding at the start.
    SameLower,
}

/// Window attributes shared by Conv, ConvTranspose and the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `kernel_shape` (pools: required; conv: optional, checked against the weights).
    pub kernel: Option<Vec<usize>>,
    /// `strides`.
    pub strides: Option<Vec<usize>>,
    /// `pads` as `[begin..., end...]`.
    pub pads: Option<Vec<usize>>,
    /// `dilations`.
    pub dilations: Option<Vec<usize>>,
    /// `auto_pad`.
    pub auto_pad: AutoPad,
    /// `ceil_mode` (pools).
    pub ceil_mode: bool,
    /// `group` (conv).
    pub group: usize,
}

fn usizes(a: &Attrs, name: &str) -> Result<Option<Vec<usize>>, String> {
    a.ints(name)
        .map(|v| {
            v.iter()
                .map(|&x| {
                    usize::try_from(x).map_err(|_| format!("{name} {v:?} has a negative value"))
                })
                .collect()
        })
        .transpose()
}

impl Window {
    /// Parses the window attributes of `op_type`.
    pub fn parse(a: &Attrs, op_type: &str) -> Result<Self, String> {
        let auto_pad = match a.string("auto_pad").as_deref() {
            None | Some("NOTSET") => AutoPad::NotSet,
            Some("VALID") => AutoPad::Valid,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some(other) => return Err(format!("{op_type} with auto_pad={other:?}")),
        };
        let group = a.int("group", 1);
        if group < 1 {
            return Err(format!("{op_type} with group={group}"));
        }
        Ok(Self {
            kernel: usizes(a, "kernel_shape")?,
            strides: usizes(a, "strides")?,
            pads: usizes(a, "pads")?,
            dilations: usizes(a, "dilations")?,
            auto_pad,
            ceil_mode: a.int("ceil_mode", 0) != 0,
            group: group as usize,
        })
    }

    /// Resolves `(stride, (pad_begin, pad_end), dilation)` per spatial dim for an input of
    /// spatial size `spatial` and kernel `kernel`.
    fn resolve(&self, spatial: &[usize], kernel: &[usize]) -> Result<Vec<Dim>, String> {
        let n = spatial.len();
        let get = |v: &Option<Vec<usize>>,
                   what: &str,
                   len: usize|
         -> Result<Option<Vec<usize>>, String> {
            match v {
                Some(v) if v.len() != len => Err(format!("{what} {v:?} for {n} spatial dims")),
                other => Ok(other.clone()),
            }
        };
        let strides = get(&self.strides, "strides", n)?.unwrap_or(vec![1; n]);
        let dil = get(&self.dilations, "dilations", n)?.unwrap_or(vec![1; n]);
        let pads = get(&self.pads, "pads", 2 * n)?.unwrap_or(vec![0; 2 * n]);
        if strides.contains(&0) || dil.contains(&0) || kernel.contains(&0) {
            return Err("strides, dilations and kernel must be positive".into());
        }
        Ok((0..n)
            .map(|i| {
                let pad = match self.auto_pad {
                    AutoPad::NotSet => (pads[i], pads[i + n]),
                    AutoPad::Valid => (0, 0),
                    AutoPad::SameUpper | AutoPad::SameLower => {
                        let out = spatial[i].div_ceil(strides[i]);
                        let span = (kernel[i] - 1) * dil[i] + 1;
                        let total = ((out - 1) * strides[i] + span).saturating_sub(spatial[i]);
                        let small = total / 2;
                        if self.auto_pad == AutoPad::SameUpper {
                            (small, total - small)
                        } else {
                            (total - small, small)
                        }
                    }
                };
                Dim {
                    stride: strides[i],
                    pad,
                    dilation: dil[i],
                }
            })
            .collect())
    }
}

/// One resolved spatial dim.
struct Dim {
    stride: usize,
    pad: (usize, usize),
    dilation: usize,
}

fn r3(f: &Float) -> Result<Tensor<3>, String> {
    match &f.t {
        Ranked::R3(t) if f.shape.len() == 3 => Ok(t.clone()),
        _ => Err(format!("expected a 3-D tensor, got {:?}", f.shape)),
    }
}

fn r4(f: &Float) -> Result<Tensor<4>, String> {
    match &f.t {
        Ranked::R4(t) if f.shape.len() == 4 => Ok(t.clone()),
        _ => Err(format!("expected a 4-D tensor, got {:?}", f.shape)),
    }
}

fn check_kernel(w: &Window, kernel: &[usize]) -> Result<(), String> {
    match &w.kernel {
        Some(k) if k != kernel => Err(format!("kernel_shape {k:?} but weights have {kernel:?}")),
        _ => Ok(()),
    }
}

/// `Conv` on `[N, C, L]` or `[N, C, H, W]` with weights `[M, C/group, k...]`.
pub fn conv(x: &Float, w: &Float, b: Option<&Float>, win: &Window) -> Result<Float, String> {
    let rank = x.shape.len();
    if w.shape.len() != rank || !(3..=4).contains(&rank) {
        return Err(format!(
            "Conv on {:?} with weights {:?}: only 1-D and 2-D",
            x.shape, w.shape
        ));
    }
    let kernel = &w.shape[2..];
    check_kernel(win, kernel)?;
    let dims = win.resolve(&x.shape[2..], kernel)?;
    let bias = b.map(|b| b.flat());
    let t = if rank == 3 {
        let d = &dims[0];
        let opts = ConvOptions::new_with_padding([d.stride], [d.pad], [d.dilation], win.group);
        Ranked::R3(module::conv1d(r3(x)?, r3(w)?, bias, opts))
    } else {
        let opts = ConvOptions::new_with_padding(
            [dims[0].stride, dims[1].stride],
            [dims[0].pad, dims[1].pad],
            [dims[0].dilation, dims[1].dilation],
            win.group,
        );
        Ranked::R4(module::conv2d(r4(x)?, r4(w)?, bias, opts))
    };
    Ok(Float::from_ranked(t))
}

/// `ConvTranspose` on `[N, C, H, W]` with weights `[C, M/group, kh, kw]`; symmetric pads only.
pub fn conv_transpose(
    x: &Float,
    w: &Float,
    b: Option<&Float>,
    win: &Window,
    output_padding: &[usize],
) -> Result<Float, String> {
    if x.shape.len() != 4 || w.shape.len() != 4 {
        return Err(format!(
            "ConvTranspose on {:?} with weights {:?}: only 2-D",
            x.shape, w.shape
        ));
    }
    let kernel = &w.shape[2..];
    check_kernel(win, kernel)?;
    if matches!(win.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
        return Err("ConvTranspose with SAME auto_pad".into());
    }
    let dims = win.resolve(&x.shape[2..], kernel)?;
    if dims.iter().any(|d| d.pad.0 != d.pad.1) {
        return Err("ConvTranspose with asymmetric pads".into());
    }
    let out_pad = match output_padding {
        [] => [0, 0],
        [a, b] => [*a, *b],
        other => return Err(format!("ConvTranspose output_padding {other:?}")),
    };
    let opts = ConvTransposeOptions::new(
        [dims[0].stride, dims[1].stride],
        [dims[0].pad.0, dims[1].pad.0],
        out_pad,
        [dims[0].dilation, dims[1].dilation],
        win.group,
    );
    let y = module::conv_transpose2d(r4(x)?, r4(w)?, b.map(|b| b.flat()), opts);
    Ok(Float::from_ranked(Ranked::R4(y)))
}

/// `MaxPool` (`max: true`) or `AveragePool` on `[N, C, H, W]`.
pub fn pool(x: &Float, win: &Window, max: bool, count_include_pad: bool) -> Result<Float, String> {
    let kernel = win.kernel.as_deref().ok_or("pool without kernel_shape")?;
    if x.shape.len() != 4 || kernel.len() != 2 {
        return Err(format!(
            "pooling {:?} with kernel {kernel:?}: only 2-D",
            x.shape
        ));
    }
    let dims = win.resolve(&x.shape[2..], kernel)?;
    let k: [usize; 2] = dims_array(kernel);
    let stride = [dims[0].stride, dims[1].stride];
    let pads = [dims[0].pad, dims[1].pad];
    let y = if max {
        let opts = MaxPoolOptions::new(k)
            .with_stride(stride)
            .with_padding_pairs(pads)
            .with_dilation([dims[0].dilation, dims[1].dilation])
            .with_ceil_mode(win.ceil_mode);
        module::max_pool2d(r4(x)?, opts)
    } else {
        if dims.iter().any(|d| d.dilation != 1) {
            return Err("AveragePool with dilations".into());
        }
        let opts = AvgPoolOptions::new(k)
            .with_stride(stride)
            .with_padding_pairs(pads)
            .with_count_include_pad(count_include_pad)
            .with_ceil_mode(win.ceil_mode);
        module::avg_pool2d(r4(x)?, opts)
    };
    Ok(Float::from_ranked(Ranked::R4(y)))
}
