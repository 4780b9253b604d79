//! `Application`: binds the listener, starts the HTTP server, loads the models, and composes the
//! route families. Tests use exactly this (`build`, `port`, `run_until_stopped`).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpServer};
use aiaas_admin::auth::Authenticator;
use aiaas_admin::ledger::Ledger;
use aiaas_admin::policy::{Policies, PolicySettings};
use aiaas_engine::Engine;
use anyhow::Context;
use secrecy::SecretString;

use crate::admission::{Gate, Pending};
use crate::config::Config;
use crate::limits::{Limiter, RedisSettings};
use crate::metrics::Metrics;
use crate::routes;
use crate::state::AppState;

pub struct Application {
    port: u16,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    handle: ServerHandle,
    state: AppState,
    first_key: Option<SecretString>,
}

impl Application {
    /// Open (and migrate) the database, load the credential cache, bind, start serving
    /// (`/health` answers at once, `/ready` once models are loaded), and load the configured
    /// models. Returns when the models are loaded, or the first error.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let db = aiaas_admin::db::connect(&config.database)
            .await
            .context("cannot open the database (database.url)")?;
        if config.database.migrate_on_start {
            aiaas_admin::db::migrate(&db)
                .await
                .context("migrating the database")?;
        }
        aiaas_admin::jwt_keys::ensure_platform_key(&db)
            .await
            .context("creating the token signing key")?;
        let first_key = aiaas_admin::tenants::bootstrap(&db)
            .await
            .context("creating the default tenant")?
            .map(|created| {
                tracing::info!(tenant = aiaas_admin::tenants::DEFAULT_TENANT, key = %created.key.public_id,
                    "empty database: created the default tenant and its first API key");
                created.secret
            });
        let auth = if config.auth.enabled {
            Some(
                Authenticator::start(db.clone(), config.auth.clone())
                    .await
                    .context("loading API keys")?,
            )
        } else {
            tracing::warn!("auth.enabled = false: /v1 accepts requests without any credential");
            None
        };

        let policies = Policies::start(
            db.clone(),
            PolicySettings {
                refresh_interval: Duration::from_millis(config.auth.refresh_interval_ms),
                reservation_ttl: Duration::from_secs(config.limits.reservation_ttl_secs),
            },
        )
        .await
        .context("loading tenant limits and budgets")?;
        let limiter = Limiter::new(config.limits.redis_url.as_ref().map(|url| RedisSettings {
            url: url.clone(),
            prefix: config.limits.redis_prefix.clone(),
            timeout: Duration::from_millis(config.limits.redis_timeout_ms.max(1)),
            lease: Duration::from_secs(config.limits.concurrency_lease_secs.max(1)),
        }))?;
        tracing::info!(mode = limiter.mode().as_str(), "rate limits");

        let listener = TcpListener::bind(&config.server.bind)
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        let port = listener.local_addr()?.port();
        let ledger = Ledger::start(db.clone(), config.ledger.clone())
            .context("opening the usage journal (ledger.journal_dir)")?;
        if !config.ledger.enabled {
            tracing::warn!("ledger.enabled = false: usage is not recorded (nothing is metered)");
        }
        let metrics = Metrics::new().context("metrics registry")?;
        let gate = Gate {
            limiter,
            policies,
            pending: Pending::default(),
            metrics: metrics.clone(),
            ledger,
        };
        let mut state = AppState::new(
            config.limits.clone(),
            metrics,
            Duration::from_secs(config.server.keep_alive_secs),
            db,
            auth,
            gate,
        );
        state.currency = config.ledger.currency.clone();
        let server = run(listener, state.clone(), &config)?;
        tracing::info!(address = %format!("http://{}:{port}", ip_of(&config.server.bind)), "aiaas listening");

        let handle = server.handle();
        let serving = tokio::spawn(server);
        let started = Instant::now();
        match Engine::load(config.engine.clone(), config.models.clone()).await {
            Ok(engine) => {
                tracing::info!(
                    models = engine.models().len(),
                    device = %engine.device_description(),
                    seconds = started.elapsed().as_secs_f32(),
                    "models loaded, ready"
                );
                state.set_engine(engine);
            }
            Err(err) => {
                handle.stop(false).await;
                let _ = serving.await;
                return Err(anyhow::anyhow!(err).context("loading models failed"));
            }
        }
        Ok(Application {
            port,
            serving,
            handle,
            state,
            first_key,
        })
    }

    /// The API key created on the first start of an empty database (to be shown once).
    pub fn first_key(&self) -> Option<&SecretString> {
        self.first_key.as_ref()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that stops the server (gracefully with `stop(true)`).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serve until SIGTERM / SIGINT (graceful: in-flight requests get `shutdown_timeout_secs`).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.serving.await.context("server task")??;
        self.state.gate.pending.drain(Duration::from_secs(10)).await;
        self.state.gate.ledger.drain(Duration::from_secs(30)).await;
        if let Some(auth) = &self.state.auth {
            if let Err(err) = auth.flush_last_used().await {
                tracing::warn!(error = %err, "writing last_used_at at shutdown failed");
            }
        }
        Ok(())
    }
}

fn ip_of(bind: &str) -> &str {
    bind.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(bind)
}

fn run(listener: TcpListener, state: AppState, config: &Config) -> anyhow::Result<Server> {
    let limits = web::Data::new(state.limits.clone());
    let console = config.console.enabled.then(|| {
        web::Data::new(aiaas_admin::console::Console::new(
            state.db.clone(),
            config.console.clone(),
            state.currency.clone(),
            config.models.iter().map(|m| m.id.clone()).collect(),
        ))
    });
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(limits.clone())
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                let method = req.method().clone();
                let path = req.path().to_string();
                let request_id = uuid::Uuid::new_v4().simple().to_string();
                req.extensions_mut()
                    .insert(crate::admission::RequestId(format!("req_{request_id}")));
                let fut = srv.call(req);
                async move {
                    let mut res = fut.await?;
                    crate::admission::add_missing_rate_headers(&mut res).await;
                    if let Ok(value) = HeaderValue::from_str(&format!("req_{request_id}")) {
                        res.headers_mut()
                            .insert(HeaderName::from_static("x-request-id"), value);
                    }
                    tracing::info!(
                        request_id = %request_id,
                        method = %method,
                        path = %path,
                        status = res.status().as_u16(),
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "request"
                    );
                    Ok(res)
                }
            })
            .configure(routes::health::configure)
            .configure(routes::models::configure)
            .configure(routes::chat::configure)
            .configure(routes::completions::configure)
            .configure(routes::embeddings::configure)
            .configure(routes::tokenize::configure)
            .configure(routes::usage::configure)
            .configure(|cfg| {
                if let Some(console) = &console {
                    cfg.app_data(console.clone());
                    aiaas_admin::console::configure(cfg);
                }
            })
            .default_service(web::to(routes::not_found))
    })
    .listen(listener)?
    .shutdown_timeout(config.server.shutdown_timeout_secs);
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    Ok(server.run())
}
