//! Pieces shared by the chat and completions wire types: stop sequences, sampling fields,
//! unknown-field refusal, usage, and ids.

use aiaas_engine::{Sampling, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::RequestLimits;
use crate::error::ApiError;

/// `stop`: a string or a list of up to 4 strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Result<Vec<String>, ApiError> {
        let stops = match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        };
        if stops.len() > 4 {
            return Err(ApiError::invalid(
                "stop",
                "At most 4 stop sequences are allowed.",
            ));
        }
        if stops.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop",
                "Stop sequences must not be empty.",
            ));
        }
        Ok(stops)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Sampling fields common to chat and completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Option<Stop>,
    pub n: Option<usize>,
}

impl SamplingFields {
    /// Validate ranges (as OpenAI documents them) into engine sampling options.
    pub fn validate(self, limits: &RequestLimits) -> Result<Sampling, ApiError> {
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature",
                    "`temperature` must be between 0 and 2.",
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "top_p",
                    "`top_p` must be greater than 0 and at most 1.",
                ));
            }
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = v {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(ApiError::invalid(
                        name,
                        format!("`{name}` must be between -2 and 2."),
                    ));
                }
            }
        }
        let n = self.n.unwrap_or(1);
        if n == 0 || n > limits.max_n {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be between 1 and {}.", limits.max_n),
            ));
        }
        let stop = match self.stop {
            Some(s) => s.into_vec()?,
            None => Vec::new(),
        };
        Ok(Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed.map(|s| s as u64),
            presence_penalty: self.presence_penalty.filter(|v| *v != 0.0),
            frequency_penalty: self.frequency_penalty.filter(|v| *v != 0.0),
            stop,
            n,
            ..Sampling::default()
        })
    }
}

/// Refuse any field we do not implement. `allowed_null_or_default` lists known OpenAI fields we
/// accept only with their no-op value; anything else unknown is refused by name.
pub fn refuse_unknown(extra: &Map<String, Value>, prefix: &str) -> Result<(), ApiError> {
    for (key, value) in extra {
        let noop = match key.as_str() {
            // Accepted and recorded elsewhere, or no-ops with these values.
            "store" | "parallel_tool_calls" => matches!(value, Value::Null | Value::Bool(_)),
            "metadata" | "logit_bias" => {
                value.is_null() || value.as_object().is_some_and(|m| m.is_empty())
            }
            "service_tier" => value.is_null() || value == "auto" || value == "default",
            _ => value.is_null(),
        };
        if !noop {
            let param = format!("{prefix}{key}");
            return Err(ApiError::unsupported(
                &param,
                "this server does not implement it",
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct UsageBody {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl From<Usage> for UsageBody {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens(),
        }
    }
}

/// A fresh id with OpenAI's prefix style: `chatcmpl-…`, `cmpl-…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Identifies the serving build, as OpenAI's `system_fingerprint` does.
pub fn system_fingerprint() -> String {
    format!("fp_aiaas_{}", env!("CARGO_PKG_VERSION").replace('.', "_"))
}
