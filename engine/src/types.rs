//! The engine's own request, output, usage and error types. No HTTP, no OpenAI wire types:
//! the server validates wire requests into these and renders these back into wire responses.

use serde::{Deserialize, Serialize};

/// What a model is served for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A text model with a chat template: serves chat completions and completions.
    Chat,
    /// A text model without a usable chat template: serves completions only.
    Completion,
    /// An embedding model: serves embeddings only.
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Completion => "completion",
            ModelKind::Embedding => "embedding",
        }
    }
}

/// Public facts about a loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub kind: ModelKind,
    /// Maximum sequence length (prompt + completion) in tokens.
    pub max_seq_len: usize,
    /// Embedding width, for embedding models.
    pub dimensions: Option<usize>,
    /// Unix seconds when the model finished loading.
    pub created: u64,
    /// Where it was loaded from, as configured.
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A tool call made by the assistant (in a request's history or in a response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON-encoded arguments, as OpenAI sends them.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    pub name: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

/// Structured-output constraint on generated text.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    JsonSchema(serde_json::Value),
}

/// The input of a generation request.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat {
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
        tool_choice: ToolChoice,
    },
    /// Raw text, no chat template.
    Text(String),
}

/// Sampling and stopping options, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// None = model default; 0.0 = greedy.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Maximum completion tokens; None = up to the context length.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// Return the sampled token's log-probability.
    pub logprobs: bool,
    /// Number of alternatives per position (0..=20).
    pub top_logprobs: usize,
    /// Number of choices (>= 1).
    pub n: usize,
    pub format: OutputFormat,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: None,
            top_p: None,
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            max_tokens: None,
            stop: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            n: 1,
            format: OutputFormat::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: Prompt,
    pub sampling: Sampling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top: Vec<TopLogprob>,
}

/// Token counts of one request, as the engine counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    pub fn total_tokens(&self) -> usize {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One finished choice of a non-streaming generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: usize,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// The result of a non-streaming generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

/// One event of a streaming generation.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// New text (and its tokens' logprobs) for one choice.
    Delta {
        index: usize,
        text: String,
        logprobs: Option<Vec<TokenLogprob>>,
    },
    /// Tool calls parsed from the choice's output.
    ToolCalls { index: usize, calls: Vec<ToolCall> },
    /// The choice is finished.
    Finished { index: usize, reason: FinishReason },
    /// Sent once, last, when every choice is finished.
    Usage(Usage),
}

/// One embedding request: texts or pre-tokenized inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// Truncate (Matryoshka) and re-normalise to this many dimensions.
    pub dimensions: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// Everything that can go wrong in the engine. The server maps each variant to HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model `{0}` is not loaded")]
    ModelNotFound(String),
    #[error("model `{model}` cannot serve {wanted}")]
    WrongKind { model: String, wanted: &'static str },
    #[error("invalid `{param}`: {message}")]
    InvalidRequest {
        param: &'static str,
        message: String,
    },
    #[error("context length exceeded in `{param}`: {message}")]
    ContextLength {
        param: &'static str,
        message: String,
    },
    #[error("`{param}` is not supported: {detail}")]
    Unsupported { param: &'static str, detail: String },
    #[error("the engine queue is full")]
    Overloaded,
    /// Still waiting for the engine when the request's queue deadline passed; nothing ran.
    #[error("queued for {waited_ms} ms without starting")]
    QueueTimeout { waited_ms: u64 },
    #[error("the request was cancelled")]
    Cancelled,
    #[error("model load failed: {0}")]
    Load(String),
    #[error("internal engine error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        EngineError::Internal(err.to_string())
    }
}
