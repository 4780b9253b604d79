//! Model declarations and engine settings (device, threads, paged attention).

use serde::{Deserialize, Serialize};

use crate::types::ModelKind;

/// One model to serve: where it comes from and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The id clients send as `model`.
    pub id: String,
    /// A GGUF file, a safetensors / sentence-transformers directory, or a hub repo id
    /// (`org/name`, resolved with hf-hub; for GGUF repos `org/name:file.gguf`).
    pub source: String,
    /// chat / completion / embedding; detected from the files when omitted.
    #[serde(default)]
    pub kind: Option<ModelKind>,
    /// A Jinja chat template file (or inline template) overriding the model's own.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// auto / f32 / f16 / bf16 (safetensors models; GGUF files keep their own types).
    #[serde(default)]
    pub dtype: Option<String>,
    /// Cap on prompt + completion tokens, below the model's own context length.
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    /// In-situ quantisation of a safetensors model's weights at load (`q8_0`, `q4_0`, `q4k`,
    /// `q6k`... as mistral.rs names them). GGUF files are already quantised.
    #[serde(default)]
    pub isq: Option<String>,
    /// The device this model runs on (`cpu`, `cuda:N`), overriding `[engine] device`: one
    /// model per GPU on a multi-GPU host.
    #[serde(default)]
    pub device: Option<String>,
}

impl ModelSpec {
    /// Parse the `--model ID=SOURCE` command-line form.
    pub fn parse_flag(flag: &str) -> Result<Self, String> {
        let (id, source) = flag
            .split_once('=')
            .ok_or_else(|| format!("expected ID=SOURCE, got `{flag}`"))?;
        if id.is_empty() || source.is_empty() {
            return Err(format!("expected ID=SOURCE, got `{flag}`"));
        }
        Ok(Self {
            id: id.to_string(),
            source: source.to_string(),
            kind: None,
            chat_template: None,
            dtype: None,
            max_seq_len: None,
            isq: None,
            device: None,
        })
    }
}

/// Paged attention (CUDA / Metal builds only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagedAttentionConfig {
    /// On by default when built with `cuda`; ignored on CPU.
    pub enabled: bool,
    /// Tokens per KV-cache block: 8, 16 or 32 (what mistral.rs's CUDA kernels take).
    pub block_size: usize,
    /// Share of the GPU memory the KV cache may fill, after the weights (0 < f <= 1). Used
    /// unless `kv_cache_mb` or `kv_cache_tokens` sets an absolute size.
    pub gpu_memory_fraction: f32,
    /// An absolute KV-cache size in MiB per model (instead of the fraction).
    pub kv_cache_mb: Option<usize>,
    /// Or: a KV cache with room for this many tokens (all sequences together).
    pub kv_cache_tokens: Option<usize>,
    /// `auto` (the model's dtype) or `f8e4m3` (half the memory of bf16 per token).
    pub cache_type: String,
}

impl Default for PagedAttentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            block_size: 32,
            gpu_memory_fraction: 0.9,
            kv_cache_mb: None,
            kv_cache_tokens: None,
            cache_type: "auto".into(),
        }
    }
}

/// How large the paged-attention KV cache is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvCacheSize {
    /// A share of the GPU memory left after the weights.
    Fraction(f32),
    Megabytes(usize),
    Tokens(usize),
}

impl PagedAttentionConfig {
    pub const BLOCK_SIZES: [usize; 3] = [8, 16, 32];

    /// The KV-cache size asked for; an error names the setting that is wrong.
    pub fn size(&self) -> Result<KvCacheSize, String> {
        const P: &str = "engine.paged_attention";
        match (self.kv_cache_mb, self.kv_cache_tokens) {
            (Some(_), Some(_)) => Err(format!("{P}: set kv_cache_mb or kv_cache_tokens, not both")),
            (Some(0), _) | (_, Some(0)) => Err(format!(
                "{P}: kv_cache_mb and kv_cache_tokens must be positive"
            )),
            (Some(mb), None) => Ok(KvCacheSize::Megabytes(mb)),
            (None, Some(tokens)) => Ok(KvCacheSize::Tokens(tokens)),
            (None, None) => {
                let f = self.gpu_memory_fraction;
                if f > 0.0 && f <= 1.0 {
                    Ok(KvCacheSize::Fraction(f))
                } else {
                    Err(format!(
                        "{P}.gpu_memory_fraction must be above 0 and at most 1, got {f}"
                    ))
                }
            }
        }
    }

    /// Every setting checked (also in builds without CUDA, so a file is refused the same way
    /// on a laptop as on the GPU host).
    pub fn validate(&self) -> Result<(), String> {
        if !Self::BLOCK_SIZES.contains(&self.block_size) {
            return Err(format!(
                "engine.paged_attention.block_size must be one of 8, 16, 32, got {}",
                self.block_size
            ));
        }
        if !["auto", "f8e4m3"].contains(&self.cache_type.as_str()) {
            return Err(format!(
                "engine.paged_attention.cache_type must be `auto` or `f8e4m3`, got `{}`",
                self.cache_type
            ));
        }
        self.size().map(|_| ())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `auto` (CUDA when built with it, else CPU), `cpu`, or `cuda:N`.
    pub device: String,
    /// Sequences decoded together per model (continuous batching width).
    pub max_running_sequences: usize,
    /// Sequences in flight (waiting or running) per model before new requests are refused
    /// with 503 `server_overloaded`.
    pub max_queued_requests: usize,
    /// Prefix caching per model: 0 disables it; N keeps the KV caches of N finished sequences
    /// (without paged attention; with it, every full KV-cache block can be reused). Unset: on
    /// (16) with paged attention, off without: with mistral.rs 0.8.1 on CPU, concurrent requests
    /// sharing a prefix were seen to report (and run) a prompt one token shorter than the same
    /// prompt without the cache.
    pub prefix_cache_entries: Option<usize>,
    pub paged_attention: PagedAttentionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            max_running_sequences: 16,
            max_queued_requests: 256,
            prefix_cache_entries: None,
            paged_attention: PagedAttentionConfig::default(),
        }
    }
}

/// Which device the engine runs on, after resolving `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl EngineConfig {
    /// The engine-wide device.
    pub fn device_choice(&self) -> Result<DeviceChoice, String> {
        DeviceChoice::parse(&self.device)
    }

    /// The device one model runs on: its own `device`, else the engine's.
    pub fn device_for(&self, spec: &ModelSpec) -> Result<DeviceChoice, String> {
        match &spec.device {
            Some(device) => {
                DeviceChoice::parse(device).map_err(|e| format!("model `{}`: {e}", spec.id))
            }
            None => self.device_choice(),
        }
    }

    /// Every engine setting and every model's device checked.
    pub fn validate(&self, specs: &[ModelSpec]) -> Result<(), String> {
        self.device_choice()?;
        for spec in specs {
            self.device_for(spec)?;
        }
        self.paged_attention.validate()
    }

    /// Paged attention is used only on a GPU, and there by default.
    pub fn use_paged_attention(&self, device: DeviceChoice) -> bool {
        self.paged_attention.enabled && matches!(device, DeviceChoice::Cuda(_))
    }

    /// The prefix-cache size for a model on `device` (None: off).
    pub fn prefix_cache(&self, device: DeviceChoice) -> Option<usize> {
        match self.prefix_cache_entries {
            Some(0) => None,
            Some(n) => Some(n),
            None if self.use_paged_attention(device) => Some(16),
            None => None,
        }
    }
}

impl DeviceChoice {
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(device: &str) -> Result<DeviceChoice, String> {
        match device {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" if cfg!(feature = "cuda") => Ok(DeviceChoice::Cuda(0)),
            "auto" => Ok(DeviceChoice::Cpu),
            other => match other.strip_prefix("cuda") {
                Some(rest) if cfg!(feature = "cuda") => {
                    // `cuda` is `cuda:0`; anything else must be `cuda:N` (not `cuda1`).
                    let ordinal = if rest.is_empty() {
                        Some("0")
                    } else {
                        rest.strip_prefix(':')
                    };
                    ordinal
                        .and_then(|n| n.parse().ok())
                        .map(DeviceChoice::Cuda)
                        .ok_or_else(|| format!("invalid CUDA device `{other}`: use cuda:N"))
                }
                Some(_) => {
                    Err("this build has no CUDA support (build with --features cuda)".into())
                }
                None => Err(format!("unknown device `{other}`: use auto, cpu or cuda:N")),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn paged(f: impl FnOnce(&mut PagedAttentionConfig)) -> Result<KvCacheSize, String> {
        let mut config = PagedAttentionConfig::default();
        f(&mut config);
        config.validate()?;
        config.size()
    }

    #[test]
    fn kv_cache_size_is_a_fraction_by_default_or_one_absolute_size() {
        assert_eq!(paged(|_| {}), Ok(KvCacheSize::Fraction(0.9)));
        assert_eq!(
            paged(|c| c.kv_cache_mb = Some(4096)),
            Ok(KvCacheSize::Megabytes(4096))
        );
        assert_eq!(
            paged(|c| c.kv_cache_tokens = Some(65536)),
            Ok(KvCacheSize::Tokens(65536))
        );
        let both = paged(|c| {
            c.kv_cache_mb = Some(1);
            c.kv_cache_tokens = Some(1)
        });
        assert!(both.unwrap_err().contains("not both"));
        assert!(paged(|c| c.kv_cache_tokens = Some(0))
            .unwrap_err()
            .contains("positive"));
        for bad in [0.0, -0.5, 1.5, f32::NAN] {
            let err = paged(|c| c.gpu_memory_fraction = bad).unwrap_err();
            assert!(err.contains("gpu_memory_fraction"), "{bad}: {err}");
        }
    }

    #[test]
    fn block_size_and_cache_type_take_only_what_the_kernels_do() {
        for ok in [8, 16, 32] {
            assert!(paged(|c| c.block_size = ok).is_ok());
        }
        for bad in [0, 7, 64, 128] {
            assert!(paged(|c| c.block_size = bad)
                .unwrap_err()
                .contains("block_size"));
        }
        assert!(paged(|c| c.cache_type = "f8e4m3".into()).is_ok());
        assert!(paged(|c| c.cache_type = "fp8".into())
            .unwrap_err()
            .contains("cache_type"));
    }

    #[test]
    fn a_model_may_name_its_own_device() {
        let engine = EngineConfig::default();
        let mut spec = ModelSpec::parse_flag("m=/models/m.gguf").unwrap();
        assert_eq!(
            engine.device_for(&spec),
            Ok(if cfg!(feature = "cuda") {
                DeviceChoice::Cuda(0)
            } else {
                DeviceChoice::Cpu
            })
        );
        spec.device = Some("cpu".into());
        assert_eq!(engine.device_for(&spec), Ok(DeviceChoice::Cpu));
        spec.device = Some("cuda:1".into());
        let cuda = engine.device_for(&spec);
        if cfg!(feature = "cuda") {
            assert_eq!(cuda, Ok(DeviceChoice::Cuda(1)));
        } else {
            let err = cuda.unwrap_err();
            assert!(
                err.starts_with("model `m`:") && err.contains("no CUDA support"),
                "{err}"
            );
            // The whole configuration is refused before anything loads.
            assert_eq!(engine.validate(&[spec]), Err(err));
        }
        let mut spec = ModelSpec::parse_flag("m=x").unwrap();
        spec.device = Some("tpu".into());
        assert!(engine
            .device_for(&spec)
            .unwrap_err()
            .contains("unknown device"));
        if cfg!(feature = "cuda") {
            assert_eq!(DeviceChoice::parse("cuda"), Ok(DeviceChoice::Cuda(0)));
            assert!(DeviceChoice::parse("cuda1").is_err());
            assert!(DeviceChoice::parse("cuda:x").is_err());
        }
    }

    #[test]
    fn prefix_cache_is_on_with_paged_attention_unless_set() {
        let mut engine = EngineConfig::default();
        assert_eq!(engine.prefix_cache(DeviceChoice::Cpu), None);
        assert_eq!(engine.prefix_cache(DeviceChoice::Cuda(0)), Some(16));
        engine.paged_attention.enabled = false;
        assert_eq!(engine.prefix_cache(DeviceChoice::Cuda(0)), None);
        engine.prefix_cache_entries = Some(4);
        assert_eq!(engine.prefix_cache(DeviceChoice::Cpu), Some(4));
        engine.prefix_cache_entries = Some(0);
        engine.paged_attention.enabled = true;
        assert_eq!(engine.prefix_cache(DeviceChoice::Cuda(0)), None);
    }
}
