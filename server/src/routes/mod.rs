//! Route families, each with `configure`, plus the request observer that feeds metrics.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod health;
pub mod models;
pub mod tokenize;
pub mod usage;

use std::cell::Cell;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse};
use aiaas_engine::{Engine, EngineError, GenerateRequest, GenerationStream};

use crate::admission::{Admitted, Demand};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Default service: unknown routes get OpenAI's 404 JSON.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::route_not_found(req.method().as_str(), req.path()))
}

/// Known route, wrong method: 405 JSON.
pub async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(
        req.method().as_str(),
        req.path(),
    ))
}

/// Records one request's outcome in metrics exactly once: status, latency, time to first token.
/// Dropped without an outcome (client went away mid-stream) it records status 499.
pub struct Observed {
    metrics: Metrics,
    route: &'static str,
    model: String,
    started: Instant,
    first_token: Cell<bool>,
    done: Cell<bool>,
}

impl Observed {
    pub fn new(state: &AppState, route: &'static str, model: &str, started: Instant) -> Self {
        Self {
            metrics: state.metrics.clone(),
            route,
            model: model.to_string(),
            started,
            first_token: Cell::new(false),
            done: Cell::new(false),
        }
    }

    /// Pass a result through, recording an error as this request's outcome.
    pub fn track<T>(&self, result: Result<T, EngineError>) -> Result<T, ApiError> {
        result.map_err(|e| {
            let e = ApiError::from(e);
            self.finish(e.status.as_u16());
            e
        })
    }

    pub fn first_token(&self) {
        if !self.first_token.replace(true) {
            self.metrics
                .ttft
                .with_label_values(&[&self.model])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }

    pub fn finish(&self, status: u16) {
        if self.done.replace(true) {
            return;
        }
        let status = status.to_string();
        self.metrics
            .requests
            .with_label_values(&[self.route, &self.model, &status])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[self.route, &self.model])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish(499);
    }
}

/// The worst case of a generation in tokens, for admission: its prompt (counted with the model's
/// tokenizer and chat template) plus, per choice, `max_tokens` or the rest of the context.
pub async fn worst_case(engine: &Engine, request: &GenerateRequest) -> Result<Demand, ApiError> {
    let context = engine
        .model_info(&request.model)
        .map_or(0, |m| m.max_seq_len);
    let prompt = engine.count_prompt_tokens(request).await?;
    let room = context.saturating_sub(prompt);
    let each = request.sampling.max_tokens.map_or(room, |m| m.min(room));
    Ok(Demand {
        prompt: prompt as u64,
        completion: (request.sampling.n * each) as u64,
    })
}

/// Submit an admitted generation to the engine with its queue deadline. A refusal or a timeout
/// gives the admission back (nothing ran, nothing is charged) and is counted in metrics.
pub async fn start_generation(
    state: &AppState,
    engine: &Engine,
    request: GenerateRequest,
    deadline: Instant,
    admitted: &mut Admitted,
    observed: &Observed,
) -> Result<GenerationStream, ApiError> {
    let submitted = Instant::now();
    let model = request.model.clone();
    match engine.start(request, Some(deadline)).await {
        Ok((stream, meter)) => {
            state
                .metrics
                .queue_wait
                .with_label_values(&[&model])
                .observe(submitted.elapsed().as_secs_f64());
            admitted.watch(meter);
            Ok(stream)
        }
        Err(err) => {
            match &err {
                EngineError::Overloaded => {
                    tracing::warn!(model = %model, "engine queue full: request refused");
                    state.metrics.refused("queue_full");
                }
                EngineError::QueueTimeout { waited_ms } => {
                    tracing::warn!(model = %model, waited_ms, "queue deadline passed: request dropped");
                    state.metrics.refused("queue_timeout");
                }
                _ => {}
            }
            let err = ApiError::from(err);
            admitted.abandon(err.status.as_u16());
            observed.finish(err.status.as_u16());
            Err(err)
        }
    }
}
