//! Turning a `ModelSpec` into a served model: resolve the source (local GGUF file, local
//! directory, or hub id), pick the backend, build it, and probe what it can do (chat template,
//! tools, context length, embedding width).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use mistralrs::{
    EmbeddingModelBuilder, GgufModelBuilder, IsqType, ModelDType, PagedAttentionMetaBuilder,
    TextModelBuilder, TokenSource,
};

use crate::bert::{is_bert_dir, BertEmbedder};
use crate::config::{DeviceChoice, EngineConfig, KvCacheSize, ModelSpec};
use crate::types::*;
use crate::{Backend, Served, TokenizeInput};

/// Where a model comes from, after looking at the source string.
enum Source {
    GgufFile {
        dir: PathBuf,
        file: String,
    },
    BertDir(PathBuf),
    EmbeddingDir(String),
    TextDir(String),
    /// A hub repo id (mistral.rs downloads it with hf-hub) and an optional GGUF file in it.
    Hub {
        repo: String,
        gguf_file: Option<String>,
    },
}

fn load_err(spec: &ModelSpec, e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("model `{}` from `{}`: {e}", spec.id, spec.source))
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with('.')
        || s.starts_with('~')
        || s.ends_with(".gguf") && !s.contains(':')
}

async fn resolve(spec: &ModelSpec) -> Result<Source, EngineError> {
    let path = Path::new(&spec.source);
    if path.exists() {
        let path = path.canonicalize().map_err(|e| load_err(spec, e))?;
        if path.is_file() {
            let is_gguf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            if !is_gguf {
                return Err(load_err(
                    spec,
                    "a model file must be a .gguf file; pass a directory for safetensors",
                ));
            }
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Ok(Source::GgufFile { dir, file });
        }
        if is_bert_dir(&path) {
            return Ok(Source::BertDir(path));
        }
        let as_string = path.to_string_lossy().into_owned();
        if path.join("modules.json").exists() || spec.kind == Some(ModelKind::Embedding) {
            return Ok(Source::EmbeddingDir(as_string));
        }
        return Ok(Source::TextDir(as_string));
    }
    if looks_like_path(&spec.source) || !spec.source.contains('/') {
        return Err(load_err(spec, "no such file or directory"));
    }
    let (repo, gguf_file) = match spec.source.split_once(':') {
        Some((repo, file)) => (repo.to_string(), Some(file.to_string())),
        None => (spec.source.clone(), None),
    };
    if gguf_file.is_none() && spec.kind == Some(ModelKind::Embedding) {
        // Sentence-transformers BERT models are served by candle: fetch their files with hf-hub.
        if let Some(dir) = fetch_bert_from_hub(&repo)
            .await
            .map_err(|e| load_err(spec, e))?
        {
            return Ok(Source::BertDir(dir));
        }
        return Ok(Source::EmbeddingDir(repo));
    }
    Ok(Source::Hub { repo, gguf_file })
}

/// Download a BERT sentence-transformers repo into the hub cache (with a progress bar); `None`
/// when the repo is not a BERT model.
async fn fetch_bert_from_hub(repo: &str) -> Result<Option<PathBuf>, String> {
    let api = hf_hub::api::tokio::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(repo.to_string());
    let config = repo.get("config.json").await.map_err(|e| e.to_string())?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    if !is_bert_dir(&dir) {
        return Ok(None);
    }
    for file in ["tokenizer.json", "model.safetensors"] {
        repo.get(file).await.map_err(|e| e.to_string())?;
    }
    for optional in [
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "modules.json",
    ] {
        let _ = repo.get(optional).await;
    }
    Ok(Some(dir))
}

fn dtype(spec: &ModelSpec) -> Result<ModelDType, EngineError> {
    match spec.dtype.as_deref().unwrap_or("auto") {
        "auto" => Ok(ModelDType::Auto),
        "f32" => Ok(ModelDType::F32),
        "f16" => Ok(ModelDType::F16),
        "bf16" => Ok(ModelDType::BF16),
        other => Err(load_err(
            spec,
            format!("unknown dtype `{other}` (auto, f32, f16, bf16)"),
        )),
    }
}

/// The `isq` of a safetensors model; refused for sources that are already quantised (GGUF) or
/// that mistral.rs does not load (BERT embedders run on candle directly).
fn isq(spec: &ModelSpec, source: &Source) -> Result<Option<IsqType>, EngineError> {
    let Some(name) = spec.isq.as_deref() else {
        return Ok(None);
    };
    match source {
        Source::TextDir(_)
        | Source::EmbeddingDir(_)
        | Source::Hub {
            gguf_file: None, ..
        } => mistralrs::parse_isq_value(name, None)
            .map(Some)
            .map_err(|e| load_err(spec, format!("isq `{name}`: {e}"))),
        _ => Err(load_err(
            spec,
            "isq applies to safetensors models (a GGUF file is already quantised)",
        )),
    }
}

fn candle_device(device: DeviceChoice) -> Result<candle_core::Device, EngineError> {
    match device {
        DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
        DeviceChoice::Cuda(n) => {
            candle_core::Device::new_cuda(n).map_err(|e| EngineError::Load(e.to_string()))
        }
    }
}

/// The chat-template override as a `.jinja` file path (what mistral.rs accepts; it panics on
/// anything else): an existing `.jinja` file is used as is, an inline template is written to a
/// file under the temp directory.
fn chat_template_arg(spec: &ModelSpec) -> Result<Option<String>, EngineError> {
    let Some(template) = &spec.chat_template else {
        return Ok(None);
    };
    let path = Path::new(template);
    if path.is_file() {
        if !template.ends_with(".jinja") {
            return Err(load_err(spec, "a chat template file must end in .jinja"));
        }
        let path = path.canonicalize().map_err(|e| load_err(spec, e))?;
        return Ok(Some(path.to_string_lossy().into_owned()));
    }
    if !template.contains("{%") && !template.contains("{{") {
        return Err(load_err(
            spec,
            format!("chat template `{template}` is neither a file nor a Jinja template"),
        ));
    }
    let dir = std::env::temp_dir().join(format!("aiaas-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| load_err(spec, e))?;
    let file = dir.join(format!("{}.jinja", spec.id.replace(['/', '\\'], "_")));
    std::fs::write(&file, template).map_err(|e| load_err(spec, e))?;
    Ok(Some(file.to_string_lossy().into_owned()))
}

pub async fn load(
    spec: &ModelSpec,
    config: &EngineConfig,
    device: DeviceChoice,
) -> Result<Served, EngineError> {
    let source = resolve(spec).await?;
    let cpu = device == DeviceChoice::Cpu;
    let paged = if config.use_paged_attention(device) {
        let pa = &config.paged_attention;
        let memory = match pa.size().map_err(|e| load_err(spec, e))? {
            KvCacheSize::Fraction(f) => mistralrs::MemoryGpuConfig::Utilization(f),
            KvCacheSize::Megabytes(mb) => mistralrs::MemoryGpuConfig::MbAmount(mb),
            KvCacheSize::Tokens(tokens) => mistralrs::MemoryGpuConfig::ContextSize(tokens),
        };
        let cache_type = match pa.cache_type.as_str() {
            "f8e4m3" => mistralrs::PagedCacheType::F8E4M3,
            _ => mistralrs::PagedCacheType::Auto,
        };
        Some(
            PagedAttentionMetaBuilder::default()
                .with_block_size(pa.block_size)
                .with_gpu_memory(memory)
                .with_paged_cache_type(cache_type)
                .build()
                .map_err(|e| load_err(spec, e))?,
        )
    } else {
        None
    };
    // The main device of a CUDA model (mistral.rs maps its layers from there).
    let main_device = match device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Cuda(_) => Some(candle_device(device)?),
    };
    let seqs = config.max_running_sequences;
    let prefix = config.prefix_cache(device);
    let isq = isq(spec, &source)?;
    let model = match source {
        Source::BertDir(dir) => return load_bert(spec, &dir, device).await,
        Source::GgufFile { dir, file } => {
            let mut b = GgufModelBuilder::new(dir.to_string_lossy(), vec![file])
                .with_token_source(TokenSource::None)
                .with_max_num_seqs(seqs)
                .with_prefix_cache_n(prefix);
            if cpu {
                b = b.with_force_cpu();
            }
            if let Some(d) = &main_device {
                b = b.with_device(d.clone());
            }
            if let Some(t) = chat_template_arg(spec)? {
                b = b.with_jinja_explicit(t);
            }
            if let Some(p) = paged {
                b = b.with_paged_attn(p);
            }
            b.build().await.map_err(|e| load_err(spec, e))?
        }
        Source::Hub {
            repo,
            gguf_file: Some(file),
        } => {
            let mut b = GgufModelBuilder::new(repo, vec![file])
                .with_token_source(TokenSource::CacheToken)
                .with_max_num_seqs(seqs)
                .with_prefix_cache_n(prefix);
            if cpu {
                b = b.with_force_cpu();
            }
            if let Some(d) = &main_device {
                b = b.with_device(d.clone());
            }
            if let Some(t) = chat_template_arg(spec)? {
                b = b.with_jinja_explicit(t);
            }
            if let Some(p) = paged {
                b = b.with_paged_attn(p);
            }
            b.build().await.map_err(|e| load_err(spec, e))?
        }
        Source::EmbeddingDir(id) => {
            let token = if Path::new(&id).exists() {
                TokenSource::None
            } else {
                TokenSource::CacheToken
            };
            let mut b = EmbeddingModelBuilder::new(id)
                .with_token_source(token)
                .with_dtype(dtype(spec)?)
                .with_max_num_seqs(seqs);
            if cpu {
                b = b.with_force_cpu();
            }
            if let Some(d) = &main_device {
                b = b.with_device(d.clone());
            }
            if let Some(t) = isq {
                b = b.with_isq(t);
            }
            b.build().await.map_err(|e| load_err(spec, e))?
        }
        Source::TextDir(id)
        | Source::Hub {
            repo: id,
            gguf_file: None,
        } => {
            let token = if Path::new(&id).exists() {
                TokenSource::None
            } else {
                TokenSource::CacheToken
            };
            let mut b = TextModelBuilder::new(id)
                .with_token_source(token)
                .with_dtype(dtype(spec)?)
                .with_max_num_seqs(seqs)
                .with_prefix_cache_n(prefix);
            if cpu {
                b = b.with_force_cpu();
            }
            if let Some(d) = &main_device {
                b = b.with_device(d.clone());
            }
            if let Some(t) = isq {
                b = b.with_isq(t);
            }
            if let Some(t) = chat_template_arg(spec)? {
                b = b.with_jinja_explicit(t);
            }
            if let Some(p) = paged {
                b = b.with_paged_attn(p);
            }
            b.build().await.map_err(|e| load_err(spec, e))?
        }
    };
    let native = model.max_sequence_length().ok().flatten().unwrap_or(4096);
    let max_seq_len = spec.max_seq_len.map_or(native, |cap| cap.min(native));
    let is_embedding = model
        .config()
        .map(|c| matches!(c.category, mistralrs::ModelCategory::Embedding))
        .unwrap_or(false);
    let created = crate::types_now();
    if is_embedding || spec.kind == Some(ModelKind::Embedding) {
        let probe = model
            .generate_embedding("dimension probe")
            .await
            .map_err(|e| load_err(spec, e))?;
        return Ok(Served {
            info: ModelInfo {
                id: spec.id.clone(),
                kind: ModelKind::Embedding,
                max_seq_len,
                dimensions: Some(probe.len()),
                created,
                source: spec.source.clone(),
            },
            backend: Backend::Mistral(model),
            device,
            supports_tools: false,
            truncatable: true,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        });
    }
    let (has_template, supports_tools) = probe_template(&model).await;
    let kind = match spec.kind {
        Some(k) => k,
        None if has_template => ModelKind::Chat,
        None => ModelKind::Completion,
    };
    if kind == ModelKind::Chat && !has_template {
        return Err(load_err(
            spec,
            "declared as a chat model but it has no usable chat template (set `chat_template`)",
        ));
    }
    Ok(Served {
        info: ModelInfo {
            id: spec.id.clone(),
            kind,
            max_seq_len,
            dimensions: None,
            created,
            source: spec.source.clone(),
        },
        backend: Backend::Mistral(model),
        device,
        supports_tools,
        truncatable: false,
        waiting: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
    })
}

/// Does the chat template render, and does it render tools? (Tokenize a probe conversation with
/// and without a tool and compare.)
async fn probe_template(model: &mistralrs::Model) -> (bool, bool) {
    let messages = vec![Message {
        role: Role::User,
        content: "probe".into(),
        name: None,
        tool_calls: vec![],
        tool_call_id: None,
    }];
    let tool: Option<mistralrs::Tool> = serde_json::from_value(serde_json::json!({
        "type": "function",
        "function": {"name": "probe_tool_xyz", "description": "probe", "parameters": {"type": "object", "properties": {}}},
    }))
    .ok();
    let chat = || TokenizeInput::Chat {
        messages: messages.clone(),
        add_generation_prompt: true,
    };
    let Ok(plain) = crate::mistral::tokenize_with_tools(model, chat(), None).await else {
        return (false, false);
    };
    let with_tool = crate::mistral::tokenize_with_tools(model, chat(), tool.map(|t| vec![t])).await;
    (true, with_tool.is_ok_and(|t| t != plain))
}

async fn load_bert(
    spec: &ModelSpec,
    dir: &Path,
    device: DeviceChoice,
) -> Result<Served, EngineError> {
    let choice = device;
    let device = candle_device(device)?;
    let dir = dir.to_path_buf();
    let bert = tokio::task::spawn_blocking(move || BertEmbedder::load(&dir, &device))
        .await
        .map_err(|e| load_err(spec, e))??;
    Ok(Served {
        info: ModelInfo {
            id: spec.id.clone(),
            kind: ModelKind::Embedding,
            max_seq_len: bert.max_len,
            dimensions: Some(bert.dimensions),
            created: crate::types_now(),
            source: spec.source.clone(),
        },
        backend: Backend::Bert(Arc::new(bert)),
        device: choice,
        supports_tools: false,
        truncatable: false,
        waiting: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
    })
}

/// Embed with a candle BERT model on a blocking thread.
pub async fn embed_bert(
    bert: Arc<BertEmbedder>,
    served: &Served,
    input: EmbeddingInput,
) -> Result<Embeddings, EngineError> {
    let batch: Vec<Vec<u32>> = match input {
        EmbeddingInput::Texts(texts) => texts
            .iter()
            .map(|t| bert.encode(t))
            .collect::<Result<_, _>>()?,
        EmbeddingInput::Tokens(batches) => {
            let vocab = bert.vocab_size();
            if let Some(bad) = batches.iter().flatten().find(|t| **t as usize >= vocab) {
                return Err(EngineError::InvalidRequest {
                    param: "input",
                    message: format!("Token id {bad} is outside the vocabulary."),
                });
            }
            batches
        }
    };
    if let Some((i, seq)) = batch
        .iter()
        .enumerate()
        .find(|(_, s)| s.len() > bert.max_len)
    {
        return Err(EngineError::ContextLength {
            param: "input",
            message: format!(
                "Input {i} has {} tokens; model `{}` accepts at most {}.",
                seq.len(),
                served.info.id,
                bert.max_len
            ),
        });
    }
    let prompt_tokens = batch.iter().map(Vec::len).sum();
    let vectors = tokio::task::spawn_blocking(move || bert.embed(&batch))
        .await
        .map_err(EngineError::internal)??;
    Ok(Embeddings {
        vectors,
        prompt_tokens,
    })
}
