//! aiaas-engine: loads models (mistral.rs for GGUF / safetensors text and Qwen3-Embedding models,
//! candle BERT for sentence-transformers) and runs requests on them behind a cheap-to-clone
//! [`Engine`] handle with our own request, event, usage and error types.

mod bert;
pub mod config;
mod loader;
mod mistral;
mod observer;
pub mod types;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::Stream;

pub use config::{DeviceChoice, EngineConfig, KvCacheSize, ModelSpec, PagedAttentionConfig};
pub use mistral::UsageMeter;
pub use types::*;

use crate::bert::BertEmbedder;

/// A stream of generation events; dropping it cancels the generation.
pub type GenerationStream =
    Pin<Box<dyn Stream<Item = Result<GenerationEvent, EngineError>> + Send>>;

/// Unix seconds now.
pub(crate) fn types_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `tokenize` counts.
#[derive(Debug, Clone)]
pub enum TokenizeInput {
    Text {
        text: String,
        add_special_tokens: bool,
    },
    Chat {
        messages: Vec<Message>,
        add_generation_prompt: bool,
    },
}

/// Load and queue figures of one model.
#[derive(Debug, Clone)]
pub struct ModelStats {
    pub model: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Whether the engine reuses cached prompt prefixes.
    pub prefix_cache: bool,
    /// Requests admitted but not yet producing tokens.
    pub waiting: usize,
    /// Requests producing tokens.
    pub running: usize,
    /// What the model's mistral.rs engine reports (none for BERT embedders).
    pub engine: Option<EngineFigures>,
}

/// A mistral.rs engine's own figures: its scheduler's sequences (a request with `n` choices is
/// `n` sequences), prefix-cache hits and, with paged attention, the KV cache.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineFigures {
    /// The dtype the model computes in (`bf16`, `f32`...; quantised weights keep their own).
    pub dtype: Option<String>,
    pub running_sequences: usize,
    pub waiting_sequences: usize,
    /// Sequences the engine has taken in since it started.
    pub sequences: usize,
    /// Of those, how many started from a cached prefix.
    pub prefix_cache_hits: usize,
    /// Prompt tokens those hits did not have to compute again.
    pub prefix_cache_hit_tokens: usize,
    /// Decode steps (forward passes over sequences past their prompt) since the engine started.
    pub decode_steps: usize,
    /// Tokens those steps decoded, one per sequence per step: over `decode_steps`, the mean
    /// decode batch (continuous batching at work).
    pub decode_tokens: usize,
    /// Present when paged attention is on.
    pub kv_cache: Option<KvCacheFigures>,
}

/// The paged-attention KV cache of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheFigures {
    pub blocks: usize,
    pub free_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
}

impl KvCacheFigures {
    pub fn used_blocks(&self) -> usize {
        self.blocks.saturating_sub(self.free_blocks)
    }

    /// Tokens the cache holds when full.
    pub fn capacity_tokens(&self) -> usize {
        self.blocks * self.block_size
    }

    /// Used share of the blocks, 0.0 to 1.0.
    pub fn usage(&self) -> f64 {
        if self.blocks == 0 {
            0.0
        } else {
            self.used_blocks() as f64 / self.blocks as f64
        }
    }
}

pub(crate) enum Backend {
    Mistral(mistralrs::Model),
    Bert(Arc<BertEmbedder>),
}

/// Whether this build runs attention with flash attention (the `flash-attn` feature).
pub const FLASH_ATTENTION: bool = cfg!(feature = "flash-attn");

pub(crate) struct Served {
    pub info: ModelInfo,
    pub backend: Backend,
    pub device: DeviceChoice,
    /// Whether the chat template renders `tools`.
    pub supports_tools: bool,
    /// Whether `dimensions` (Matryoshka truncation) is allowed.
    pub truncatable: bool,
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
}

impl Served {
    fn engine_figures(&self) -> Option<EngineFigures> {
        match &self.backend {
            Backend::Mistral(model) => mistral::engine_figures(model),
            Backend::Bert(_) => None,
        }
    }

    /// `cpu`, or `cuda:N (paged attention on)` (as the engine runs it: mistral.rs turns paged
    /// attention off for models it does not support it with).
    fn device_description(&self) -> String {
        match self.device {
            DeviceChoice::Cpu => "cpu".into(),
            DeviceChoice::Cuda(_) => {
                let paged = self.engine_figures().is_some_and(|f| f.kv_cache.is_some());
                format!(
                    "{} (paged attention {})",
                    self.device,
                    if paged { "on" } else { "off" }
                )
            }
        }
    }
}

struct Inner {
    models: HashMap<String, Arc<Served>>,
    order: Vec<String>,
    config: EngineConfig,
    device: String,
}

/// Cheap-to-clone handle to every loaded model.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Load every model (one after another; each is served by its own mistral.rs engine).
    pub async fn load(config: EngineConfig, specs: Vec<ModelSpec>) -> Result<Engine, EngineError> {
        config.validate(&specs).map_err(EngineError::Load)?;
        let mut models = HashMap::new();
        let mut order = Vec::new();
        let mut devices = Vec::new();
        for spec in specs {
            let device = config.device_for(&spec).map_err(EngineError::Load)?;
            let served = loader::load(&spec, &config, device).await?;
            let figures = served.engine_figures();
            let dtype = figures.as_ref().and_then(|f| f.dtype.clone());
            let kv = figures.and_then(|f| f.kv_cache);
            tracing::info!(model = %spec.id, kind = served.info.kind.as_str(),
                device = %device, dtype = dtype.as_deref().unwrap_or("-"),
                paged_attention = kv.is_some(), flash_attention = FLASH_ATTENTION,
                kv_cache_blocks = kv.map_or(0, |k| k.blocks),
                kv_cache_tokens = kv.map_or(0, |k| k.capacity_tokens()),
                max_seq_len = served.info.max_seq_len, tools = served.supports_tools, "model loaded");
            let described = served.device_description();
            if !devices.contains(&described) {
                devices.push(described);
            }
            order.push(spec.id.clone());
            models.insert(spec.id.clone(), Arc::new(served));
        }
        let device = if devices.is_empty() {
            config
                .device_choice()
                .map_err(EngineError::Load)?
                .to_string()
        } else {
            devices.join(", ")
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                models,
                order,
                config,
                device,
            }),
        })
    }

    pub fn device_description(&self) -> &str {
        &self.inner.device
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Loaded models, in configuration order.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.inner
            .order
            .iter()
            .filter_map(|id| self.inner.models.get(id))
            .map(|m| m.info.clone())
            .collect()
    }

    pub fn model_info(&self, id: &str) -> Option<ModelInfo> {
        self.inner.models.get(id).map(|m| m.info.clone())
    }

    pub fn stats(&self) -> Vec<ModelStats> {
        self.inner
            .order
            .iter()
            .filter_map(|id| self.inner.models.get(id))
            .map(|m| ModelStats {
                model: m.info.id.clone(),
                device: m.device.to_string(),
                prefix_cache: self.inner.config.prefix_cache(m.device).is_some(),
                waiting: m.waiting.load(Ordering::Relaxed),
                running: m.running.load(Ordering::Relaxed),
                engine: m.engine_figures(),
            })
            .collect()
    }

    fn served(&self, id: &str) -> Result<&Arc<Served>, EngineError> {
        self.inner
            .models
            .get(id)
            .ok_or_else(|| EngineError::ModelNotFound(id.to_string()))
    }

    /// 404 for an unknown model, 400 for a model of the wrong kind for this endpoint.
    pub fn require_kind(
        &self,
        id: &str,
        kinds: &[ModelKind],
        endpoint: &'static str,
    ) -> Result<(), EngineError> {
        let served = self.served(id)?;
        if kinds.contains(&served.info.kind) {
            Ok(())
        } else {
            Err(EngineError::WrongKind {
                model: id.to_string(),
                wanted: endpoint,
            })
        }
    }

    /// Generate to completion (internally streamed, so a dropped caller cancels it).
    pub async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let n = request.sampling.n;
        let mut stream = self.generate_stream(request).await?;
        mistral::collect(&mut stream, n).await
    }

    /// Start a streaming generation. Refusals (unknown model, unsupported option, prompt longer
    /// than the context) are returned here, before any event.
    pub async fn generate_stream(
        &self,
        request: GenerateRequest,
    ) -> Result<GenerationStream, EngineError> {
        self.start(request, None).await.map(|(stream, _)| stream)
    }

    /// Start a generation with a queue deadline: if it has not started producing by then it is
    /// cancelled and `QueueTimeout` comes back. The meter reads the tokens used so far at any
    /// time, also after the stream was dropped.
    pub async fn start(
        &self,
        request: GenerateRequest,
        deadline: Option<std::time::Instant>,
    ) -> Result<(GenerationStream, UsageMeter), EngineError> {
        let served = self.served(&request.model)?.clone();
        match &served.backend {
            Backend::Mistral(_) if served.info.kind != ModelKind::Embedding => {
                let max_queued = self.inner.config.max_queued_requests;
                mistral::start(served, request, max_queued, deadline).await
            }
            _ => Err(EngineError::WrongKind {
                model: request.model,
                wanted: "text generation",
            }),
        }
    }

    /// Drain a started stream into a finished generation of `n` choices.
    pub async fn collect(
        stream: &mut GenerationStream,
        n: usize,
    ) -> Result<Generation, EngineError> {
        mistral::collect(stream, n).await
    }

    /// Prompt tokens of a generation request as the engine will count them (chat messages
    /// rendered with the template, tools included).
    pub async fn count_prompt_tokens(
        &self,
        request: &GenerateRequest,
    ) -> Result<usize, EngineError> {
        let served = self.served(&request.model)?;
        let Backend::Mistral(model) = &served.backend else {
            return Err(EngineError::WrongKind {
                model: request.model.clone(),
                wanted: "text generation",
            });
        };
        mistral::count_prompt_tokens(model, &request.prompt).await
    }

    /// Input tokens of an embedding request.
    pub async fn count_embedding_tokens(
        &self,
        model: &str,
        input: &EmbeddingInput,
    ) -> Result<usize, EngineError> {
        match input {
            EmbeddingInput::Tokens(rows) => Ok(rows.iter().map(Vec::len).sum()),
            EmbeddingInput::Texts(texts) => {
                let mut total = 0;
                for text in texts {
                    let input = TokenizeInput::Text {
                        text: text.clone(),
                        add_special_tokens: true,
                    };
                    total += self.tokenize(model, input).await?.len();
                }
                Ok(total)
            }
        }
    }

    /// Embed texts or token-id inputs.
    pub async fn embed(&self, request: EmbeddingRequest) -> Result<Embeddings, EngineError> {
        let served = self.served(&request.model)?.clone();
        if served.info.kind != ModelKind::Embedding {
            return Err(EngineError::WrongKind {
                model: request.model,
                wanted: "/v1/embeddings",
            });
        }
        if let Some(d) = request.dimensions {
            let full = served.info.dimensions.unwrap_or(0);
            if !served.truncatable {
                return Err(EngineError::Unsupported {
                    param: "dimensions",
                    detail: format!(
                        "model `{}` has a fixed size of {full} dimensions",
                        served.info.id
                    ),
                });
            }
            if d > full {
                return Err(EngineError::InvalidRequest {
                    param: "dimensions",
                    message: format!("`dimensions` must be at most {full} for this model."),
                });
            }
        }
        let mut result = match &served.backend {
            Backend::Bert(bert) => loader::embed_bert(bert.clone(), &served, request.input).await?,
            Backend::Mistral(model) => mistral::embed(model, &served, request.input).await?,
        };
        if let Some(d) = request.dimensions {
            for v in &mut result.vectors {
                v.truncate(d);
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(result)
    }

    /// Token ids as the model sees them (chat input is rendered with the chat template).
    pub async fn tokenize(
        &self,
        model: &str,
        input: TokenizeInput,
    ) -> Result<Vec<u32>, EngineError> {
        let served = self.served(model)?;
        match &served.backend {
            Backend::Mistral(m) => mistral::tokenize(m, input).await,
            Backend::Bert(bert) => match input {
                TokenizeInput::Text { text, .. } => bert.encode(&text),
                TokenizeInput::Chat { .. } => Err(EngineError::InvalidRequest {
                    param: "messages",
                    message: "This model has no chat template; send `prompt`.".into(),
                }),
            },
        }
    }

    pub async fn detokenize(&self, model: &str, tokens: &[u32]) -> Result<String, EngineError> {
        let served = self.served(model)?;
        match &served.backend {
            Backend::Mistral(m) => mistral::detokenize(m, tokens.to_vec()).await,
            Backend::Bert(bert) => {
                if let Some(bad) = tokens.iter().find(|t| **t as usize >= bert.vocab_size()) {
                    return Err(EngineError::InvalidRequest {
                        param: "tokens",
                        message: format!("Token id {bad} is outside the vocabulary."),
                    });
                }
                bert.decode(tokens)
            }
        }
    }
}
