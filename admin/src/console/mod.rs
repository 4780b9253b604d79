//! The admin console at `/admin`: server-rendered pages (askama templates in `templates/`) for
//! operators, tenant admins and finance. Every page checks the viewer's role and tenant on the
//! server; another tenant's objects are "not found". Sessions are HttpOnly, SameSite=Strict
//! cookies; every state-changing form carries the session's CSRF token and answers with a
//! redirect (POST-redirect-GET) and a flash message; pages that show a secret once are never
//! cached. No inline script: the Content-Security-Policy forbids it.

mod auth_pages;
pub mod charts;
pub mod i18n;
mod key_pages;
mod operator_pages;
mod usage_pages;
pub mod web;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::middleware::DefaultHeaders;
use actix_web::{web as aweb, HttpRequest, HttpResponse};
use sea_orm::DatabaseConnection;

/// `[console]` in the configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the console at `/admin`.
    pub enabled: bool,
    /// A session ends this long after sign-in, whatever happens (it also ends after 2 h idle).
    pub session_hours: u64,
    /// Sign-in attempts per minute from one address (accounts also lock after 5 wrong passwords).
    pub sign_in_per_minute: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            session_hours: 12,
            sign_in_per_minute: 10,
        }
    }
}

/// What console handlers share.
pub struct Console {
    pub db: DatabaseConnection,
    pub settings: ConsoleSettings,
    /// The currency of prices and costs (`ledger.currency`).
    pub currency: String,
    /// The ids of the models this server serves (for the prices page).
    pub models: Vec<String>,
    /// Sign-in attempts per address in the current minute.
    attempts: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Console {
    pub fn new(
        db: DatabaseConnection,
        settings: ConsoleSettings,
        currency: String,
        models: Vec<String>,
    ) -> Self {
        Self {
            db,
            settings,
            currency,
            models,
            attempts: Mutex::default(),
        }
    }

    /// Count a sign-in attempt from `ip`; false when this address is over its limit.
    fn allow_attempt(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if attempts.len() > 100_000 {
            attempts.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        }
        let entry = attempts.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= Duration::from_secs(60) {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        entry.0 <= self.settings.sign_in_per_minute
    }

    fn session_lifetime(&self) -> chrono::Duration {
        chrono::Duration::hours(self.settings.session_hours.clamp(1, 24 * 30) as i64)
    }
}

/// What every console response carries: no inline script, no framing, no sniffing, no caching
/// of pages (static assets set their own caching).
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .add(("X-Frame-Options", "DENY"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add(("Cache-Control", "no-store"))
}

const CSS: &str = include_str!("../../../templates/console/static/console.css");
const JS: &str = include_str!("../../../templates/console/static/console.js");
const ICON: &str = include_str!("../../../templates/console/static/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(body)
}

async fn static_css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn static_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

async fn static_icon() -> HttpResponse {
    asset("image/svg+xml", ICON)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, web::ConsoleError> {
    Err(web::ConsoleError::NotFound(web::lang_of(&req)))
}

/// Mount the console under `/admin` (the caller adds `web::Data<Console>`).
pub fn configure(cfg: &mut aweb::ServiceConfig) {
    cfg.service(
        aweb::scope("/admin")
            .wrap(security_headers())
            .route("/static/console.css", aweb::get().to(static_css))
            .route("/static/console.js", aweb::get().to(static_js))
            .route("/static/favicon.svg", aweb::get().to(static_icon))
            .configure(auth_pages::configure)
            .configure(usage_pages::configure)
            .configure(key_pages::configure)
            .configure(operator_pages::configure)
            .default_service(aweb::to(not_found)),
    );
}
