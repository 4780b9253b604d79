//! Shared application state: the engine (once loaded), the database, the credential verifier,
//! request limits and metrics.

use std::sync::Arc;

use aiaas_admin::auth::Authenticator;
use aiaas_engine::Engine;
use sea_orm::DatabaseConnection;
use tokio::sync::OnceCell;

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
}

impl AppState {
    pub fn new(
        limits: RequestLimits,
        metrics: Metrics,
        keep_alive: std::time::Duration,
        db: DatabaseConnection,
        auth: Option<Authenticator>,
    ) -> Self {
        Self {
            engine: Arc::new(OnceCell::new()),
            limits,
            metrics,
            keep_alive,
            db,
            auth,
        }
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
