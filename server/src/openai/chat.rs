//! `/v1/chat/completions` wire types and their validation into an engine request.

use aiaas_engine::{
    Choice, FinishReason, GenerateRequest, Message, OutputFormat, Prompt, Role, TokenLogprob,
    ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::shared::{refuse_unknown, SamplingFields, StreamOptions, UsageBody};
use crate::config::RequestLimits;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<WireTool>>,
    #[serde(default)]
    pub tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: WireFunctionCall,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: WireFunction,
}

#[derive(Debug, Deserialize)]
pub struct WireFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WireToolChoice {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: NamedFunction,
    },
}

#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
}

/// What the handler needs besides the engine request.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub user: Option<String>,
}

impl ChatCompletionRequest {
    pub fn validate(
        self,
        limits: &RequestLimits,
    ) -> Result<(GenerateRequest, ChatOptions), ApiError> {
        refuse_unknown(&self.extra, "")?;
        if self.model.is_empty() {
            return Err(ApiError::invalid("model", "`model` must not be empty."));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must contain at least one message.",
            ));
        }
        if self.messages.len() > limits.max_messages {
            return Err(ApiError::invalid(
                "messages",
                format!("At most {} messages are allowed.", limits.max_messages),
            ));
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
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.validate(i))
            .collect::<Result<Vec<_>, _>>()?;

        let mut sampling = self.sampling.validate(limits)?;
        sampling.max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(0), _) => {
                return Err(ApiError::invalid(
                    "max_completion_tokens",
                    "`max_completion_tokens` must be at least 1.",
                ))
            }
            (None, Some(0)) => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "`max_tokens` must be at least 1.",
                ))
            }
            (Some(m), _) | (None, Some(m)) => Some(m),
            (None, None) => None,
        };
        let logprobs = self.logprobs.unwrap_or(false);
        if let Some(k) = self.top_logprobs {
            if !logprobs {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`logprobs` must be true when `top_logprobs` is set.",
                ));
            }
            if k > 20 {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` must be between 0 and 20.",
                ));
            }
            sampling.top_logprobs = k;
        }
        sampling.logprobs = logprobs;
        if let Some(format) = self.response_format {
            sampling.format = format.validate()?;
        }
        let tools = match self.tools {
            Some(tools) => tools
                .into_iter()
                .enumerate()
                .map(|(i, t)| t.validate(i))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let tool_choice = match self.tool_choice {
            None => {
                if tools.is_empty() {
                    ToolChoice::None
                } else {
                    ToolChoice::Auto
                }
            }
            Some(choice) => {
                let choice = choice.validate()?;
                if tools.is_empty() && choice != ToolChoice::None {
                    return Err(ApiError::invalid(
                        "tool_choice",
                        "`tool_choice` requires `tools`.",
                    ));
                }
                if let ToolChoice::Function(name) = &choice {
                    if !tools.iter().any(|t| &t.name == name) {
                        return Err(ApiError::invalid(
                            "tool_choice",
                            format!("No tool named `{name}` in `tools`."),
                        ));
                    }
                }
                choice
            }
        };
        if !tools.is_empty() && sampling.n > 1 {
            return Err(ApiError::unsupported("n", "n > 1 together with tools"));
        }
        let request = GenerateRequest {
            model: self.model,
            prompt: Prompt::Chat {
                messages,
                tools,
                tool_choice,
            },
            sampling,
        };
        Ok((
            request,
            ChatOptions {
                stream,
                include_usage,
                logprobs,
                user: self.user,
            },
        ))
    }
}

impl WireMessage {
    fn validate(self, i: usize) -> Result<Message, ApiError> {
        let at = |field: &str| format!("messages[{i}].{field}");
        refuse_unknown(&self.extra, &format!("messages[{i}]."))?;
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(ApiError::invalid(
                    at("role"),
                    format!(
                    "Invalid role `{other}`: expected system, developer, user, assistant or tool."
                ),
                ))
            }
        };
        let content = match self.content {
            Some(Content::Text(s)) => s,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.into_iter().enumerate() {
                    if part.kind != "text" {
                        return Err(ApiError::unsupported(
                            &format!("messages[{i}].content[{j}].type"),
                            &format!("content parts of type `{}` (only `text`)", part.kind),
                        ));
                    }
                    match part.text {
                        Some(t) => text.push_str(&t),
                        None => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].text"),
                                "A text part needs `text`.",
                            ))
                        }
                    }
                }
                text
            }
            None if role == Role::Assistant && self.tool_calls.is_some() => String::new(),
            None => {
                return Err(ApiError::invalid(
                    at("content"),
                    "`content` is required for this message.",
                ))
            }
        };
        let tool_calls = match self.tool_calls {
            Some(calls) if role == Role::Assistant => calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect(),
            Some(_) => {
                return Err(ApiError::invalid(
                    at("tool_calls"),
                    "Only assistant messages may carry `tool_calls`.",
                ))
            }
            None => Vec::new(),
        };
        if role == Role::Tool && self.tool_call_id.is_none() {
            return Err(ApiError::invalid(
                at("tool_call_id"),
                "Tool messages need `tool_call_id`.",
            ));
        }
        Ok(Message {
            role,
            content,
            name: self.name,
            tool_calls,
            tool_call_id: self.tool_call_id,
        })
    }
}

impl WireTool {
    fn validate(self, i: usize) -> Result<ToolSpec, ApiError> {
        if self.kind != "function" {
            return Err(ApiError::unsupported(
                &format!("tools[{i}].type"),
                "only `function` tools",
            ));
        }
        if self.function.name.is_empty() {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                "A function needs a name.",
            ));
        }
        let _ = self.function.strict;
        Ok(ToolSpec {
            name: self.function.name,
            description: self.function.description,
            parameters: self
                .function
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        })
    }
}

impl WireToolChoice {
    fn validate(self) -> Result<ToolChoice, ApiError> {
        match self {
            WireToolChoice::Mode(m) => match m.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(ApiError::invalid(
                    "tool_choice",
                    format!("Invalid `tool_choice` `{other}`."),
                )),
            },
            WireToolChoice::Named { kind, function } if kind == "function" => {
                Ok(ToolChoice::Function(function.name))
            }
            WireToolChoice::Named { .. } => Err(ApiError::invalid(
                "tool_choice.type",
                "Only `function` is supported.",
            )),
        }
    }
}

impl ResponseFormat {
    fn validate(self) -> Result<OutputFormat, ApiError> {
        match self.kind.as_str() {
            "text" => Ok(OutputFormat::Text),
            "json_object" => Ok(OutputFormat::JsonObject),
            "json_schema" => {
                let spec = self.json_schema.ok_or_else(|| {
                    ApiError::invalid(
                        "response_format.json_schema",
                        "`json_schema` is required for type `json_schema`.",
                    )
                })?;
                let _ = (spec.name, spec.strict, spec.description);
                let schema = spec.schema.unwrap_or_else(|| serde_json::json!({}));
                if !schema.is_object() {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.schema",
                        "`schema` must be a JSON object.",
                    ));
                }
                Ok(OutputFormat::JsonSchema(schema))
            }
            other => Err(ApiError::invalid(
                "response_format.type",
                format!("Invalid response format `{other}`."),
            )),
        }
    }
}

// ---- responses ----

#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChoice>,
    pub usage: UsageBody,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<LogprobEntry>,
    pub refusal: Option<Vec<LogprobEntry>>,
}

#[derive(Debug, Serialize)]
pub struct LogprobEntry {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprobEntry>,
}

#[derive(Debug, Serialize)]
pub struct TopLogprobEntry {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

pub fn logprob_entries(lps: &[TokenLogprob]) -> Vec<LogprobEntry> {
    lps.iter()
        .map(|lp| LogprobEntry {
            token: lp.token.clone(),
            logprob: lp.logprob,
            bytes: lp.bytes.clone(),
            top_logprobs: lp
                .top
                .iter()
                .map(|t| TopLogprobEntry {
                    token: t.token.clone(),
                    logprob: t.logprob,
                    bytes: t.bytes.clone(),
                })
                .collect(),
        })
        .collect()
}

pub fn wire_tool_calls(calls: &[ToolCall]) -> Vec<WireToolCall> {
    calls
        .iter()
        .map(|c| WireToolCall {
            id: c.id.clone(),
            kind: "function".into(),
            function: WireFunctionCall {
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            },
        })
        .collect()
}

impl ChatChoice {
    pub fn from_engine(c: Choice, logprobs: bool) -> Self {
        let has_calls = !c.tool_calls.is_empty();
        ChatChoice {
            index: c.index,
            message: AssistantMessage {
                role: "assistant",
                content: if has_calls && c.text.is_empty() {
                    None
                } else {
                    Some(c.text)
                },
                refusal: None,
                tool_calls: has_calls.then(|| wire_tool_calls(&c.tool_calls)),
            },
            logprobs: if logprobs {
                Some(ChatLogprobs {
                    content: logprob_entries(c.logprobs.as_deref().unwrap_or(&[])),
                    refusal: None,
                })
            } else {
                None
            },
            finish_reason: c.finish_reason.as_str(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageBody>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ChunkToolCall>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkToolCall {
    pub index: usize,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: WireFunctionCall,
}

/// Builds the chunks of one stream, all sharing id / created / model / fingerprint.
pub struct ChunkFactory {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub fingerprint: String,
    pub include_usage: bool,
}

impl ChunkFactory {
    pub fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage: self.include_usage.then_some(None),
        }
    }

    pub fn role(&self, index: usize) -> ChatCompletionChunk {
        self.chunk(vec![ChunkChoice {
            index,
            delta: Delta {
                role: Some("assistant"),
                content: Some(String::new()),
                tool_calls: None,
            },
            logprobs: None,
            finish_reason: None,
        }])
    }

    pub fn content(
        &self,
        index: usize,
        text: String,
        logprobs: Option<&[TokenLogprob]>,
    ) -> ChatCompletionChunk {
        self.chunk(vec![ChunkChoice {
            index,
            delta: Delta {
                content: Some(text),
                ..Delta::default()
            },
            logprobs: logprobs.map(|l| ChatLogprobs {
                content: logprob_entries(l),
                refusal: None,
            }),
            finish_reason: None,
        }])
    }

    pub fn tool_calls(&self, index: usize, calls: &[ToolCall]) -> ChatCompletionChunk {
        let calls = calls
            .iter()
            .enumerate()
            .map(|(i, c)| ChunkToolCall {
                index: i,
                id: c.id.clone(),
                kind: "function",
                function: WireFunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            })
            .collect();
        self.chunk(vec![ChunkChoice {
            index,
            delta: Delta {
                tool_calls: Some(calls),
                ..Delta::default()
            },
            logprobs: None,
            finish_reason: None,
        }])
    }

    pub fn finish(&self, index: usize, reason: FinishReason) -> ChatCompletionChunk {
        self.chunk(vec![ChunkChoice {
            index,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(reason.as_str()),
        }])
    }

    pub fn usage(&self, usage: Usage) -> ChatCompletionChunk {
        let mut c = self.chunk(Vec::new());
        c.usage = Some(Some(usage.into()));
        c
    }
}
