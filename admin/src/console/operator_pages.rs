//! Operator pages (tenants, models and prices) and the pages operators share with tenant
//! admins, each seeing only their scope: users and the audit log.

use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::{TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;

use super::i18n::{self, group_thousands, money};
use super::web::{redirect_with, render, ConsoleError, Flash, Page, Pager, Viewer};
use super::Console;
use crate::entity::api_key;
use crate::limits::{Limits, LimitsChange};
use crate::users::{self, Role};
use crate::Scope;
use crate::Text;

const ADMINS: &[Role] = &[Role::TenantAdmin, Role::Operator];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants", web::get().to(list_tenants))
        .route("/tenants", web::post().to(create_tenant))
        .route("/tenants/{id}/suspended", web::post().to(set_suspended))
        .route("/tenants/{id}/limits", web::post().to(tenant_limits))
        .route("/prices", web::get().to(list_prices))
        .route("/prices", web::post().to(set_price))
        .route("/users", web::get().to(list_users))
        .route("/users", web::post().to(create_user))
        .route("/users/{id}/disabled", web::post().to(set_user_disabled))
        .route("/audit", web::get().to(audit_log));
}

pub struct TenantRow {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub keys: String,
    pub suspended: bool,
    pub rpm: String,
    pub tpm: String,
    pub max_concurrent: String,
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsPage {
    page: Page,
    rows: Vec<TenantRow>,
}

async fn list_tenants(
    viewer: Viewer,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(&[Role::Operator])?;
    let t = viewer.t();
    let tenants = crate::tenants::list_tenants(&console.db)
        .await
        .map_err(|e| viewer.internal(e))?;
    let mut rows = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let keys = api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant.id))
            .filter(api_key::Column::RevokedAt.is_null())
            .count(&console.db)
            .await
            .map_err(|e| viewer.internal(e))?;
        let limits = Limits::from_tenant(&tenant);
        let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        rows.push(TenantRow {
            id: tenant.id,
            created: i18n::date(viewer.lang, viewer.tz, tenant.created_at),
            keys: group_thousands(keys as i64),
            suspended: tenant.suspended_at.is_some(),
            rpm: num(limits.rpm),
            tpm: num(limits.tpm),
            max_concurrent: num(limits.max_concurrent),
            name: tenant.name,
        });
    }
    let page = TenantsPage {
        page: Page::new(&viewer, t.tenants_title, "/admin/tenants"),
        rows,
    };
    render(&viewer, &page)
}

#[derive(serde::Deserialize)]
struct NameForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

async fn create_tenant(
    viewer: Viewer,
    console: web::Data<Console>,
    form: web::Form<NameForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(&[Role::Operator])?;
    viewer.check_csrf(&form.csrf)?;
    match crate::tenants::insert_tenant(&console.db, form.name.trim(), &viewer.actor()).await {
        Ok(_) => Ok(redirect_with(
            "/admin/tenants",
            Flash::ok(viewer.t().tenant_saved),
        )),
        Err(err) => viewer.fail(err, "/admin/tenants"),
    }
}

#[derive(serde::Deserialize)]
struct FlagForm {
    #[serde(default)]
    csrf: String,
    value: String,
}

async fn set_suspended(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<i64>,
    form: web::Form<FlagForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(&[Role::Operator])?;
    viewer.check_csrf(&form.csrf)?;
    let suspended = form.value == "1";
    match crate::tenants::set_tenant_suspended(&console.db, *id, suspended, &viewer.actor()).await {
        Ok(_) => Ok(redirect_with(
            "/admin/tenants",
            Flash::ok(viewer.t().tenant_saved),
        )),
        Err(err) => viewer.fail(err, "/admin/tenants"),
    }
}

#[derive(serde::Deserialize)]
struct LimitsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
    #[serde(default)]
    max_concurrent: String,
}

async fn tenant_limits(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<i64>,
    form: web::Form<LimitsForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(&[Role::Operator])?;
    viewer.check_csrf(&form.csrf)?;
    let parse = super::key_pages::optional_number;
    let change = (|| {
        Ok::<_, crate::AdminError>(LimitsChange {
            rpm: Some(parse(&form.rpm, "rpm")?),
            tpm: Some(parse(&form.tpm, "tpm")?),
            max_concurrent: Some(parse(&form.max_concurrent, "max_concurrent")?),
            ..Default::default()
        })
    })();
    let result = match change {
        Ok(change) => {
            crate::limits::update_tenant_limits(
                &console.db,
                Scope::Platform,
                *id,
                change,
                &viewer.actor(),
            )
            .await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(_) => Ok(redirect_with(
            "/admin/tenants",
            Flash::ok(viewer.t().limits_saved),
        )),
        Err(err) => viewer.fail(err, "/admin/tenants"),
    }
}

pub struct PriceRow {
    pub model: String,
    pub input: String,
    pub output: String,
    pub from: String,
    pub current: bool,
    pub future: bool,
}

#[derive(Template)]
#[template(path = "console/prices.html")]
struct PricesPage {
    page: Page,
    models: Vec<String>,
    rows: Vec<PriceRow>,
    currency: String,
}

async fn list_prices(
    viewer: Viewer,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(&[Role::Operator])?;
    let t = viewer.t();
    let prices = crate::prices::list_prices(&console.db)
        .await
        .map_err(|e| viewer.internal(e))?;
    let now = Utc::now();
    let rows = prices
        .iter()
        .map(|p| {
            let current =
                crate::prices::price_at(&prices, &p.model, now).is_some_and(|c| c.id == p.id);
            PriceRow {
                model: p.model.clone(),
                input: money(viewer.lang, &console.currency, p.input_micros_per_mtok),
                output: money(viewer.lang, &console.currency, p.output_micros_per_mtok),
                from: i18n::datetime(viewer.lang, viewer.tz, p.effective_from),
                current,
                future: p.effective_from > now,
            }
        })
        .collect();
    let page = PricesPage {
        page: Page::new(&viewer, t.prices_title, "/admin/prices"),
        models: console.models.clone(),
        rows,
        currency: console.currency.to_uppercase(),
    };
    render(&viewer, &page)
}

#[derive(serde::Deserialize)]
struct PriceForm {
    #[serde(default)]
    csrf: String,
    model: String,
    input: String,
    output: String,
    #[serde(default)]
    from: String,
}

async fn set_price(
    viewer: Viewer,
    console: web::Data<Console>,
    form: web::Form<PriceForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(&[Role::Operator])?;
    viewer.check_csrf(&form.csrf)?;
    let parsed = (|| {
        let input = crate::prices::parse_micros(&form.input)?;
        let output = crate::prices::parse_micros(&form.output)?;
        let from = match form.from.trim() {
            "" => None,
            day => {
                let day = super::key_pages::form_day("from", day)?;
                let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
                viewer
                    .tz
                    .from_local_datetime(&midnight)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            }
        };
        Ok::<_, crate::AdminError>((input, output, from))
    })();
    let result = match parsed {
        Ok((input, output, from)) => {
            crate::prices::insert_price(
                &console.db,
                form.model.trim(),
                input,
                output,
                from,
                &viewer.actor(),
            )
            .await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(_) => Ok(redirect_with(
            "/admin/prices",
            Flash::ok(viewer.t().price_saved),
        )),
        Err(err) => viewer.fail(err, "/admin/prices"),
    }
}

pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub role: &'static str,
    pub tenant: String,
    pub created: String,
    pub last_sign_in: String,
    pub disabled: bool,
    pub is_me: bool,
}

pub struct RoleOption {
    pub value: &'static str,
    pub label: &'static str,
}

pub struct TenantOption {
    pub id: i64,
    pub name: String,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    page: Page,
    rows: Vec<UserRow>,
    roles: Vec<RoleOption>,
    tenants: Vec<TenantOption>,
    is_operator: bool,
}

async fn list_users(
    viewer: Viewer,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let t = viewer.t();
    let tenants = crate::tenants::list_tenants(&console.db)
        .await
        .map_err(|e| viewer.internal(e))?;
    let tenant_name = |id: Option<i64>| {
        id.and_then(|id| tenants.iter().find(|t| t.id == id))
            .map(|t| t.name.clone())
            .unwrap_or_else(|| "—".into())
    };
    let role_label = |role: &str| match role {
        "operator" => t.role_operator,
        "tenant_admin" => t.role_tenant_admin,
        _ => t.role_finance,
    };
    let rows = users::list_users(&console.db, viewer.scope())
        .await
        .map_err(|e| viewer.internal(e))?
        .into_iter()
        .map(|u| UserRow {
            id: u.id,
            role: role_label(&u.role),
            tenant: tenant_name(u.tenant_id),
            created: i18n::date(viewer.lang, viewer.tz, u.created_at),
            last_sign_in: u
                .last_login_at
                .map(|at| i18n::datetime(viewer.lang, viewer.tz, at))
                .unwrap_or_else(|| t.never.into()),
            disabled: u.disabled_at.is_some(),
            is_me: u.id == viewer.user.id,
            email: u.email,
        })
        .collect();
    let is_operator = viewer.role == Role::Operator;
    let mut roles = vec![
        RoleOption {
            value: "tenant_admin",
            label: t.role_tenant_admin,
        },
        RoleOption {
            value: "finance",
            label: t.role_finance,
        },
    ];
    if is_operator {
        roles.push(RoleOption {
            value: "operator",
            label: t.role_operator,
        });
    }
    let page = UsersPage {
        page: Page::new(&viewer, t.users_title, "/admin/users"),
        rows,
        roles,
        tenants: if is_operator {
            tenants
                .iter()
                .map(|t| TenantOption {
                    id: t.id,
                    name: t.name.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        is_operator,
    };
    render(&viewer, &page)
}

#[derive(serde::Deserialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
    role: String,
    #[serde(default)]
    tenant: Option<String>,
}

async fn create_user(
    viewer: Viewer,
    console: web::Data<Console>,
    form: web::Form<UserForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(&form.csrf)?;
    let result = async {
        let role = Role::parse(&form.role)?;
        let asked = form
            .tenant
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    crate::AdminError::invalid("tenant", Text::new("choose a tenant", "请选择租户"))
                })
            })
            .transpose()?;
        let tenant_id = match (viewer.scope(), role) {
            // A tenant admin creates tenant_admin and finance users of their own tenant only.
            (Scope::Tenant(_), Role::Operator) => return Err(crate::AdminError::NotFound("role")),
            (Scope::Tenant(own), _) => Some(own),
            (Scope::Platform, Role::Operator) => None,
            (Scope::Platform, _) => asked,
        };
        users::insert_user(
            &console.db,
            users::NewUser {
                email: form.email.clone(),
                password: SecretString::from(form.password.clone()),
                role,
                tenant_id,
            },
            &viewer.actor(),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Ok(redirect_with(
            "/admin/users",
            Flash::ok(viewer.t().user_saved),
        )),
        Err(err) => viewer.fail(err, "/admin/users"),
    }
}

async fn set_user_disabled(
    viewer: Viewer,
    console: web::Data<Console>,
    id: web::Path<i64>,
    form: web::Form<FlagForm>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    viewer.check_csrf(&form.csrf)?;
    let disabled = form.value == "1";
    match users::set_user_disabled(&console.db, viewer.scope(), *id, disabled, &viewer.actor())
        .await
    {
        Ok(_) => Ok(redirect_with(
            "/admin/users",
            Flash::ok(viewer.t().user_saved),
        )),
        Err(err) => viewer.fail(err, "/admin/users"),
    }
}

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub detail: String,
    pub ip: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    page: Page,
    rows: Vec<AuditRow>,
    pager: Pager,
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<u64>,
}

async fn audit_log(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ConsoleError> {
    viewer.require(ADMINS)?;
    let per_page = 50;
    let page_no = query.page.unwrap_or(1).max(1) - 1;
    let tenant = match viewer.scope() {
        Scope::Platform => None,
        Scope::Tenant(t) => Some(t),
    };
    let (events, total) = crate::audit::list_events_page(&console.db, tenant, page_no, per_page)
        .await
        .map_err(|e| viewer.internal(e))?;
    let rows = events
        .into_iter()
        .map(|e| AuditRow {
            at: i18n::datetime(viewer.lang, viewer.tz, e.at),
            actor: e.actor,
            action: e.action,
            object: format!("{} {}", e.object_type, e.object_id),
            detail: e.detail.unwrap_or_default(),
            ip: e.ip.unwrap_or_default(),
        })
        .collect();
    let page = AuditPage {
        page: Page::new(&viewer, viewer.t().audit_title, "/admin/audit"),
        rows,
        pager: Pager::new(page_no, per_page, total, |p| {
            format!("/admin/audit?page={}", p + 1)
        }),
    };
    render(&viewer, &page)
}
