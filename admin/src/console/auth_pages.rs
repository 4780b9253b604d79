//! Sign in, sign out, the language switch, and the viewer's own account (password, sessions).

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use base64::Engine as _;
use rand::Rng;
use secrecy::SecretString;
use subtle::ConstantTimeEq;

use super::i18n::Tr;
use super::web::{
    client_ip, lang_of, redirect, redirect_with, render, safe_next, ConsoleError, Flash, Page,
    Viewer, LANG_COOKIE, SESSION_COOKIE,
};
use super::Console;
use crate::sessions::{self, Origin, SignIn};

const LOGIN_CSRF_COOKIE: &str = "aiaas_login_csrf";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(index))
        .route("/", web::get().to(index))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/lang/{code}", web::get().to(switch_language))
        .route("/account", web::get().to(account))
        .route("/account/password", web::post().to(change_password))
        .route("/account/sessions/{id}/end", web::post().to(end_session));
}

async fn index(_viewer: Viewer) -> HttpResponse {
    redirect("/admin/dashboard")
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn session_cookie(req: &HttpRequest, value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/admin")
        .http_only(true)
        .secure(is_https(req))
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    lang: &'static str,
    t: &'static Tr,
    csrf: &'a str,
    next: &'a str,
    email: &'a str,
    error: Option<&'static str>,
    notice: Option<&'static str>,
    lang_en: String,
    lang_zh: String,
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
    signed_out: Option<u8>,
}

fn login_page(
    req: &HttpRequest,
    status: actix_web::http::StatusCode,
    next: &str,
    email: &str,
    error: Option<&'static str>,
    notice: Option<&'static str>,
) -> Result<HttpResponse, ConsoleError> {
    let lang = lang_of(req);
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes);
    let csrf = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let back = super::web::urlencode(&format!(
        "/admin/login?next={}",
        super::web::urlencode(next)
    ));
    let page = LoginPage {
        lang: lang.tag(),
        t: lang.tr(),
        csrf: &csrf,
        next,
        email,
        error,
        notice,
        lang_en: format!("/admin/lang/en?back={back}"),
        lang_zh: format!("/admin/lang/zh?back={back}"),
    };
    let body = page
        .render()
        .map_err(|e| ConsoleError::Internal(lang, e.to_string()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .cookie(
            Cookie::build(LOGIN_CSRF_COOKIE, csrf)
                .path("/admin/login")
                .http_only(true)
                .secure(is_https(req))
                .same_site(SameSite::Strict)
                .finish(),
        )
        .body(body))
}

async fn login_form(
    req: HttpRequest,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let next = safe_next(query.next.as_deref().unwrap_or("/admin/dashboard"));
    let notice = query.signed_out.map(|_| lang_of(&req).tr().signed_out);
    login_page(
        &req,
        actix_web::http::StatusCode::OK,
        &next,
        "",
        None,
        notice,
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

async fn login(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ConsoleError> {
    let lang = lang_of(&req);
    let expected = req
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return Err(ConsoleError::Forbidden(lang));
    }
    let next = safe_next(&form.next);
    let refused = |message| {
        login_page(
            &req,
            actix_web::http::StatusCode::UNAUTHORIZED,
            &next,
            &form.email,
            Some(message),
            None,
        )
    };
    let ip = req.peer_addr().map(|a| a.ip());
    if !console.allow_attempt(ip) {
        return login_page(
            &req,
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            &next,
            &form.email,
            Some(lang.tr().sign_in_throttled),
            None,
        );
    }
    let origin = Origin {
        ip: client_ip(&req),
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let password = SecretString::from(form.password.clone());
    let result = sessions::sign_in(
        &console.db,
        &form.email,
        &password,
        &origin,
        console.session_lifetime(),
    )
    .await
    .map_err(|e| ConsoleError::Internal(lang, e.to_string()))?;
    match result {
        SignIn::Ok { user, token } => {
            tracing::info!(user = user.id, "console sign-in");
            use secrecy::ExposeSecret;
            let mut gone = Cookie::build(LOGIN_CSRF_COOKIE, "")
                .path("/admin/login")
                .finish();
            gone.make_removal();
            Ok(HttpResponse::SeeOther()
                .insert_header(("Location", next))
                .cookie(session_cookie(
                    &req,
                    token.expose_secret().to_string(),
                    console.session_lifetime().num_seconds(),
                ))
                .cookie(gone)
                .finish())
        }
        SignIn::Refused | SignIn::Locked(_) => refused(lang.tr().sign_in_failed),
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    req: HttpRequest,
    viewer: Viewer,
    console: web::Data<Console>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        sessions::sign_out(&console.db, cookie.value())
            .await
            .map_err(|e| viewer.internal(e))?;
    }
    let mut gone = session_cookie(&req, String::new(), 0);
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/admin/login?signed_out=1"))
        .cookie(gone)
        .finish())
}

#[derive(serde::Deserialize)]
struct BackQuery {
    back: Option<String>,
}

/// Remember a language for a year and go back where the viewer was.
async fn switch_language(
    req: HttpRequest,
    code: web::Path<String>,
    query: web::Query<BackQuery>,
) -> HttpResponse {
    let lang = super::i18n::Lang::parse(&code).unwrap_or_else(|| lang_of(&req));
    let back = safe_next(query.back.as_deref().unwrap_or("/admin/dashboard"));
    HttpResponse::SeeOther()
        .insert_header(("Location", back))
        .cookie(
            Cookie::build(LANG_COOKIE, lang.code())
                .path("/admin")
                .same_site(SameSite::Strict)
                .max_age(actix_web::cookie::time::Duration::days(365))
                .finish(),
        )
        .finish()
}

pub struct SessionRow {
    pub id: i64,
    pub current: bool,
    pub created: String,
    pub last_seen: String,
    pub ip: String,
    pub browser: String,
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    page: Page,
    sessions: Vec<SessionRow>,
    last_sign_in: String,
}

async fn account(
    viewer: Viewer,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let t = viewer.t();
    let rows = sessions::list_sessions(&console.db, viewer.user.id)
        .await
        .map_err(|e| viewer.internal(e))?;
    let fmt = |at| super::i18n::datetime(viewer.lang, viewer.tz, at);
    let sessions = rows
        .into_iter()
        .map(|s| SessionRow {
            id: s.id,
            current: s.id == viewer.session.id,
            created: fmt(s.created_at),
            last_seen: fmt(s.last_seen_at),
            ip: s.ip.unwrap_or_default(),
            browser: s.user_agent.unwrap_or_default(),
        })
        .collect();
    let page = AccountPage {
        page: Page::new(&viewer, t.account_title, "/admin/account"),
        sessions,
        last_sign_in: viewer.user.last_login_at.map(fmt).unwrap_or_default(),
    };
    render(&viewer, &page)
}

#[derive(serde::Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current_password: String,
    new_password: String,
}

async fn change_password(
    req: HttpRequest,
    viewer: Viewer,
    console: web::Data<Console>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    let origin = Origin {
        ip: viewer.ip.clone(),
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let changed = sessions::change_password(
        &console.db,
        viewer.user.id,
        &SecretString::from(form.current_password.clone()),
        &SecretString::from(form.new_password.clone()),
        &origin,
        console.session_lifetime(),
    )
    .await;
    match changed {
        Ok(token) => {
            use secrecy::ExposeSecret;
            let mut res = redirect_with("/admin/account", Flash::ok(viewer.t().password_changed));
            res.add_cookie(&session_cookie(
                &req,
                token.expose_secret().to_string(),
                console.session_lifetime().num_seconds(),
            ))
            .map_err(|e| viewer.internal(e))?;
            Ok(res)
        }
        Err(err) => viewer.fail(err, "/admin/account"),
    }
}

async fn end_session(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    match sessions::end_session(&console.db, viewer.user.id, *id).await {
        Ok(()) => Ok(redirect_with(
            "/admin/account",
            Flash::ok(viewer.t().session_ended),
        )),
        Err(err) => viewer.fail(err, "/admin/account"),
    }
}
