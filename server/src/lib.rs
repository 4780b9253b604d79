//! aiaas server: OpenAI-compatible `/v1` API, configuration, and start-up.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod routes;
pub mod sse;
pub mod startup;
pub mod state;

pub use aiaas_engine as engine;
pub use config::Config;
pub use startup::Application;
