//! API keys (list, search, create, edit, limits, budget, rotate, revoke, short-lived tokens)
//! and JWT verification keys, for tenant admins (their tenant) and operators (`?tenant=`).

use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::i18n::{self, group_thousands, money, Tr};
use super::web::{
    redirect_with, render, secret_page, urlencode, ConsoleError, Flash, Page, Pager, Viewer,
};
use super::Console;
use crate::entity::api_key;
use crate::key_changes::{self, KeyEdit, KeyStatus};
use crate::limits::{Limits, LimitsChange};
use crate::users::Role;
use crate::Text;
use crate::{budgets, jwt_keys, keys};

const ADMINS: &[Role] = &[Role::TenantAdmin, Role::Operator];
const PER_PAGE: u64 = 25;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::get().to(list_keys))
        .route("/keys", web::post().to(create_key))
        .route("/keys/new", web::get().to(new_key))
        .route("/keys/{id}", web::get().to(show_key))
        .route("/keys/{id}/edit", web::post().to(edit_key))
        .route("/keys/{id}/limits", web::post().to(edit_limits))
        .route("/keys/{id}/budget", web::post().to(edit_budget))
        .route("/keys/{id}/rotate", web::post().to(rotate_key))
        .route("/keys/{id}/revoke", web::get().to(confirm_revoke))
        .route("/keys/{id}/revoke", web::post().to(revoke_key))
        .route("/keys/{id}/token", web::post().to(mint_token))
        .route("/jwt-keys", web::get().to(list_jwt_keys))
        .route("/jwt-keys", web::post().to(add_jwt_key))
        .route("/jwt-keys/generate", web::post().to(generate_jwt_key))
        .route(
            "/jwt-keys/{kid}/enabled",
            web::post().to(set_jwt_key_enabled),
        );
}

#[derive(serde::Deserialize, Default)]
struct TenantQuery {
    tenant: Option<i64>,
}

/// `?tenant=N` for operators, nothing for tenant users.
fn tenant_suffix(viewer: &Viewer, tenant_id: i64) -> String {
    if viewer.role == Role::Operator {
        format!("?tenant={tenant_id}")
    } else {
        String::new()
    }
}

pub(super) fn limits_text(t: &Tr, limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(rpm) = limits.rpm {
        parts.push(format!("{} rpm", group_thousands(rpm)));
    }
    if let Some(tpm) = limits.tpm {
        parts.push(format!("{} tpm", group_thousands(tpm)));
    }
    if let Some(c) = limits.max_concurrent {
        parts.push(format!("{c} ∥"));
    }
    if parts.is_empty() {
        t.no_limits.to_string()
    } else {
        parts.join(" · ")
    }
}

pub struct KeyRow {
    pub public_id: String,
    pub href: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub limits: String,
}

fn status_of(t: &Tr, key: &api_key::Model) -> (&'static str, &'static str) {
    if key.revoked_at.is_some() {
        (t.status_revoked, "revoked")
    } else if !keys::is_active(key, Utc::now()) {
        (t.status_expired, "expired")
    } else {
        (t.status_active, "active")
    }
}

fn key_row(viewer: &Viewer, key: &api_key::Model) -> KeyRow {
    let t = viewer.t();
    let fmt = |at| i18n::datetime(viewer.lang, viewer.tz, at);
    let (status, status_class) = status_of(t, key);
    KeyRow {
        href: format!("/admin/keys/{}", key.public_id),
        public_id: key.public_id.clone(),
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        created: fmt(key.created_at),
        last_used: key
            .last_used_at
            .map(fmt)
            .unwrap_or_else(|| t.never_used.into()),
        expires: key.expires_at.map(fmt).unwrap_or_else(|| t.never.into()),
        status,
        status_class,
        limits: limits_text(t, &Limits::from_key(key)),
    }
}

pub struct StatusOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    page: Page,
    tenant_name: String,
    tenant_q: String,
    /// The tenant id for the search form (operators), else empty.
    tenant_hidden: String,
    search: String,
    statuses: Vec<StatusOption>,
    rows: Vec<KeyRow>,
    pager: Pager,
}

#[derive(serde::Deserialize)]
struct KeysQuery {
    tenant: Option<i64>,
    q: Option<String>,
    status: Option<String>,
    page: Option<u64>,
}

async fn tenant_name(viewer: &Viewer, console: &Console, id: i64) -> Result<String, ConsoleError> {
    crate::tenants::find_tenant(&console.db, id)
        .await
        .map_err(|e| viewer.internal(e))?
        .map(|t| t.name)
        .ok_or_else(|| viewer.not_found())
}

async fn list_keys(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<KeysQuery>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let t = viewer.t();
    let tenant_id = viewer.tenant_for(query.tenant)?;
    let name = tenant_name(&viewer, &console, tenant_id).await?;
    let search = query.q.clone().unwrap_or_default();
    let status = KeyStatus::parse(query.status.as_deref().unwrap_or("all"));
    let page_no = query.page.unwrap_or(1).max(1) - 1;
    let found =
        key_changes::list_keys_page(&console.db, tenant_id, &search, status, page_no, PER_PAGE)
            .await
            .map_err(|e| viewer.internal(e))?;
    let tenant_q = tenant_suffix(&viewer, tenant_id);
    let base = format!(
        "/admin/keys?{}q={}&status={}",
        if tenant_q.is_empty() {
            String::new()
        } else {
            format!("tenant={tenant_id}&")
        },
        urlencode(&search),
        status.as_str()
    );
    let page = KeysPage {
        page: Page::new(&viewer, t.keys_title, "/admin/keys"),
        tenant_name: name,
        tenant_hidden: if tenant_q.is_empty() {
            String::new()
        } else {
            tenant_id.to_string()
        },
        tenant_q,
        search,
        statuses: [
            (KeyStatus::All, t.status_all),
            (KeyStatus::Active, t.status_active),
            (KeyStatus::Revoked, t.status_revoked),
            (KeyStatus::Expired, t.status_expired),
        ]
        .into_iter()
        .map(|(s, label)| StatusOption {
            value: s.as_str(),
            label,
            selected: s == status,
        })
        .collect(),
        rows: found.rows.iter().map(|k| key_row(&viewer, k)).collect(),
        pager: Pager::new(page_no, PER_PAGE, found.total, |p| {
            format!("{base}&page={}", p + 1)
        }),
    };
    render(&viewer, &page)
}

#[derive(Template)]
#[template(path = "console/key_new.html")]
struct NewKeyPage {
    page: Page,
    tenant_q: String,
}

async fn new_key(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let tenant_id = viewer.tenant_for(query.tenant)?;
    tenant_name(&viewer, &console, tenant_id).await?;
    let page = NewKeyPage {
        page: Page::new(&viewer, viewer.t().new_key, "/admin/keys"),
        tenant_q: tenant_suffix(&viewer, tenant_id),
    };
    render(&viewer, &page)
}

/// A number field of a form: empty is `None`; anything else must be a positive integer.
pub(super) fn optional_number(
    text: &str,
    field: &'static str,
) -> Result<Option<i64>, crate::AdminError> {
    let text = text.trim().replace([',', '_', ' '], "");
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| {
            crate::AdminError::invalid(
                field,
                Text::new(
                    format!("`{text}` is not a positive whole number"),
                    format!("`{text}` 不是正整数"),
                ),
            )
        })
}

/// A comma-separated model list: empty is every model.
/// A date typed in a form (`2026-11-29`); `field` names it in the refusal.
pub(super) fn form_day(field: &'static str, text: &str) -> Result<NaiveDate, crate::AdminError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        crate::AdminError::invalid(
            field,
            Text::new(
                format!("`{text}` is not a date"),
                format!("`{text}` 不是有效日期"),
            ),
        )
    })
}

fn model_list(text: &str) -> Option<Vec<String>> {
    let models: Vec<String> = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    (!models.is_empty()).then_some(models)
}

/// A date field (`YYYY-MM-DD`): the key works through that whole day in the viewer's zone.
fn expiry(viewer: &Viewer, text: &str) -> Result<Option<chrono::DateTime<Utc>>, crate::AdminError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let day = form_day("expires", text)?;
    let next = (day + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default();
    Ok(viewer
        .tz
        .from_local_datetime(&next)
        .earliest()
        .map(|t| t.with_timezone(&Utc)))
}

#[derive(serde::Deserialize)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    models: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
    #[serde(default)]
    max_concurrent: String,
}

#[derive(Template)]
#[template(path = "console/secret.html")]
struct SecretPage {
    page: Page,
    heading: &'static str,
    secret: String,
    detail: String,
    back_href: String,
    back_label: &'static str,
}

fn reveal(
    viewer: &Viewer,
    heading: &'static str,
    secret: &SecretString,
    detail: String,
    back_href: String,
) -> Result<HttpResponse, ConsoleError> {
    let t = viewer.t();
    let page = SecretPage {
        page: Page::new(viewer, heading, "/admin/keys"),
        heading,
        secret: secret.expose_secret().to_string(),
        detail,
        back_href,
        back_label: t.done,
    };
    let body = page.render().map_err(|e| viewer.internal(e))?;
    Ok(secret_page(body))
}

async fn create_key(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<TenantQuery>,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(&form.csrf)?;
    let tenant_id = viewer.tenant_for(query.tenant)?;
    tenant_name(&viewer, &console, tenant_id).await?;
    let back = format!("/admin/keys/new{}", tenant_suffix(&viewer, tenant_id));
    let parsed = (|| {
        Ok::<_, crate::AdminError>(keys::NewKey {
            tenant_id,
            name: Some(form.name.trim().to_string()),
            models: model_list(&form.models),
            expires_at: expiry(&viewer, &form.expires)?,
            created_by: Some(viewer.user.id),
            limits: Limits {
                rpm: optional_number(&form.rpm, "rpm")?,
                tpm: optional_number(&form.tpm, "tpm")?,
                max_concurrent: optional_number(&form.max_concurrent, "max_concurrent")?,
                ..Default::default()
            },
        })
    })();
    let new = match parsed {
        Ok(new) => new,
        Err(err) => return viewer.fail(err, &back),
    };
    match keys::insert_key(&console.db, new, &viewer.actor()).await {
        Ok(created) => reveal(
            &viewer,
            viewer.t().key_created,
            &created.secret,
            created.key.name.clone(),
            format!("/admin/keys/{}", created.key.public_id),
        ),
        Err(err) => viewer.fail(err, &back),
    }
}

pub struct BudgetRow {
    pub amount: String,
    pub spent: String,
    pub period: String,
}

#[derive(Template)]
#[template(path = "console/key.html")]
struct KeyPage {
    page: Page,
    key: KeyRow,
    list_href: String,
    active: bool,
    models: String,
    expires_value: String,
    rpm: String,
    tpm: String,
    max_concurrent: String,
    previous_until: String,
    budgets: Vec<BudgetRow>,
}

async fn find_key(
    viewer: &Viewer,
    console: &Console,
    public_id: &str,
) -> Result<api_key::Model, ConsoleError> {
    keys::find_key_in_scope(&console.db, viewer.scope(), public_id)
        .await
        .map_err(|_| viewer.not_found())
}

/// What every action on one key checks first: an admin role, the session's CSRF token, and a
/// key in the viewer's scope; returns the key and its page to redirect back to.
async fn key_action(
    viewer: &Viewer,
    console: &Console,
    public_id: &str,
    csrf: &str,
) -> Result<(api_key::Model, String), ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(csrf)?;
    let key = find_key(viewer, console, public_id).await?;
    let back = format!("/admin/keys/{}", key.public_id);
    Ok((key, back))
}

async fn show_key(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let key = find_key(&viewer, &console, &id).await?;
    let t = viewer.t();
    let limits = Limits::from_key(&key);
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let budgets = budgets::list_budgets(&console.db, key.tenant_id)
        .await
        .map_err(|e| viewer.internal(e))?
        .into_iter()
        .filter(|b| b.budget.key_id == Some(key.id))
        .map(|b| {
            let fmt = |n: i64| match budgets::Unit::parse(&b.budget.unit) {
                Some(budgets::Unit::Micros) => money(viewer.lang, &console.currency, n),
                _ => format!("{} {}", group_thousands(n), t.tokens),
            };
            BudgetRow {
                amount: fmt(b.budget.amount),
                spent: fmt(b.spent),
                period: if b.budget.period == "monthly" {
                    t.monthly.to_string()
                } else {
                    b.budget.period.clone()
                },
            }
        })
        .collect();
    let now = Utc::now();
    let page = KeyPage {
        page: Page::new(&viewer, &key.name, "/admin/keys"),
        list_href: format!("/admin/keys{}", tenant_suffix(&viewer, key.tenant_id)),
        active: keys::is_active(&key, now),
        models: keys::allowed_models(&key)
            .map(|m| m.join(", "))
            .unwrap_or_default(),
        expires_value: key
            .expires_at
            .map(|at| {
                (at.with_timezone(&viewer.tz) - Duration::seconds(1))
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .unwrap_or_default(),
        rpm: num(limits.rpm),
        tpm: num(limits.tpm),
        max_concurrent: num(limits.max_concurrent),
        previous_until: key
            .previous_valid_until
            .filter(|until| *until > now)
            .map(|at| i18n::datetime(viewer.lang, viewer.tz, at))
            .unwrap_or_default(),
        budgets,
        key: key_row(&viewer, &key),
    };
    render(&viewer, &page)
}

async fn edit_key(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (key, back) = key_action(&viewer, &console, &id, &form.csrf).await?;
    let expires = match expiry(&viewer, &form.expires) {
        Ok(e) => e,
        Err(err) => return viewer.fail(err, &back),
    };
    let edit = KeyEdit {
        name: Some(form.name.trim().to_string()),
        models: Some(model_list(&form.models)),
        expires_at: Some(expires),
    };
    match key_changes::update_key(
        &console.db,
        viewer.scope(),
        &key.public_id,
        edit,
        &viewer.actor(),
    )
    .await
    {
        Ok(_) => Ok(redirect_with(&back, Flash::ok(viewer.t().key_saved))),
        Err(err) => viewer.fail(err, &back),
    }
}

async fn edit_limits(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (key, back) = key_action(&viewer, &console, &id, &form.csrf).await?;
    let change = (|| {
        Ok::<_, crate::AdminError>(LimitsChange {
            rpm: Some(optional_number(&form.rpm, "rpm")?),
            tpm: Some(optional_number(&form.tpm, "tpm")?),
            max_concurrent: Some(optional_number(&form.max_concurrent, "max_concurrent")?),
            ..Default::default()
        })
    })();
    let change = match change {
        Ok(c) => c,
        Err(err) => return viewer.fail(err, &back),
    };
    match crate::limits::update_key_limits(
        &console.db,
        viewer.scope(),
        &key.public_id,
        change,
        &viewer.actor(),
    )
    .await
    {
        Ok(_) => Ok(redirect_with(&back, Flash::ok(viewer.t().limits_saved))),
        Err(err) => viewer.fail(err, &back),
    }
}

#[derive(serde::Deserialize)]
struct BudgetForm {
    #[serde(default)]
    csrf: String,
    amount: String,
}

async fn edit_budget(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<BudgetForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (key, back) = key_action(&viewer, &console, &id, &form.csrf).await?;
    let amount = match crate::prices::parse_micros(&form.amount) {
        Ok(a) => a,
        Err(err) => return viewer.fail(err, &back),
    };
    let set = budgets::set_budget(
        &console.db,
        viewer.scope(),
        key.tenant_id,
        Some(&key.public_id),
        budgets::Cap::micros(amount),
        budgets::Period::Monthly,
        &viewer.actor(),
    )
    .await;
    match set {
        Ok(_) => Ok(redirect_with(&back, Flash::ok(viewer.t().budget_saved))),
        Err(err) => viewer.fail(err, &back),
    }
}

#[derive(serde::Deserialize)]
struct RotateForm {
    #[serde(default)]
    csrf: String,
    /// Seconds the old secret keeps working.
    grace: i64,
}

async fn rotate_key(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<RotateForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (key, back) = key_action(&viewer, &console, &id, &form.csrf).await?;
    let rotated = key_changes::rotate_key(
        &console.db,
        viewer.scope(),
        &key.public_id,
        Duration::seconds(form.grace),
        &viewer.actor(),
    )
    .await;
    match rotated {
        Ok(created) => {
            let detail = created
                .key
                .previous_valid_until
                .map(|at| {
                    format!(
                        "{} {}",
                        viewer.t().previous_secret_until,
                        i18n::datetime(viewer.lang, viewer.tz, at)
                    )
                })
                .unwrap_or_default();
            reveal(
                &viewer,
                viewer.t().key_rotated,
                &created.secret,
                detail,
                back,
            )
        }
        Err(err) => viewer.fail(err, &back),
    }
}

#[derive(Template)]
#[template(path = "console/key_revoke.html")]
struct RevokePage {
    page: Page,
    key: KeyRow,
}

async fn confirm_revoke(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let key = find_key(&viewer, &console, &id).await?;
    let page = RevokePage {
        page: Page::new(&viewer, viewer.t().revoke, "/admin/keys"),
        key: key_row(&viewer, &key),
    };
    render(&viewer, &page)
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn revoke_key(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (key, back) = key_action(&viewer, &console, &id, &form.csrf).await?;
    match keys::revoke_key(&console.db, viewer.scope(), &key.public_id, &viewer.actor()).await {
        Ok(_) => Ok(redirect_with(&back, Flash::ok(viewer.t().key_revoked))),
        Err(err) => viewer.fail(err, &back),
    }
}

#[derive(serde::Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    /// Seconds.
    ttl: i64,
    #[serde(default)]
    sub: String,
}

async fn mint_token(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<String>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (key, back) = key_action(&viewer, &console, &id, &form.csrf).await?;
    let sub = Some(form.sub.trim().to_string()).filter(|s| !s.is_empty());
    let minted = key_changes::mint_token_audited(
        &console.db,
        viewer.scope(),
        &key.public_id,
        Duration::seconds(form.ttl.clamp(60, 24 * 3600)),
        sub,
        &viewer.actor(),
    )
    .await;
    match minted {
        Ok(token) => reveal(
            &viewer,
            viewer.t().token_created,
            &SecretString::from(token),
            key.name.clone(),
            back,
        ),
        Err(err) => viewer.fail(err, &back),
    }
}

pub struct JwtKeyRow {
    pub kid: String,
    pub name: String,
    pub algorithm: String,
    pub issuer: String,
    pub audience: String,
    pub created: String,
    pub enabled: bool,
}

#[derive(Template)]
#[template(path = "console/jwt_keys.html")]
struct JwtKeysPage {
    page: Page,
    tenant_q: String,
    rows: Vec<JwtKeyRow>,
}

async fn list_jwt_keys(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let tenant_id = viewer.tenant_for(query.tenant)?;
    tenant_name(&viewer, &console, tenant_id).await?;
    let rows = jwt_keys::list_jwt_keys(&console.db, tenant_id)
        .await
        .map_err(|e| viewer.internal(e))?
        .into_iter()
        .map(|k| JwtKeyRow {
            created: i18n::datetime(viewer.lang, viewer.tz, k.created_at),
            kid: k.kid,
            name: k.name,
            algorithm: k.algorithm,
            issuer: k.issuer.unwrap_or_default(),
            audience: k.audience.unwrap_or_default(),
            enabled: k.enabled,
        })
        .collect();
    let page = JwtKeysPage {
        page: Page::new(&viewer, viewer.t().jwt_title, "/admin/jwt-keys"),
        tenant_q: tenant_suffix(&viewer, tenant_id),
        rows,
    };
    render(&viewer, &page)
}

#[derive(serde::Deserialize)]
struct JwtKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    public_key: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    audience: String,
}

fn new_jwt_key(tenant_id: i64, form: &JwtKeyForm, algorithm: &str) -> jwt_keys::NewJwtKey {
    jwt_keys::NewJwtKey {
        tenant_id,
        name: Some(form.name.trim().to_string()),
        algorithm: algorithm.to_string(),
        secret: None,
        public_key: None,
        issuer: Some(form.issuer.trim().to_string()),
        audience: Some(form.audience.trim().to_string()),
    }
}

async fn add_jwt_key(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<TenantQuery>,
    form: web::Form<JwtKeyForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(&form.csrf)?;
    let tenant_id = viewer.tenant_for(query.tenant)?;
    tenant_name(&viewer, &console, tenant_id).await?;
    let back = format!("/admin/jwt-keys{}", tenant_suffix(&viewer, tenant_id));
    let algorithm = match form.algorithm.as_str() {
        "RS256" | "ES256" | "EdDSA" => form.algorithm.as_str(),
        _ => "RS256",
    };
    let mut new = new_jwt_key(tenant_id, &form, algorithm);
    new.public_key = Some(form.public_key.clone());
    match jwt_keys::insert_jwt_key(&console.db, new, &viewer.actor()).await {
        Ok(_) => Ok(redirect_with(&back, Flash::ok(viewer.t().key_saved))),
        Err(err) => viewer.fail(err, &back),
    }
}

async fn generate_jwt_key(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<TenantQuery>,
    form: web::Form<JwtKeyForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(&form.csrf)?;
    let tenant_id = viewer.tenant_for(query.tenant)?;
    tenant_name(&viewer, &console, tenant_id).await?;
    let back = format!("/admin/jwt-keys{}", tenant_suffix(&viewer, tenant_id));
    let secret = SecretString::from(keys::random_secret());
    let mut new = new_jwt_key(tenant_id, &form, "HS256");
    new.secret = Some(secret.clone());
    match jwt_keys::insert_jwt_key(&console.db, new, &viewer.actor()).await {
        Ok(row) => reveal(
            &viewer,
            viewer.t().secret_created,
            &secret,
            format!("kid: {}", row.kid),
            back,
        ),
        Err(err) => viewer.fail(err, &back),
    }
}

#[derive(serde::Deserialize)]
struct EnabledForm {
    #[serde(default)]
    csrf: String,
    enabled: String,
}

async fn set_jwt_key_enabled(
    viewer: Viewer,
    console: web::Data<Console>,
    kid: web::Path<String>,
    form: web::Form<EnabledForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(&form.csrf)?;
    let enabled = form.enabled == "1";
    match jwt_keys::set_jwt_key_enabled(&console.db, viewer.scope(), &kid, enabled, &viewer.actor())
        .await
    {
        Ok(row) => {
            let back = format!(
                "/admin/jwt-keys{}",
                row.tenant_id
                    .map(|t| tenant_suffix(&viewer, t))
                    .unwrap_or_default()
            );
            Ok(redirect_with(&back, Flash::ok(viewer.t().key_saved)))
        }
        Err(err) => viewer.fail(err, "/admin/jwt-keys"),
    }
}
