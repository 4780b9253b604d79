//! `/v1/embeddings` wire types and validation.

use aiaas_engine::{EmbeddingInput, EmbeddingRequest};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::shared::refuse_unknown;
use crate::config::RequestLimits;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct CreateEmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInputWire,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInputWire {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

impl CreateEmbeddingRequest {
    pub fn validate(
        self,
        limits: &RequestLimits,
    ) -> Result<(EmbeddingRequest, EncodingFormat, Option<String>), ApiError> {
        refuse_unknown(&self.extra, "")?;
        let format = match self.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(ApiError::invalid(
                    "encoding_format",
                    format!("Invalid `encoding_format` `{other}`: expected `float` or `base64`."),
                ))
            }
        };
        let input = match self.input {
            EmbeddingInputWire::One(s) => EmbeddingInput::Texts(vec![s]),
            EmbeddingInputWire::Many(v) => EmbeddingInput::Texts(v),
            EmbeddingInputWire::Tokens(t) => EmbeddingInput::Tokens(vec![t]),
            EmbeddingInputWire::TokenBatches(t) => EmbeddingInput::Tokens(t),
        };
        let count = match &input {
            EmbeddingInput::Texts(v) => {
                if v.iter().any(String::is_empty) {
                    return Err(ApiError::invalid(
                        "input",
                        "`input` must not contain empty strings.",
                    ));
                }
                v.len()
            }
            EmbeddingInput::Tokens(v) => {
                if v.iter().any(Vec::is_empty) {
                    return Err(ApiError::invalid(
                        "input",
                        "`input` must not contain empty token lists.",
                    ));
                }
                v.len()
            }
        };
        if count == 0 {
            return Err(ApiError::invalid("input", "`input` must not be empty."));
        }
        if count > limits.max_batch_inputs {
            return Err(ApiError::invalid(
                "input",
                format!("At most {} inputs are allowed.", limits.max_batch_inputs),
            ));
        }
        if self.dimensions == Some(0) {
            return Err(ApiError::invalid(
                "dimensions",
                "`dimensions` must be at least 1.",
            ));
        }
        Ok((
            EmbeddingRequest {
                model: self.model,
                input,
                dimensions: self.dimensions,
            },
            format,
            self.user,
        ))
    }
}

#[derive(Debug, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingVector {
    /// base64 of the little-endian f32 bytes, as OpenAI encodes it.
    pub fn encode(v: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => EmbeddingVector::Float(v),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}
