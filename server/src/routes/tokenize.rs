//! `POST /tokenize` and `POST /detokenize` (vLLM-compatible shapes), for counting tokens.

use actix_web::{web, HttpResponse};
use aiaas_engine::TokenizeInput;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::WireJson;
use crate::openai::chat::WireMessage;
use crate::openai::shared::refuse_unknown;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/tokenize")
            .route(web::post().to(tokenize))
            .default_service(web::to(crate::routes::method_not_allowed)),
    )
    .service(
        web::resource("/detokenize")
            .route(web::post().to(detokenize))
            .default_service(web::to(crate::routes::method_not_allowed)),
    );
}

#[derive(Deserialize)]
pub struct TokenizeRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<WireMessage>>,
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
pub struct DetokenizeRequest {
    pub model: String,
    pub tokens: Vec<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub async fn tokenize(
    caller: Authenticated,
    state: web::Data<AppState>,
    WireJson(body): WireJson<TokenizeRequest>,
) -> Result<HttpResponse, ApiError> {
    refuse_unknown(&body.extra, "")?;
    let input = match (body.prompt, body.messages) {
        (Some(prompt), None) => TokenizeInput::Text {
            text: prompt,
            add_special_tokens: body.add_special_tokens.unwrap_or(true),
        },
        (None, Some(messages)) => {
            let wire = crate::openai::chat::ChatCompletionRequest {
                model: body.model.clone(),
                messages,
                stream: None,
                stream_options: None,
                max_tokens: None,
                max_completion_tokens: None,
                logprobs: None,
                top_logprobs: None,
                response_format: None,
                tools: None,
                tool_choice: None,
                user: None,
                sampling: Default::default(),
                extra: Map::new(),
            };
            let (request, _) = wire.validate(&state.limits)?;
            let aiaas_engine::Prompt::Chat { messages, .. } = request.prompt else {
                return Err(ApiError::internal());
            };
            TokenizeInput::Chat {
                messages,
                add_generation_prompt: body.add_generation_prompt.unwrap_or(true),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "Send exactly one of `prompt` or `messages`.",
            ))
        }
    };
    let engine = state.engine()?;
    if engine.model_info(&body.model).is_some() {
        caller.require_model(&body.model)?;
    }
    let tokens = engine.tokenize(&body.model, input).await?;
    let max_model_len = engine.model_info(&body.model).map(|m| m.max_seq_len);
    Ok(HttpResponse::Ok().json(json!({
        "count": tokens.len(),
        "max_model_len": max_model_len,
        "tokens": tokens,
    })))
}

pub async fn detokenize(
    caller: Authenticated,
    state: web::Data<AppState>,
    WireJson(body): WireJson<DetokenizeRequest>,
) -> Result<HttpResponse, ApiError> {
    refuse_unknown(&body.extra, "")?;
    let engine = state.engine()?;
    if engine.model_info(&body.model).is_some() {
        caller.require_model(&body.model)?;
    }
    let text = engine.detokenize(&body.model, &body.tokens).await?;
    Ok(HttpResponse::Ok().json(json!({ "prompt": text })))
}
