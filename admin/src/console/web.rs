//! What every console page shares: the signed-in `Viewer` (an extractor that reads the session
//! cookie), the page chrome (`Page`: language, navigation, flash message, CSRF token), CSRF
//! checks, flash cookies, the HTML error type, and small response helpers.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use chrono_tz::Tz;
use subtle::ConstantTimeEq;

use super::i18n::{Lang, Tr};
use super::Console;
use crate::entity::{console_session, user};
use crate::error::AdminError;
use crate::users::Role;
use crate::Scope;

pub const SESSION_COOKIE: &str = "aiaas_session";
pub const FLASH_COOKIE: &str = "aiaas_flash";
pub const LANG_COOKIE: &str = "aiaas_lang";
pub const TZ_COOKIE: &str = "aiaas_tz";

/// The viewer's language: the `aiaas_lang` cookie, else `Accept-Language`.
pub fn lang_of(req: &HttpRequest) -> Lang {
    req.cookie(LANG_COOKIE)
        .and_then(|c| Lang::parse(c.value()))
        .unwrap_or_else(|| {
            Lang::from_accept_language(
                req.headers()
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        })
}

/// The viewer's time zone: the `aiaas_tz` cookie (set by the console's script from the
/// browser), else UTC.
pub fn tz_of(req: &HttpRequest) -> Tz {
    req.cookie(TZ_COOKIE)
        .and_then(|c| c.value().parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

/// The client's address, for sign-in limits, the session list and the audit log. The peer
/// address (a proxy in front must be trusted explicitly; none is by default).
pub fn client_ip(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_string())
}

/// Errors of console pages: rendered as HTML pages, never as JSON.
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in: go to the sign-in page, then come back to `next`.
    SignIn {
        next: String,
    },
    /// Missing, unknown, or another tenant's: indistinguishable.
    NotFound(Lang),
    /// CSRF token missing or wrong.
    Forbidden(Lang),
    Internal(Lang, String),
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::SignIn { .. } => write!(f, "not signed in"),
            ConsoleError::NotFound(_) => write!(f, "not found"),
            ConsoleError::Forbidden(_) => write!(f, "CSRF check failed"),
            ConsoleError::Internal(_, cause) => write!(f, "console error: {cause}"),
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    lang: &'static str,
    t: &'static Tr,
    title: &'static str,
    text: &'static str,
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn { .. } => StatusCode::SEE_OTHER,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Internal(..) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (lang, title, text) = match self {
            ConsoleError::SignIn { next } => {
                let target = format!("/admin/login?next={}", urlencode(next));
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, target))
                    .finish();
            }
            ConsoleError::NotFound(lang) => {
                (*lang, lang.tr().not_found_title, lang.tr().not_found_text)
            }
            ConsoleError::Forbidden(lang) => {
                (*lang, lang.tr().forbidden_title, lang.tr().forbidden_text)
            }
            ConsoleError::Internal(lang, cause) => {
                tracing::error!(error = %cause, "console request failed");
                (*lang, lang.tr().error_title, lang.tr().error_text)
            }
        };
        let page = ErrorPage {
            lang: lang.tag(),
            t: lang.tr(),
            title,
            text,
        };
        let body = page.render().unwrap_or_else(|_| title.to_string());
        HttpResponse::build(self.status_code())
            .content_type("text/html; charset=utf-8")
            .body(body)
    }
}

/// Percent-encode a query value.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Only a path inside the console may be a redirect target (no open redirects).
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/admin")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control());
    if ok {
        next.to_string()
    } else {
        "/admin/dashboard".into()
    }
}

/// A signed-in user and their session.
pub struct Viewer {
    pub user: user::Model,
    pub session: console_session::Model,
    pub role: Role,
    pub lang: Lang,
    pub tz: Tz,
    pub ip: Option<String>,
    /// The path and query of this request (for language links and sign-in redirects).
    pub here: String,
    pub flash: Option<Flash>,
}

impl Viewer {
    pub fn t(&self) -> &'static Tr {
        self.lang.tr()
    }

    pub fn not_found(&self) -> ConsoleError {
        ConsoleError::NotFound(self.lang)
    }

    pub fn internal(&self, err: impl std::fmt::Display) -> ConsoleError {
        ConsoleError::Internal(self.lang, err.to_string())
    }

    /// Pages of other roles are simply not there.
    pub fn require(&self, roles: &[Role]) -> Result<(), ConsoleError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(self.not_found())
        }
    }

    pub fn scope(&self) -> Scope {
        match (self.role, self.user.tenant_id) {
            (Role::Operator, _) => Scope::Platform,
            (_, Some(tenant)) => Scope::Tenant(tenant),
            // A tenant role without a tenant sees nothing.
            (_, None) => Scope::Tenant(0),
        }
    }

    /// The tenant a page is about: a tenant user's own (asking for another is "not found"), or
    /// the one an operator chose (`?tenant=`).
    pub fn tenant_for(&self, asked: Option<i64>) -> Result<i64, ConsoleError> {
        match self.scope() {
            Scope::Tenant(own) if asked.is_none_or(|t| t == own) => Ok(own),
            Scope::Tenant(_) => Err(self.not_found()),
            Scope::Platform => asked.ok_or_else(|| self.not_found()),
        }
    }

    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor {
            label: format!("user:{}", self.user.email),
            user_id: Some(self.user.id),
            ip: self.ip.clone(),
        }
    }

    /// Check the form's CSRF token against the session's (constant time).
    pub fn check_csrf(&self, token: &str) -> Result<(), ConsoleError> {
        let expected = self.session.csrf_token.as_bytes();
        if !token.is_empty() && bool::from(token.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(self.lang))
        }
    }

    /// Map a service error: validation problems go back to the form as a flash message,
    /// "not found" is a 404, the rest is a 500.
    pub fn fail(&self, err: AdminError, back: &str) -> Result<HttpResponse, ConsoleError> {
        match err {
            AdminError::Invalid { message, .. } | AdminError::Conflict(message) => {
                let message = match self.lang {
                    Lang::En => message.en,
                    Lang::Zh => message.zh,
                };
                Ok(redirect_with(
                    back,
                    Flash::error(format!(
                        "{}{}{message}",
                        self.t().invalid_input,
                        self.t().colon
                    )),
                ))
            }
            AdminError::NotFound(_) => Err(self.not_found()),
            AdminError::Db(e) => Err(self.internal(e)),
        }
    }
}

impl FromRequest for Viewer {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let lang = lang_of(&req);
            let here = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/admin".into());
            let sign_in = || ConsoleError::SignIn { next: here.clone() };
            let Some(console) = req.app_data::<web::Data<Console>>().cloned() else {
                return Err(ConsoleError::Internal(lang, "console state missing".into()));
            };
            let Some(cookie) = req.cookie(SESSION_COOKIE) else {
                return Err(sign_in());
            };
            let found = crate::sessions::find_session(&console.db, cookie.value())
                .await
                .map_err(|e| ConsoleError::Internal(lang, e.to_string()))?;
            let Some((session, user)) = found else {
                return Err(sign_in());
            };
            let role =
                Role::parse(&user.role).map_err(|e| ConsoleError::Internal(lang, e.to_string()))?;
            Ok(Viewer {
                user,
                session,
                role,
                lang,
                tz: tz_of(&req),
                ip: client_ip(&req),
                here,
                flash: Flash::read(&req),
            })
        })
    }
}

/// A one-time message shown on the next page (after a redirect).
#[derive(Debug, Clone)]
pub struct Flash {
    /// `ok` or `error` (a CSS class).
    pub kind: &'static str,
    pub text: String,
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }

    fn read(req: &HttpRequest) -> Option<Flash> {
        let cookie = req.cookie(FLASH_COOKIE)?;
        let value = percent_decode(cookie.value());
        let (kind, text) = value.split_once(':')?;
        let kind = if kind == "ok" { "ok" } else { "error" };
        Some(Flash {
            kind,
            text: text.chars().take(500).collect(),
        })
    }

    fn cookie(&self) -> Cookie<'static> {
        let value = urlencode(&format!("{}:{}", self.kind, self.text));
        Cookie::build(FLASH_COOKIE, value)
            .path("/admin")
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(actix_web::cookie::time::Duration::seconds(60))
            .finish()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 303 to `to`.
pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .finish()
}

/// 303 to `to` with a message for the next page.
pub fn redirect_with(to: &str, flash: Flash) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .cookie(flash.cookie())
        .finish()
}

/// A rendered page (200), clearing a flash message it showed.
pub fn html(viewer_flash_shown: bool, body: String) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.content_type("text/html; charset=utf-8");
    if viewer_flash_shown {
        let mut gone = Cookie::build(FLASH_COOKIE, "").path("/admin").finish();
        gone.make_removal();
        res.cookie(gone);
    }
    res.body(body)
}

/// A page that shows a secret once: never cached, never stored by the browser.
pub fn secret_page(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// One entry of the top navigation.
pub struct NavItem {
    pub href: String,
    pub label: &'static str,
    pub active: bool,
}

/// The chrome of every signed-in page.
pub struct Page {
    pub lang: &'static str,
    pub lang_code: &'static str,
    pub t: &'static Tr,
    pub title: String,
    pub email: String,
    pub role_label: &'static str,
    pub nav: Vec<NavItem>,
    pub csrf: String,
    pub flash: Option<Flash>,
    pub tz: String,
    /// `/admin/lang/en?back=…` and `/admin/lang/zh?back=…`.
    pub lang_en: String,
    pub lang_zh: String,
}

impl Page {
    /// `section` is the nav entry to highlight (its path).
    pub fn new(viewer: &Viewer, title: &str, section: &str) -> Page {
        let t = viewer.t();
        let mut items: Vec<(&str, &'static str)> = vec![("/admin/dashboard", t.nav_dashboard)];
        match viewer.role {
            Role::Operator => items.extend([
                ("/admin/tenants", t.nav_tenants),
                ("/admin/usage", t.nav_usage),
                ("/admin/statements", t.nav_statements),
                ("/admin/prices", t.nav_prices),
                ("/admin/users", t.nav_users),
                ("/admin/audit", t.nav_audit),
            ]),
            Role::TenantAdmin => items.extend([
                ("/admin/keys", t.nav_keys),
                ("/admin/jwt-keys", t.nav_jwt_keys),
                ("/admin/usage", t.nav_usage),
                ("/admin/statements", t.nav_statements),
                ("/admin/users", t.nav_users),
                ("/admin/audit", t.nav_audit),
            ]),
            Role::Finance => items.extend([
                ("/admin/usage", t.nav_usage),
                ("/admin/statements", t.nav_statements),
            ]),
        }
        let back = urlencode(&viewer.here);
        Page {
            lang: viewer.lang.tag(),
            lang_code: viewer.lang.code(),
            t,
            title: title.to_string(),
            email: viewer.user.email.clone(),
            role_label: match viewer.role {
                Role::Operator => t.role_operator,
                Role::TenantAdmin => t.role_tenant_admin,
                Role::Finance => t.role_finance,
            },
            nav: items
                .into_iter()
                .map(|(href, label)| NavItem {
                    href: href.to_string(),
                    label,
                    active: href == section,
                })
                .collect(),
            csrf: viewer.session.csrf_token.clone(),
            flash: viewer.flash.clone(),
            tz: viewer.tz.name().to_string(),
            lang_en: format!("/admin/lang/en?back={back}"),
            lang_zh: format!("/admin/lang/zh?back={back}"),
        }
    }
}

/// Render a signed-in page.
pub fn render(viewer: &Viewer, page: &impl Template) -> Result<HttpResponse, ConsoleError> {
    let body = page.render().map_err(|e| viewer.internal(e))?;
    Ok(html(viewer.flash.is_some(), body))
}

/// Pages of a long list: the current page (from 0), how many, and links.
pub struct Pager {
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    pub first_shown: u64,
    pub last_shown: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `link(page)` builds the URL of a page.
    pub fn new(page: u64, per_page: u64, total: u64, link: impl Fn(u64) -> String) -> Pager {
        let pages = total.div_ceil(per_page).max(1);
        let page = page.min(pages - 1);
        Pager {
            page: page + 1,
            pages,
            total,
            first_shown: if total == 0 { 0 } else { page * per_page + 1 },
            last_shown: ((page + 1) * per_page).min(total),
            prev: (page > 0).then(|| link(page - 1)),
            next: (page + 1 < pages).then(|| link(page + 1)),
        }
    }
}
