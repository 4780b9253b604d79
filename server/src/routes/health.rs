//! `GET /health` (alive), `GET /ready` (models loaded), `GET /metrics` (Prometheus text).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.engine() {
        Ok(engine) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "device": engine.device_description(),
            "limits": state.gate.limiter.mode().as_str(),
            // Journaled bytes the database does not have yet (0 when it is caught up).
            "ledger": {"pending_bytes": ledger_pending(&state)},
            "models": engine.models().iter().map(|m| json!({
                "id": m.id, "kind": m.kind.as_str(), "max_model_len": m.max_seq_len,
            })).collect::<Vec<_>>(),
        })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "loading"})),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(engine) = state.engine() {
        for stats in engine.stats() {
            state
                .metrics
                .queue_depth
                .with_label_values(&[&stats.model])
                .set(stats.waiting as i64);
            state
                .metrics
                .running
                .with_label_values(&[&stats.model])
                .set(stats.running as i64);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

fn ledger_pending(state: &AppState) -> u64 {
    let (journaled, written) = state.gate.ledger.progress();
    journaled.saturating_sub(written)
}
