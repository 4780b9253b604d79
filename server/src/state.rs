//! Shared application state: the engine (once loaded), request limits and metrics.

use std::sync::Arc;

use aiaas_engine::Engine;
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
}

impl AppState {
    pub fn new(limits: RequestLimits, metrics: Metrics, keep_alive: std::time::Duration) -> Self {
        Self {
            engine: Arc::new(OnceCell::new()),
            limits,
            metrics,
            keep_alive,
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
