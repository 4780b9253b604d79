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

pub use config::{DeviceChoice, EngineConfig, ModelSpec, PagedAttentionConfig};
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
    /// Requests admitted but not yet producing tokens.
    pub waiting: usize,
    /// Requests producing tokens.
    pub running: usize,
}

pub(crate) enum Backend {
    Mistral(mistralrs::Model),
    Bert(Arc<BertEmbedder>),
}

pub(crate) struct Served {
    pub info: ModelInfo,
    pub backend: Backend,
    /// Whether the chat template renders `tools`.
    pub supports_tools: bool,
    /// Whether `dimensions` (Matryoshka truncation) is allowed.
    pub truncatable: bool,
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
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
        let device = config.device_choice().map_err(EngineError::Load)?;
        let mut models = HashMap::new();
        let mut order = Vec::new();
        for spec in specs {
            let served = loader::load(&spec, &config, device).await?;
            tracing::info!(model = %spec.id, kind = served.info.kind.as_str(),
                max_seq_len = served.info.max_seq_len, tools = served.supports_tools, "model loaded");
            order.push(spec.id.clone());
            models.insert(spec.id.clone(), Arc::new(served));
        }
        let device = match device {
            DeviceChoice::Cpu => "cpu".to_string(),
            DeviceChoice::Cuda(n) => format!(
                "cuda:{n} (paged attention {})",
                if config.use_paged_attention() {
                    "on"
                } else {
                    "off"
                }
            ),
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
                waiting: m.waiting.load(Ordering::Relaxed),
                running: m.running.load(Ordering::Relaxed),
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
