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
        })
    }
}

/// Paged attention (CUDA / Metal builds only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagedAttentionConfig {
    /// On by default when built with `cuda`; ignored on CPU.
    pub enabled: bool,
    /// Tokens per KV-cache block.
    pub block_size: usize,
    /// Fraction of free GPU memory given to the KV cache.
    pub gpu_memory_fraction: f32,
}

impl Default for PagedAttentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            block_size: 32,
            gpu_memory_fraction: 0.9,
        }
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
    /// Prefix-cache entries kept per model (0 disables). Off by default: with mistral.rs 0.8.1
    /// on CPU, concurrent requests sharing a prefix were seen to report (and run) a prompt one
    /// token shorter than the same prompt without the cache.
    pub prefix_cache_entries: usize,
    pub paged_attention: PagedAttentionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            max_running_sequences: 16,
            max_queued_requests: 256,
            prefix_cache_entries: 0,
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
    pub fn device_choice(&self) -> Result<DeviceChoice, String> {
        match self.device.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" if cfg!(feature = "cuda") => Ok(DeviceChoice::Cuda(0)),
            "auto" => Ok(DeviceChoice::Cpu),
            other => match other.strip_prefix("cuda") {
                Some(rest) if cfg!(feature = "cuda") => {
                    let ordinal = rest.strip_prefix(':').unwrap_or("0");
                    ordinal
                        .parse()
                        .map(DeviceChoice::Cuda)
                        .map_err(|_| format!("invalid CUDA device `{other}`"))
                }
                Some(_) => {
                    Err("this build has no CUDA support (build with --features cuda)".into())
                }
                None => Err(format!("unknown device `{other}`: use auto, cpu or cuda:N")),
            },
        }
    }

    /// Paged attention is used only on a GPU, and there by default.
    pub fn use_paged_attention(&self) -> bool {
        self.paged_attention.enabled && matches!(self.device_choice(), Ok(DeviceChoice::Cuda(_)))
    }
}
