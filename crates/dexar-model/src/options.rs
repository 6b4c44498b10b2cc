//! Where a model runs and in which precision, parsed from the names users
//! type (`f32`, `bf16`; `cpu`, `cuda:1`).

use candle_core::{DType, Device};

use crate::error::{ModelError, Result};

/// Where to run and in which precision.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    /// Qwen-VL: the most pixels an image is resized to (the processor's
    /// `max_pixels`), bounding the number of image tokens. `None` keeps the
    /// checkpoint's; LLaVA models see a fixed size and ignore it.
    pub max_pixels: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            max_pixels: None,
        }
    }
}

impl LoadOptions {
    /// `f32`, `f16` or `bf16`.
    pub fn dtype_name(&self) -> &'static str {
        match self.dtype {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            _ => "f32",
        }
    }

    /// `cpu` or `cuda:N`.
    pub fn device_name(&self) -> String {
        match self.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".into(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        }
    }
}

/// The weights' precision by name: `f32`, `f16` or `bf16` (gradients are
/// always accumulated in f32).
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim() {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(ModelError::Input(format!(
            "unknown dtype `{other}`; use f32, f16 or bf16"
        ))),
    }
}

/// `cpu`, or `cuda` / `cuda:N`, which need a build with CUDA support.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                ModelError::Input(format!("unknown device `{name}`; use cpu, cuda or cuda:N"))
            })?,
    };
    Device::new_cuda(ordinal).map_err(|e| {
        // A CUDA build that fails here lacks the GPU or its driver, not a rebuild.
        let hint = if candle_core::utils::cuda_is_available() {
            "it needs an NVIDIA GPU with its driver and the CUDA 13 libraries"
        } else {
            "build dexar with `--features cuda` on a machine with an NVIDIA GPU"
        };
        ModelError::Input(format!(
            "{name}: CUDA is not available ({}); {hint}",
            dexar_core::one_line(&e.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_mistakes_say_what_to_use() {
        for name in ["f32", "f16", "bf16"] {
            let opts = LoadOptions {
                dtype: parse_dtype(name).unwrap(),
                ..LoadOptions::default()
            };
            assert_eq!(opts.dtype_name(), name);
        }
        let e = parse_dtype("f64").unwrap_err().to_string();
        assert_eq!(e, "unknown dtype `f64`; use f32, f16 or bf16");
        assert_eq!(LoadOptions::default().device_name(), "cpu");
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("use cpu, cuda or cuda:N"), "{e}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn cuda_that_cannot_start_says_why_in_one_line() {
        // Without a GPU (as on the test machines), whatever the build.
        if let Err(e) = parse_device("cuda") {
            let e = e.to_string();
            assert!(e.starts_with("cuda: CUDA is not available ("), "{e}");
            assert!(!e.contains('\n'), "{e}");
            let rebuild = e.contains("build dexar with `--features cuda`");
            assert_eq!(rebuild, !candle_core::utils::cuda_is_available(), "{e}");
        }
    }
}
