//! Sentence-transformers BERT models (all-MiniLM-L6-v2, BGE, E5) on candle-transformers:
//! tokenize, run the encoder, pool (mean or CLS, from `1_Pooling/config.json`), L2-normalise.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::Tokenizer;

use crate::types::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pooling: Pooling,
    pub max_len: usize,
    pub dimensions: usize,
}

fn load_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("{what}: {e}"))
}

/// Is `dir` a BERT-family sentence-transformers model?
pub fn is_bert_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(cfg) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let model_type = cfg["model_type"].as_str().unwrap_or_default();
    let arch_is_bert = cfg["architectures"].as_array().is_some_and(|a| {
        a.iter()
            .any(|v| v.as_str().is_some_and(|s| s.starts_with("Bert")))
    });
    model_type == "bert" || arch_is_bert
}

impl BertEmbedder {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EngineError> {
        let cfg_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load_err("config.json", e))?;
        let config: BertConfig =
            serde_json::from_str(&cfg_text).map_err(|e| load_err("config.json", e))?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(EngineError::Load(format!(
                "{} has no model.safetensors",
                dir.display()
            )));
        }
        // SAFETY-free: mmap is the only unsafe path, so read the file instead.
        let bytes = std::fs::read(&weights).map_err(|e| load_err("model.safetensors", e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
            .map_err(|e| load_err("model.safetensors", e))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_err("BERT weights", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err("tokenizer.json", e))?;
        // sentence-transformers tokenizers often pad every input to a fixed length; we pad per
        // batch with an attention mask instead, and refuse over-long inputs rather than cut them.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_err("tokenizer.json", e))?;
        let pooling = read_pooling(dir);
        let max_len = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            pooling,
            max_len,
            dimensions: config.hidden_size,
        })
    }

    /// Token ids of `text` with the model's special tokens, not truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(EngineError::internal)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(EngineError::internal)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Embed a batch of token sequences (each at most `max_len`), pooled and L2-normalised.
    pub fn embed(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let longest = batch.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for seq in batch {
            ids.extend(seq.iter().copied());
            ids.extend(std::iter::repeat_n(0u32, longest - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - seq.len()));
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let shape = (batch.len(), longest);
            let ids = Tensor::from_vec(ids, shape, &self.device)?;
            let mask = Tensor::from_vec(mask, shape, &self.device)?;
            let types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (b, t, h)
            let pooled = match self.pooling {
                Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
                Pooling::Mean => {
                    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (b, t, 1)
                    let summed = hidden.broadcast_mul(&m)?.sum(1)?; // (b, h)
                    let counts = m.sum(1)?; // (b, 1)
                    summed.broadcast_div(&counts)?
                }
            };
            let norms = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f32::MAX)?;
            pooled.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(EngineError::internal)
    }
}

fn read_pooling(dir: &Path) -> Pooling {
    let cfg = std::fs::read_to_string(dir.join("1_Pooling/config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    match cfg {
        Some(c) if c["pooling_mode_cls_token"].as_bool() == Some(true) => Pooling::Cls,
        _ => Pooling::Mean,
    }
}
