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
        Ok(engine) => {
            let stats = engine.stats();
            let models = engine
                .models()
                .iter()
                .zip(&stats)
                .map(|(m, s)| {
                    let e = s.engine.as_ref();
                    json!({
                        "id": m.id, "kind": m.kind.as_str(), "max_model_len": m.max_seq_len,
                        "device": s.device,
                        "dtype": e.and_then(|e| e.dtype.as_deref()),
                        "paged_attention": e.is_some_and(|e| e.kv_cache.is_some()),
                        "prefix_cache": e.is_some() && s.prefix_cache,
                        "kv_cache": e.and_then(|e| e.kv_cache).map(|kv| json!({
                            "blocks": kv.blocks, "block_size": kv.block_size,
                            "tokens": kv.capacity_tokens(), "used_blocks": kv.used_blocks(),
                        })),
                    })
                })
                .collect::<Vec<_>>();
            HttpResponse::Ok().json(json!({
                "status": "ready",
                "device": engine.device_description(),
                "flash_attention": aiaas_engine::FLASH_ATTENTION,
                "limits": state.gate.limiter.mode().as_str(),
                // Journaled bytes the database does not have yet (0 when it is caught up).
                "ledger": {"pending_bytes": ledger_pending(&state)},
                "models": models,
            }))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "loading"})),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(engine) = state.engine() {
        state.metrics.observe_engine(&engine.stats());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

fn ledger_pending(state: &AppState) -> u64 {
    let (journaled, written) = state.gate.ledger.progress();
    journaled.saturating_sub(written)
}
