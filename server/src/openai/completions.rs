//! `/v1/completions` wire types (legacy text completions) and their validation.

use aiaas_engine::{FinishReason, GenerateRequest, Prompt, TokenLogprob, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::shared::{refuse_unknown, SamplingFields, StreamOptions, UsageBody};
use crate::config::RequestLimits;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Number of top alternatives per token (0..=5), as in OpenAI's legacy API.
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub best_of: Option<usize>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Clone)]
pub struct CompletionOptions {
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub user: Option<String>,
}

impl CompletionRequest {
    /// One engine request per prompt (choices are numbered prompt-major, as OpenAI does).
    pub fn validate(
        self,
        limits: &RequestLimits,
    ) -> Result<(Vec<GenerateRequest>, CompletionOptions), ApiError> {
        refuse_unknown(&self.extra, "")?;
        if self.model.is_empty() {
            return Err(ApiError::invalid("model", "`model` must not be empty."));
        }
        let prompts = match self.prompt {
            PromptInput::One(p) => vec![p],
            PromptInput::Many(p) => p,
            PromptInput::Tokens(_) | PromptInput::TokenBatches(_) => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "token-id prompts (send text)",
                ))
            }
        };
        if prompts.is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
        }
        if prompts.len() > limits.max_batch_inputs {
            return Err(ApiError::invalid(
                "prompt",
                format!("At most {} prompts are allowed.", limits.max_batch_inputs),
            ));
        }
        if self.echo.unwrap_or(false) {
            return Err(ApiError::unsupported("echo", "echoing the prompt"));
        }
        if self.suffix.is_some() {
            return Err(ApiError::unsupported("suffix", "insertion (suffix)"));
        }
        let stream = self.stream.unwrap_or(false);
        let include_usage = match &self.stream_options {
            Some(opts) => {
                if !stream {
                    return Err(ApiError::invalid(
                        "stream_options",
                        "`stream_options` is only allowed when `stream` is true.",
                    ));
                }
                refuse_unknown(&opts.extra, "stream_options.")?;
                opts.include_usage.unwrap_or(false)
            }
            None => false,
        };
        let mut sampling = self.sampling.validate(limits)?;
        if let Some(best_of) = self.best_of {
            if best_of != sampling.n {
                return Err(ApiError::unsupported("best_of", "best_of different from n"));
            }
        }
        sampling.max_tokens = match self.max_tokens {
            Some(0) => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "`max_tokens` must be at least 1.",
                ))
            }
            // OpenAI's legacy default.
            None => Some(16),
            m => m,
        };
        if let Some(k) = self.logprobs {
            if k > 5 {
                return Err(ApiError::invalid(
                    "logprobs",
                    "`logprobs` must be between 0 and 5.",
                ));
            }
            sampling.logprobs = true;
            sampling.top_logprobs = k;
        }
        let requests = prompts
            .into_iter()
            .map(|p| GenerateRequest {
                model: self.model.clone(),
                prompt: Prompt::Text(p),
                sampling: sampling.clone(),
            })
            .collect();
        let options = CompletionOptions {
            stream,
            include_usage,
            logprobs: self.logprobs.is_some(),
            user: self.user,
        };
        Ok((requests, options))
    }
}

#[derive(Debug, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageBody>>,
}

#[derive(Debug, Serialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Legacy logprobs; `offset` is where this piece starts in the choice's text.
    pub fn from_tokens(lps: &[TokenLogprob], mut offset: usize) -> Self {
        let mut out = CompletionLogprobs::default();
        for lp in lps {
            out.tokens.push(lp.token.clone());
            out.token_logprobs.push(lp.logprob);
            out.top_logprobs.push(
                lp.top
                    .iter()
                    .map(|t| (t.token.clone(), t.logprob))
                    .collect(),
            );
            out.text_offset.push(offset);
            offset += lp.token.len();
        }
        out
    }
}

pub struct CompletionFactory {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub fingerprint: String,
}

impl CompletionFactory {
    pub fn body(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<Option<UsageBody>>,
    ) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage,
        }
    }

    pub fn delta(
        &self,
        index: usize,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        include_usage: bool,
    ) -> Completion {
        self.body(
            vec![CompletionChoice {
                text,
                index,
                logprobs,
                finish_reason: None,
            }],
            include_usage.then_some(None),
        )
    }

    pub fn finish(&self, index: usize, reason: FinishReason, include_usage: bool) -> Completion {
        self.body(
            vec![CompletionChoice {
                text: String::new(),
                index,
                logprobs: None,
                finish_reason: Some(reason.as_str()),
            }],
            include_usage.then_some(None),
        )
    }

    pub fn usage(&self, usage: Usage) -> Completion {
        self.body(Vec::new(), Some(Some(usage.into())))
    }
}
