//! `POST /v1/completions` (legacy text completions; several prompts run concurrently).

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use aiaas_engine::{Engine, GenerationEvent, ModelKind, Usage};
use futures::StreamExt;

use crate::admission::{insert_rate_headers, Demand, RequestId, RequestMeta};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::WireJson;
use crate::openai::completions::{
    CompletionChoice, CompletionFactory, CompletionLogprobs, CompletionRequest,
};
use crate::openai::shared::{new_id, system_fingerprint, unix_now};
use crate::routes::{start_generation, worst_case, Observed};
use crate::sse::{self, SseEvent};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/completions")
            .route(web::post().to(create_completion))
            .default_service(web::to(crate::routes::method_not_allowed)),
    );
}

pub async fn create_completion(
    req: HttpRequest,
    caller: Authenticated,
    state: web::Data<AppState>,
    WireJson(body): WireJson<CompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (requests, options) = body.validate(&state.limits)?;
    let engine = state.engine()?;
    let model = requests[0].model.clone();
    engine.require_kind(
        &model,
        &[ModelKind::Chat, ModelKind::Completion],
        "/v1/completions",
    )?;
    caller.require_model(&model)?;
    let deadline = state.queue_deadline(&req);
    let estimate = async {
        let mut total = Demand::default();
        for request in &requests {
            total = total + worst_case(engine, request).await?;
        }
        Ok(total)
    };
    let meta = RequestMeta {
        request_id: RequestId::of(&req),
        model: model.clone(),
        endpoint: "/v1/completions",
        stream: options.stream,
        user: options.user.clone(),
    };
    let mut admitted = state.gate.admit(&caller.0, meta, estimate).await?;
    let observed = Observed::new(&state, "/v1/completions", &model, started);
    let n = requests[0].sampling.n;
    let factory = CompletionFactory {
        id: new_id("cmpl"),
        created: unix_now(),
        model: model.clone(),
        fingerprint: system_fingerprint(),
    };

    // Start every prompt before the first byte, so refusals are still plain errors (and one
    // refusal gives back the whole admission).
    let prompts = requests.len();
    let mut streams = Vec::with_capacity(prompts);
    for request in requests {
        let stream =
            start_generation(&state, engine, request, deadline, &mut admitted, &observed).await?;
        streams.push(stream);
    }

    if !options.stream {
        let results =
            futures::future::join_all(streams.iter_mut().map(|stream| Engine::collect(stream, n)))
                .await;
        let mut choices = Vec::new();
        let mut usage = Usage::default();
        for (p, result) in results.into_iter().enumerate() {
            let generation = observed.track(result)?;
            usage.prompt_tokens += generation.usage.prompt_tokens;
            usage.completion_tokens += generation.usage.completion_tokens;
            for c in generation.choices {
                choices.push(CompletionChoice {
                    index: p * n + c.index,
                    logprobs: options.logprobs.then(|| {
                        CompletionLogprobs::from_tokens(c.logprobs.as_deref().unwrap_or(&[]), 0)
                    }),
                    text: c.text,
                    finish_reason: Some(c.finish_reason.as_str()),
                });
            }
        }
        admitted.finish(usage);
        observed.finish(200);
        state
            .metrics
            .record_usage(&model, usage.prompt_tokens, usage.completion_tokens);
        let body = factory.body(choices, Some(Some(usage.into())));
        return Ok(admitted.stamp(HttpResponse::Ok().json(body)));
    }

    let rate = admitted.headers().copied();
    let merged = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(p, s)| s.map(move |e| (p, e)).boxed_local()),
    );
    let mut total = Usage::default();
    let mut finished_prompts = 0;
    let mut offsets = vec![0usize; prompts * n];
    let mut first_token = true;
    let metrics = state.metrics.clone();
    let include_usage = options.include_usage;
    let logprobs = options.logprobs;
    let events = merged.filter_map(move |(p, event)| {
        let out = match event {
            Ok(GenerationEvent::Delta {
                index,
                text,
                logprobs: lps,
            }) => {
                if first_token {
                    first_token = false;
                    observed.first_token();
                    admitted.first_token();
                }
                let i = p * n + index;
                let lp = logprobs.then(|| {
                    CompletionLogprobs::from_tokens(lps.as_deref().unwrap_or(&[]), offsets[i])
                });
                offsets[i] += text.len();
                Some(SseEvent::json(&factory.delta(i, text, lp, include_usage)))
            }
            Ok(GenerationEvent::ToolCalls { .. }) => None,
            Ok(GenerationEvent::Finished { index, reason }) => Some(SseEvent::json(
                &factory.finish(p * n + index, reason, include_usage),
            )),
            Ok(GenerationEvent::Usage(usage)) => {
                total.prompt_tokens += usage.prompt_tokens;
                total.completion_tokens += usage.completion_tokens;
                finished_prompts += 1;
                if finished_prompts == prompts {
                    admitted.finish(total);
                    metrics.record_usage(
                        &factory.model,
                        total.prompt_tokens,
                        total.completion_tokens,
                    );
                    observed.finish(200);
                    include_usage.then(|| SseEvent::json(&factory.usage(total)))
                } else {
                    None
                }
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
    let mut response = sse::response(Box::pin(events), state.keep_alive);
    if let Some(rate) = &rate {
        insert_rate_headers(response.headers_mut(), rate);
    }
    Ok(response)
}
