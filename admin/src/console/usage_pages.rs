//! Dashboard, usage explorer, CSV export and monthly statements: everything read from the
//! rollups, scoped to the viewer's tenant (operators: any tenant, or all).

use actix_web::{web, HttpResponse};
use askama::Template;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use super::charts::{self, Column};
use super::i18n::{self, group_thousands, money, percent, Lang};
use super::web::{render, urlencode, ConsoleError, Page, Pager, Viewer};
use super::Console;
use crate::entity::{api_key, tenant};
use crate::insights::{self, AggQuery, Dim, Filters, Granularity, GroupValue, Sort};
use crate::usage::{self, GroupBy, Totals};
use crate::Scope;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(dashboard))
        .route("/usage", web::get().to(explorer))
        .route("/usage/export.csv", web::get().to(export_csv))
        .route("/statements", web::get().to(statements))
        .route("/statements/{month}/print", web::get().to(statement_print))
        .route("/statements/{month}/csv", web::get().to(statement_csv));
}

/// A tenant choice for operators (`None`: all tenants).
pub struct TenantChoice {
    pub id: i64,
    pub name: String,
    pub selected: bool,
}

/// The tenant a usage page is about: a tenant user's own; for an operator the one asked for,
/// or all (`None`).
fn usage_tenant(viewer: &Viewer, asked: Option<i64>) -> Result<Option<i64>, ConsoleError> {
    match viewer.scope() {
        Scope::Platform => Ok(asked),
        Scope::Tenant(_) => viewer.tenant_for(asked).map(Some),
    }
}

async fn tenant_choices(
    viewer: &Viewer,
    console: &Console,
    selected: Option<i64>,
) -> Result<Vec<TenantChoice>, ConsoleError> {
    if viewer.scope() != Scope::Platform {
        return Ok(Vec::new());
    }
    let tenants = crate::tenants::list_tenants(&console.db)
        .await
        .map_err(|e| viewer.internal(e))?;
    Ok(tenants
        .into_iter()
        .map(|t| TenantChoice {
            selected: Some(t.id) == selected,
            id: t.id,
            name: t.name,
        })
        .collect())
}

pub struct Stat {
    pub label: &'static str,
    pub value: String,
}

pub struct ModelRow {
    pub model: String,
    pub requests: String,
    pub tokens: String,
    pub cost: String,
    pub errors: String,
}

pub struct RangeLink {
    pub href: String,
    pub label: &'static str,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    page: Page,
    tenants: Vec<TenantChoice>,
    ranges: Vec<RangeLink>,
    stats: Vec<Stat>,
    chart: String,
    models_chart: String,
    models: Vec<ModelRow>,
    empty: bool,
}

#[derive(serde::Deserialize)]
struct DashboardQuery {
    range: Option<String>,
    tenant: Option<i64>,
}

fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(3600), 0).unwrap_or(t)
}

fn day_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(86_400), 0).unwrap_or(t)
}

fn totals_tokens(t: &Totals) -> i64 {
    t.prompt_tokens + t.completion_tokens
}

async fn dashboard(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<DashboardQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let t = viewer.t();
    let tenant_id = usage_tenant(&viewer, query.tenant)?;
    let range = match query.range.as_deref() {
        Some("7d") => "7d",
        Some("30d") => "30d",
        _ => "24h",
    };
    let now = Utc::now();
    let (granularity, from, to) = match range {
        "7d" => (
            Granularity::Day,
            day_floor(now) - Duration::days(6),
            day_floor(now) + Duration::days(1),
        ),
        "30d" => (
            Granularity::Day,
            day_floor(now) - Duration::days(29),
            day_floor(now) + Duration::days(1),
        ),
        _ => (
            Granularity::Hour,
            hour_floor(now) - Duration::hours(23),
            hour_floor(now) + Duration::hours(1),
        ),
    };
    let agg = AggQuery {
        tenant_id,
        granularity,
        from,
        to,
        filters: Filters::default(),
        group: None,
    };
    let db = &console.db;
    let series = insights::series(db, &agg)
        .await
        .map_err(|e| viewer.internal(e))?;
    let mut by_model = agg.clone();
    by_model.group = Some(Dim::Model);
    let (models, _) = insights::grouped(db, &by_model, Sort::Cost, 0, 12)
        .await
        .map_err(|e| viewer.internal(e))?;
    let mut total = Totals::default();
    for (_, s) in &series {
        total.requests += s.requests;
        total.errors += s.errors;
        total.prompt_tokens += s.prompt_tokens;
        total.completion_tokens += s.completion_tokens;
        total.cost_micros += s.cost_micros;
    }
    let cur = &console.currency;
    let lang = viewer.lang;
    let cols: Vec<Column> = series
        .iter()
        .map(|(at, s)| {
            let label = match granularity {
                Granularity::Hour => at.with_timezone(&viewer.tz).format("%H:00").to_string(),
                Granularity::Day => at.format("%m-%d").to_string(),
            };
            let when = match granularity {
                Granularity::Hour => i18n::datetime(lang, viewer.tz, *at),
                Granularity::Day => i18n::utc_day(lang, *at),
            };
            Column {
                tooltip: format!(
                    "{when}: {} {}, {} {}",
                    group_thousands(s.requests),
                    t.requests,
                    group_thousands(totals_tokens(s)),
                    t.tokens
                ),
                label,
                value: s.requests,
            }
        })
        .collect();
    let chart = charts::columns(t.requests, &cols, group_thousands);
    let models_chart = charts::bars(
        t.per_model,
        &models
            .iter()
            .map(|r| {
                let name = match &r.group {
                    GroupValue::Text(m) => m.clone(),
                    _ => String::new(),
                };
                (name, r.totals.requests, group_thousands(r.totals.requests))
            })
            .collect::<Vec<_>>(),
    );
    let tenant_q = tenant_id
        .filter(|_| viewer.scope() == Scope::Platform)
        .map(|id| format!("&tenant={id}"))
        .unwrap_or_default();
    let ranges = [
        ("24h", t.range_24h),
        ("7d", t.range_7d),
        ("30d", t.range_30d),
    ]
    .into_iter()
    .map(|(r, label)| RangeLink {
        href: format!("/admin/dashboard?range={r}{tenant_q}"),
        label,
        active: r == range,
    })
    .collect();
    let page = DashboardPage {
        page: Page::new(&viewer, t.nav_dashboard, "/admin/dashboard"),
        tenants: tenant_choices(&viewer, &console, tenant_id).await?,
        ranges,
        stats: vec![
            Stat {
                label: t.requests,
                value: group_thousands(total.requests),
            },
            Stat {
                label: t.tokens,
                value: group_thousands(totals_tokens(&total)),
            },
            Stat {
                label: t.spend,
                value: money(lang, cur, total.cost_micros),
            },
            Stat {
                label: t.error_rate,
                value: percent(total.errors, total.requests),
            },
        ],
        chart,
        models_chart,
        models: models
            .iter()
            .map(|r| ModelRow {
                model: match &r.group {
                    GroupValue::Text(m) => m.clone(),
                    _ => String::new(),
                },
                requests: group_thousands(r.totals.requests),
                tokens: group_thousands(totals_tokens(&r.totals)),
                cost: money(lang, cur, r.totals.cost_micros),
                errors: percent(r.totals.errors, r.totals.requests),
            })
            .collect(),
        empty: total.requests == 0,
    };
    render(&viewer, &page)
}

/// The explorer's query string (also the export's).
#[derive(serde::Deserialize, Default, Clone)]
struct ExplorerQuery {
    from: Option<String>,
    to: Option<String>,
    tenant: Option<i64>,
    key: Option<String>,
    model: Option<String>,
    user: Option<String>,
    errors: Option<String>,
    group: Option<String>,
    page: Option<u64>,
}

/// The explorer's query, validated.
struct Explore {
    tenant_id: Option<i64>,
    from: NaiveDate,
    /// Inclusive.
    to: NaiveDate,
    key_public: String,
    filters: Filters,
    group: Dim,
    group_name: &'static str,
}

fn parse_day(text: Option<&str>, default: NaiveDate) -> NaiveDate {
    text.and_then(|d| NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok())
        .unwrap_or(default)
}

fn utc_midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

async fn explore_of(
    viewer: &Viewer,
    console: &Console,
    q: &ExplorerQuery,
) -> Result<Explore, ConsoleError> {
    let tenant_id = usage_tenant(viewer, q.tenant)?;
    let today = Utc::now().date_naive();
    let mut to = parse_day(q.to.as_deref(), today);
    let mut from = parse_day(q.from.as_deref(), to - Duration::days(29));
    if from > to {
        std::mem::swap(&mut from, &mut to);
    }
    // At most about 13 months per query.
    if (to - from).num_days() > 400 {
        from = to - Duration::days(400);
    }
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let key_public = text(&q.key).unwrap_or_default();
    let key_id = if key_public.is_empty() {
        None
    } else {
        // A key of another tenant is not found: nothing matches (id -1).
        let key = crate::keys::find_key(&console.db, &key_public)
            .await
            .map_err(|e| viewer.internal(e))?
            .filter(|k| {
                tenant_id.is_none_or(|t| t == k.tenant_id) && viewer.scope().covers(k.tenant_id)
            });
        Some(key.map_or(-1, |k| k.id))
    };
    let (group, group_name) = match q.group.as_deref() {
        Some("key") => (Dim::Key, "key"),
        Some("model") => (Dim::Model, "model"),
        Some("user") => (Dim::User, "user"),
        Some("endpoint") => (Dim::Endpoint, "endpoint"),
        _ => (Dim::Bucket, "day"),
    };
    Ok(Explore {
        tenant_id,
        from,
        to,
        key_public,
        filters: Filters {
            key_id,
            model: text(&q.model),
            end_user: text(&q.user),
            errors_only: q.errors.as_deref().is_some_and(|v| !v.is_empty()),
        },
        group,
        group_name,
    })
}

impl Explore {
    fn agg(&self) -> AggQuery {
        AggQuery {
            tenant_id: self.tenant_id,
            granularity: Granularity::Day,
            from: utc_midnight(self.from),
            to: utc_midnight(self.to) + Duration::days(1),
            filters: self.filters.clone(),
            group: Some(self.group),
        }
    }

    /// The query string that reproduces this view (for links and the export).
    fn query_string(&self, viewer: &Viewer) -> String {
        let mut q = format!(
            "from={}&to={}&group={}",
            self.from, self.to, self.group_name
        );
        if let (Scope::Platform, Some(t)) = (viewer.scope(), self.tenant_id) {
            q.push_str(&format!("&tenant={t}"));
        }
        if !self.key_public.is_empty() {
            q.push_str(&format!("&key={}", urlencode(&self.key_public)));
        }
        if let Some(m) = &self.filters.model {
            q.push_str(&format!("&model={}", urlencode(m)));
        }
        if let Some(u) = &self.filters.end_user {
            q.push_str(&format!("&user={}", urlencode(u)));
        }
        if self.filters.errors_only {
            q.push_str("&errors=1");
        }
        q
    }
}

pub struct UsageRow {
    pub group: String,
    pub requests: String,
    pub errors: String,
    pub prompt: String,
    pub completion: String,
    pub total: String,
    pub cost: String,
}

fn usage_row(lang: Lang, currency: &str, group: String, t: &Totals) -> UsageRow {
    UsageRow {
        group,
        requests: group_thousands(t.requests),
        errors: group_thousands(t.errors),
        prompt: group_thousands(t.prompt_tokens),
        completion: group_thousands(t.completion_tokens),
        total: group_thousands(totals_tokens(t)),
        cost: money(lang, currency, t.cost_micros),
    }
}

pub struct GroupOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    page: Page,
    tenants: Vec<TenantChoice>,
    is_operator: bool,
    from: String,
    to: String,
    key: String,
    model: String,
    user: String,
    errors_only: bool,
    groups: Vec<GroupOption>,
    group_label: &'static str,
    rows: Vec<UsageRow>,
    total: UsageRow,
    pager: Pager,
    export_href: String,
    chart: String,
}

const PER_PAGE: u64 = 50;

async fn explorer(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<ExplorerQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let t = viewer.t();
    let ex = explore_of(&viewer, &console, &query).await?;
    let agg = ex.agg();
    let db = &console.db;
    let page_no = query.page.unwrap_or(1).max(1) - 1;
    let sort = if ex.group == Dim::Bucket {
        Sort::Group
    } else {
        Sort::Cost
    };
    let (rows, groups) = insights::grouped(db, &agg, sort, page_no * PER_PAGE, PER_PAGE)
        .await
        .map_err(|e| viewer.internal(e))?;
    let total = insights::totals(db, &agg)
        .await
        .map_err(|e| viewer.internal(e))?;
    let series = insights::series(db, &agg)
        .await
        .map_err(|e| viewer.internal(e))?;
    // Key ids → what a person recognises (name and prefix), for this page's rows only.
    let key_ids: Vec<i64> = rows
        .iter()
        .filter_map(|r| match r.group {
            GroupValue::Key(id) => Some(id),
            _ => None,
        })
        .collect();
    let keys: std::collections::HashMap<i64, api_key::Model> = if key_ids.is_empty() {
        Default::default()
    } else {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        api_key::Entity::find()
            .filter(api_key::Column::Id.is_in(key_ids))
            .all(db)
            .await
            .map_err(|e| viewer.internal(e))?
            .into_iter()
            .map(|k| (k.id, k))
            .collect()
    };
    let lang = viewer.lang;
    let cur = &console.currency;
    let label = |g: &GroupValue| match g {
        GroupValue::Time(at) => i18n::utc_day(lang, *at),
        GroupValue::Key(0) => "—".to_string(),
        GroupValue::Key(id) => keys
            .get(id)
            .map(|k| {
                if k.name.is_empty() {
                    k.prefix.clone()
                } else {
                    format!("{} ({})", k.name, k.prefix)
                }
            })
            .unwrap_or_else(|| id.to_string()),
        GroupValue::Text(s) if s.is_empty() => "—".to_string(),
        GroupValue::Text(s) => s.clone(),
        GroupValue::None => String::new(),
    };
    let qs = ex.query_string(&viewer);
    let cols: Vec<Column> = series
        .iter()
        .map(|(at, s)| Column {
            label: at.format("%m-%d").to_string(),
            tooltip: format!(
                "{}: {} {}",
                i18n::utc_day(lang, *at),
                group_thousands(s.requests),
                t.requests
            ),
            value: s.requests,
        })
        .collect();
    let group_label = match ex.group {
        Dim::Bucket => t.group_day,
        Dim::Key => t.group_key,
        Dim::Model => t.group_model,
        Dim::User => t.group_user,
        Dim::Endpoint => t.group_endpoint,
    };
    let page = UsagePage {
        page: Page::new(&viewer, t.usage_title, "/admin/usage"),
        tenants: tenant_choices(&viewer, &console, ex.tenant_id).await?,
        is_operator: viewer.scope() == Scope::Platform,
        from: ex.from.to_string(),
        to: ex.to.to_string(),
        key: ex.key_public.clone(),
        model: ex.filters.model.clone().unwrap_or_default(),
        user: ex.filters.end_user.clone().unwrap_or_default(),
        errors_only: ex.filters.errors_only,
        groups: [
            ("day", t.group_day),
            ("key", t.group_key),
            ("model", t.group_model),
            ("user", t.group_user),
            ("endpoint", t.group_endpoint),
        ]
        .into_iter()
        .map(|(value, label)| GroupOption {
            value,
            label,
            selected: value == ex.group_name,
        })
        .collect(),
        group_label,
        rows: rows
            .iter()
            .map(|r| usage_row(lang, cur, label(&r.group), &r.totals))
            .collect(),
        total: usage_row(lang, cur, t.total.to_string(), &total),
        pager: Pager::new(page_no, PER_PAGE, groups, |p| {
            format!("/admin/usage?{qs}&page={}", p + 1)
        }),
        export_href: format!("/admin/usage/export.csv?{qs}"),
        chart: charts::columns(t.requests, &cols, group_thousands),
    };
    render(&viewer, &page)
}

/// The explorer's view as CSV: the rows of `aiaas usage export --group-by day,<group>` for the
/// same tenant, days and filters (the same function computes both).
async fn export_csv(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<ExplorerQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let ex = explore_of(&viewer, &console, &query).await?;
    let mut group_by = vec![GroupBy::Day];
    if ex.tenant_id.is_none() {
        group_by.push(GroupBy::Tenant);
    }
    match ex.group {
        Dim::Key => group_by.push(GroupBy::Key),
        Dim::Model => group_by.push(GroupBy::Model),
        Dim::User => group_by.push(GroupBy::User),
        Dim::Endpoint => group_by.push(GroupBy::Endpoint),
        Dim::Bucket => {}
    }
    let export = usage::ExportQuery {
        from: utc_midnight(ex.from),
        to: utc_midnight(ex.to) + Duration::days(1),
        tenant_id: ex.tenant_id,
        group_by: group_by.clone(),
        filters: ex.filters.clone(),
    };
    let rows = usage::export(&console.db, &export)
        .await
        .map_err(|e| viewer.internal(e))?;
    let csv = usage::to_csv(&group_by, &rows);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"usage-{}-{}.csv\"", ex.from, ex.to),
        ))
        .body(csv))
}

pub struct MonthRow {
    pub month: String,
    pub requests: String,
    pub tokens: String,
    pub cost: String,
    pub print_href: String,
    pub csv_href: String,
}

#[derive(Template)]
#[template(path = "console/statements.html")]
struct StatementsPage {
    page: Page,
    tenants: Vec<TenantChoice>,
    needs_tenant: bool,
    months: Vec<MonthRow>,
    month: String,
    detail: Vec<UsageRow>,
    detail_total: Option<UsageRow>,
    print_href: String,
    csv_href: String,
}

#[derive(serde::Deserialize)]
struct StatementQuery {
    tenant: Option<i64>,
    month: Option<String>,
}

async fn statements(
    viewer: Viewer,
    console: web::Data<Console>,
    query: web::Query<StatementQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let t = viewer.t();
    let tenant_id = usage_tenant(&viewer, query.tenant)?;
    let lang = viewer.lang;
    let cur = &console.currency;
    let mut months = Vec::new();
    let mut detail = Vec::new();
    let mut detail_total = None;
    let now = Utc::now();
    let month = query
        .month
        .clone()
        .filter(|m| NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_ok())
        .unwrap_or_else(|| now.format("%Y-%m").to_string());
    let tq = |id: i64| match viewer.scope() {
        Scope::Platform => format!("?tenant={id}"),
        Scope::Tenant(_) => String::new(),
    };
    if let Some(tenant_id) = tenant_id {
        // The last twelve months, newest first.
        let mut first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or_default();
        for _ in 0..12 {
            let m = first.format("%Y-%m").to_string();
            let month_query = AggQuery {
                tenant_id: Some(tenant_id),
                granularity: Granularity::Day,
                from: utc_midnight(first),
                to: utc_midnight(first + chrono::Months::new(1)),
                filters: Filters::default(),
                group: None,
            };
            let total = insights::totals(&console.db, &month_query)
                .await
                .map_err(|e| viewer.internal(e))?;
            months.push(MonthRow {
                print_href: format!("/admin/statements/{m}/print{}", tq(tenant_id)),
                csv_href: format!("/admin/statements/{m}/csv{}", tq(tenant_id)),
                month: m,
                requests: group_thousands(total.requests),
                tokens: group_thousands(totals_tokens(&total)),
                cost: money(lang, cur, total.cost_micros),
            });
            first = first - chrono::Months::new(1);
        }
        let s = usage::statement(&console.db, tenant_id, &month, cur)
            .await
            .map_err(|e| viewer.internal(e))?;
        detail = s
            .rows
            .iter()
            .map(|r| usage_row(lang, cur, r.group[0].clone(), &r.totals))
            .collect();
        detail_total = Some(usage_row(lang, cur, t.total.to_string(), &s.total));
    }
    let page = StatementsPage {
        page: Page::new(&viewer, t.statements_title, "/admin/statements"),
        tenants: tenant_choices(&viewer, &console, tenant_id).await?,
        needs_tenant: tenant_id.is_none(),
        print_href: tenant_id
            .map(|id| format!("/admin/statements/{month}/print{}", tq(id)))
            .unwrap_or_default(),
        csv_href: tenant_id
            .map(|id| format!("/admin/statements/{month}/csv{}", tq(id)))
            .unwrap_or_default(),
        months,
        month,
        detail,
        detail_total,
    };
    render(&viewer, &page)
}

async fn one_statement(
    viewer: &Viewer,
    console: &Console,
    month: &str,
    tenant: Option<i64>,
) -> Result<usage::Statement, ConsoleError> {
    let tenant_id = viewer.tenant_for(tenant)?;
    use sea_orm::EntityTrait;
    tenant::Entity::find_by_id(tenant_id)
        .one(&console.db)
        .await
        .map_err(|e| viewer.internal(e))?
        .ok_or_else(|| viewer.not_found())?;
    usage::statement(&console.db, tenant_id, month, &console.currency)
        .await
        .map_err(|_| viewer.not_found())
}

/// The printable statement (a page of its own: no navigation, print stylesheet).
async fn statement_print(
    viewer: Viewer,
    console: web::Data<Console>,
    month: web::Path<String>,
    query: web::Query<StatementQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let s = one_statement(&viewer, &console, &month, query.tenant).await?;
    // The statement is a self-contained document with its own (inline) print stylesheet and
    // no script at all.
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .body(usage::statement_html_in(&s, &statement_labels(&viewer))))
}

/// The printed statement's words in the viewer's language.
fn statement_labels(viewer: &Viewer) -> usage::StatementLabels<'static> {
    let t = viewer.t();
    usage::StatementLabels {
        lang: viewer.lang.tag(),
        title: t.statement_title,
        tenant: t.tenant,
        period: t.period_label,
        currency: t.currency,
        model: t.model,
        requests: t.requests,
        prompt_tokens: t.prompt_tokens,
        completion_tokens: t.completion_tokens,
        total_tokens: t.total_tokens,
        cost: t.cost,
        total: t.total,
    }
}

async fn statement_csv(
    viewer: Viewer,
    console: web::Data<Console>,
    month: web::Path<String>,
    query: web::Query<StatementQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let s = one_statement(&viewer, &console, &month, query.tenant).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!(
                "attachment; filename=\"statement-{}-{}.csv\"",
                s.tenant, s.month
            ),
        ))
        .body(usage::statement_csv(&s)))
}
