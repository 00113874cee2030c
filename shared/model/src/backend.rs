//! Which burn backend runs the models, chosen at start (`--backend`).

use std::str::FromStr;

use burn::tensor::Device;

use crate::{ModelError, Result};

/// A burn backend compiled into this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// burn's pure-Rust CPU backend (default).
    Flex,
    /// burn's ndarray CPU backend (cargo feature `ndarray`).
    Ndarray,
    /// burn's wgpu GPU backend (cargo feature `wgpu`): the best adapter wgpu finds.
    Wgpu,
    /// wgpu on a software (CPU) adapter, e.g. lavapipe: GPU code paths without a GPU.
    WgpuCpu,
}

impl Backend {
    /// Every backend name, compiled in or not.
    pub const NAMES: [&'static str; 4] = ["flex", "ndarray", "wgpu", "wgpu-cpu"];

    /// The name used on the command line and in etcd.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::WgpuCpu => "wgpu-cpu",
        }
    }

    /// The burn device for this backend, or an error naming the missing cargo feature.
    pub fn device(self) -> Result<Device> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "wgpu")]
            Backend::WgpuCpu => Ok(Device::wgpu(burn::tensor::DeviceKind::Cpu)),
            #[allow(unreachable_patterns)]
            other => Err(ModelError::Backend(format!(
                "{} is not compiled into this binary (build with --features {})",
                other.name(),
                if other == Backend::Ndarray {
                    "ndarray"
                } else {
                    "wgpu"
                }
            ))),
        }
    }

    /// A description of the device, for registration in etcd.
    pub fn device_description(self) -> String {
        match self {
            Backend::Flex | Backend::Ndarray => "cpu".into(),
            Backend::Wgpu => "gpu".into(),
            Backend::WgpuCpu => "gpu-software".into(),
        }
    }
}

impl FromStr for Backend {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flex" => Ok(Backend::Flex),
            "ndarray" => Ok(Backend::Ndarray),
            "wgpu" => Ok(Backend::Wgpu),
            "wgpu-cpu" => Ok(Backend::WgpuCpu),
            other => Err(ModelError::Backend(format!(
                "unknown backend {other:?} (one of {})",
                Backend::NAMES.join(", ")
            ))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
