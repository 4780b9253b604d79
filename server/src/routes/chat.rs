//! `POST /v1/chat/completions`.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use aiaas_engine::{Engine, GenerationEvent, ModelKind};
use futures::StreamExt;

use crate::admission::{insert_rate_headers, RequestId, RequestMeta};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::WireJson;
use crate::openai::chat::{ChatChoice, ChatCompletion, ChatCompletionRequest, ChunkFactory};
use crate::openai::shared::{new_id, system_fingerprint, unix_now};
use crate::routes::{start_generation, worst_case, Observed};
use crate::sse::{self, SseEvent};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/chat/completions")
            .route(web::post().to(create_chat_completion))
            .default_service(web::to(crate::routes::method_not_allowed)),
    );
}

pub async fn create_chat_completion(
    req: HttpRequest,
    caller: Authenticated,
    state: web::Data<AppState>,
    WireJson(body): WireJson<ChatCompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (request, options) = body.validate(&state.limits)?;
    let engine = state.engine()?;
    engine.require_kind(&request.model, &[ModelKind::Chat], "/v1/chat/completions")?;
    caller.require_model(&request.model)?;
    let deadline = state.queue_deadline(&req);
    let meta = RequestMeta {
        request_id: RequestId::of(&req),
        model: request.model.clone(),
        endpoint: "/v1/chat/completions",
        stream: options.stream,
        user: options.user.clone(),
    };
    let mut admitted = state
        .gate
        .admit(&caller.0, meta, worst_case(engine, &request))
        .await?;
    let model = request.model.clone();
    let observed = Observed::new(&state, "/v1/chat/completions", &model, started);
    let n = request.sampling.n;
    let mut stream =
        start_generation(&state, engine, request, deadline, &mut admitted, &observed).await?;

    if !options.stream {
        // An error here drops `admitted`, which charges what the engine metered.
        let generation = observed.track(Engine::collect(&mut stream, n).await)?;
        admitted.finish(generation.usage);
        observed.finish(200);
        state.metrics.record_usage(
            &model,
            generation.usage.prompt_tokens,
            generation.usage.completion_tokens,
        );
        let body = ChatCompletion {
            id: new_id("chatcmpl"),
            object: "chat.completion",
            created: unix_now(),
            model,
            system_fingerprint: system_fingerprint(),
            choices: generation
                .choices
                .into_iter()
                .map(|c| ChatChoice::from_engine(c, options.logprobs))
                .collect(),
            usage: generation.usage.into(),
        };
        return Ok(admitted.stamp(HttpResponse::Ok().json(body)));
    }

    let chunks = ChunkFactory {
        id: new_id("chatcmpl"),
        created: unix_now(),
        model: model.clone(),
        fingerprint: system_fingerprint(),
        include_usage: options.include_usage,
    };
    let rate = admitted.headers().copied();
    let roles: Vec<SseEvent> = (0..n).map(|i| SseEvent::json(&chunks.role(i))).collect();
    let mut first_token = true;
    let metrics = state.metrics.clone();
    let events = stream.filter_map(move |event| {
        let out = match event {
            Ok(GenerationEvent::Delta {
                index,
                text,
                logprobs,
            }) => {
                if first_token {
                    first_token = false;
                    observed.first_token();
                    admitted.first_token();
                }
                Some(SseEvent::json(&chunks.content(
                    index,
                    text,
                    logprobs.as_deref(),
                )))
            }
            Ok(GenerationEvent::ToolCalls { index, calls }) => {
                Some(SseEvent::json(&chunks.tool_calls(index, &calls)))
            }
            Ok(GenerationEvent::Finished { index, reason }) => {
                Some(SseEvent::json(&chunks.finish(index, reason)))
            }
            Ok(GenerationEvent::Usage(usage)) => {
                admitted.finish(usage);
                metrics.record_usage(&chunks.model, usage.prompt_tokens, usage.completion_tokens);
                observed.finish(200);
                options
                    .include_usage
                    .then(|| SseEvent::json(&chunks.usage(usage)))
            }
            Err(err) => {
                let err = ApiError::from(err);
                observed.finish(err.status.as_u16());
                admitted.fail(err.status.as_u16());
                Some(SseEvent::Error(err))
            }
        };
        futures::future::ready(out)
    });
    let events = futures::stream::iter(roles).chain(events);
    let mut response = sse::response(Box::pin(events), state.keep_alive);
    if let Some(rate) = &rate {
        insert_rate_headers(response.headers_mut(), rate);
    }
    Ok(response)
}
