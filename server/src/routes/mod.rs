//! Route families, each with `configure`, plus the request observer that feeds metrics.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod health;
pub mod models;
pub mod tokenize;

use std::cell::Cell;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse};
use aiaas_engine::EngineError;

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
