//! Shared application state: the engine (once loaded), the database, the credential verifier,
//! request limits and metrics.

use std::sync::Arc;

use aiaas_admin::auth::Authenticator;
use aiaas_engine::Engine;
use sea_orm::DatabaseConnection;
use tokio::sync::OnceCell;

use crate::admission::Gate;
use crate::config::RequestLimits;
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    engine: Arc<OnceCell<Engine>>,
    pub limits: RequestLimits,
    pub metrics: Metrics,
    pub keep_alive: std::time::Duration,
    pub db: DatabaseConnection,
    /// `None` when authentication is switched off (`auth.enabled = false`).
    pub auth: Option<Authenticator>,
    /// Rate limits and budgets.
    pub gate: Gate,
    /// The currency of prices and costs.
    pub currency: String,
}

impl AppState {
    pub fn new(
        limits: RequestLimits,
        metrics: Metrics,
        keep_alive: std::time::Duration,
        db: DatabaseConnection,
        auth: Option<Authenticator>,
        gate: Gate,
    ) -> Self {
        Self {
            engine: Arc::new(OnceCell::new()),
            limits,
            metrics,
            keep_alive,
            db,
            auth,
            gate,
            currency: "usd".into(),
        }
    }

    /// When a request waiting for its model must give up: the configured default, or what the
    /// client asked for in `x-aiaas-queue-timeout-ms` (capped by the configured maximum).
    pub fn queue_deadline(&self, req: &actix_web::HttpRequest) -> std::time::Instant {
        let asked = req
            .headers()
            .get("x-aiaas-queue-timeout-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map(|ms| ms / 1000.0);
        let secs = asked
            .unwrap_or(self.limits.queue_timeout_secs)
            .min(self.limits.max_queue_timeout_secs);
        std::time::Instant::now() + std::time::Duration::from_secs_f64(secs)
    }

    /// The engine, or 503 while models are still loading.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine
            .get()
            .ok_or_else(|| ApiError::overloaded("Models are still loading; retry shortly.", 2))
    }

    pub fn is_ready(&self) -> bool {
        self.engine.initialized()
    }

    pub fn set_engine(&self, engine: Engine) {
        let _ = self.engine.set(engine);
    }
}
