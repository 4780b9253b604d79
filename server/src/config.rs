//! `Config`: defaults, then an optional TOML file, then `AIAAS__SECTION__KEY` environment
//! variables, then command-line flags. Passed by value into `Application::build`.

use std::path::Path;

use aiaas_admin::auth::AuthSettings;
use aiaas_admin::console::ConsoleSettings;
use aiaas_admin::db::DatabaseSettings;
use aiaas_admin::ledger::LedgerSettings;
use aiaas_engine::{EngineConfig, ModelSpec};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: RequestLimits,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub ledger: LedgerSettings,
    pub console: ConsoleSettings,
    pub engine: EngineConfig,
    pub models: Vec<ModelSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Seconds between SSE keep-alive comments while a stream waits.
    pub keep_alive_secs: u64,
    /// Log format: `text` or `json`.
    pub log_format: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            shutdown_timeout_secs: 30,
            keep_alive_secs: 10,
            log_format: "text".into(),
        }
    }
}

/// Limits enforced before the engine is touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Most inputs in one embeddings or completions request.
    pub max_batch_inputs: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Share rate limits between replicas through this Redis (`redis://host:6379/0`); unset:
    /// limits are per process. The password, if any, is never printed.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several deployments may share one Redis).
    pub redis_prefix: String,
    /// Redis connect / response timeout; past it the check falls back to per-process limits.
    pub redis_timeout_ms: u64,
    /// A concurrency slot held in Redis is freed after this long even if its replica died.
    pub concurrency_lease_secs: u64,
    /// How long a request may wait in a model's queue before it is dropped (504, not billed).
    pub queue_timeout_secs: f64,
    /// The most a request may ask for with the `x-aiaas-queue-timeout-ms` header.
    pub max_queue_timeout_secs: f64,
    /// A budget reservation older than this is presumed orphaned (its process died) and released.
    pub reservation_ttl_secs: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_messages: 1024,
            max_batch_inputs: 256,
            max_n: 8,
            redis_url: None,
            redis_prefix: "aiaas".into(),
            redis_timeout_ms: 250,
            concurrency_lease_secs: 900,
            queue_timeout_secs: 60.0,
            max_queue_timeout_secs: 600.0,
            reservation_ttl_secs: 3600,
        }
    }
}

/// Command-line overrides (the highest-priority layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub models: Vec<ModelSpec>,
}

impl Config {
    /// Layer the sources in order. `env` is the process environment (a parameter so tests can
    /// pass their own).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Overrides,
    ) -> Result<Config, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(format!("config file {} does not exist", file.display()));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Environment: AIAAS__SECTION__KEY=value, values parsed like figment's `Env` (numbers,
        // booleans and arrays as themselves, anything else as a string).
        for (key, value) in env {
            let Some(path) = key.strip_prefix("AIAAS__") else {
                continue;
            };
            let path = path
                .split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_ascii_lowercase();
            let value: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
            figment = figment.merge((path, value));
        }
        let mut config: Config = figment.extract().map_err(|e| e.to_string())?;
        if let Some(bind) = overrides.bind {
            config.server.bind = bind;
        }
        if let Some(url) = overrides.database_url {
            config.database.url = url;
        }
        for spec in overrides.models {
            config.models.retain(|m| m.id != spec.id);
            config.models.push(spec);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if !seen.insert(m.id.as_str()) {
                return Err(format!("model id `{}` is declared twice", m.id));
            }
        }
        self.engine.validate(&self.models)?;
        if !["text", "json"].contains(&self.server.log_format.as_str()) {
            return Err("server.log_format must be `text` or `json`".into());
        }
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|scheme| self.database.url.starts_with(scheme))
        {
            return Err("database.url must start with sqlite:, postgres: or postgresql:".into());
        }
        let l = &self.limits;
        if !(l.queue_timeout_secs > 0.0 && l.queue_timeout_secs <= l.max_queue_timeout_secs) {
            return Err(
                "limits.queue_timeout_secs must be positive and at most max_queue_timeout_secs"
                    .into(),
            );
        }
        if l.redis_url.as_deref().is_some_and(|u| {
            !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix:"))
        }) {
            return Err("limits.redis_url must start with redis://, rediss:// or unix:".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_bind_to_localhost_8080() {
        let c = Config::load(None, env(&[]), Overrides::default()).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert!(c.models.is_empty());
    }

    #[test]
    fn file_then_env_then_flags_each_override_the_previous() {
        let dir = std::env::temp_dir().join(format!("aiaas-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[server]\nbind = \"0.0.0.0:1\"\nkeep_alive_secs = 3\n[limits]\nmax_messages = 5\n\
             [[models]]\nid = \"a\"\nsource = \"/m/a.gguf\"\nkind = \"completion\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("AIAAS__SERVER__BIND", "127.0.0.1:2"),
                ("AIAAS__LIMITS__MAX_MESSAGES", "7"),
                ("AIAAS__DATABASE__URL", "postgres://u@db:5432/aiaas"),
                ("AIAAS__AUTH__REFRESH_INTERVAL_MS", "100"),
                ("OTHER", "x"),
            ]),
            Overrides {
                bind: Some("127.0.0.1:3".into()),
                models: vec![ModelSpec::parse_flag("b=/m/b").unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:3");
        assert_eq!(c.server.keep_alive_secs, 3);
        assert_eq!(c.limits.max_messages, 7);
        assert_eq!(c.database.url, "postgres://u@db:5432/aiaas");
        assert_eq!(c.auth.refresh_interval_ms, 100);
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[0].kind, Some(aiaas_engine::ModelKind::Completion));
        assert_eq!(c.models[1].source, "/m/b");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::load(
            None,
            env(&[("AIAAS__SERVER__NOPE", "1")]),
            Overrides::default()
        )
        .is_err());
        assert!(Config::load(
            None,
            env(&[("AIAAS__LIMITS__MAX_MESSAGES", "many")]),
            Overrides::default()
        )
        .is_err());
        assert!(ModelSpec::parse_flag("no-equals-sign").is_err());
    }
}
