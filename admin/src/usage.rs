//! Usage queries and exports for finance, read from the rollups (hourly or daily), grouped as
//! asked, with money as exact decimal strings derived from integer micro-units.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::{api_key, tenant, usage_rollup};
use crate::error::{AdminError, Result};
use crate::ledger::rollups::{Group, ROLLUPS};
use crate::prices::format_micros;
use crate::Text;

/// What a row of an export is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupBy {
    Hour,
    Day,
    Tenant,
    Key,
    Model,
    User,
    Endpoint,
}

impl GroupBy {
    pub fn parse_list(text: &str) -> Result<Vec<GroupBy>> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let group = match part {
                "hour" => GroupBy::Hour,
                "day" => GroupBy::Day,
                "tenant" => GroupBy::Tenant,
                "key" => GroupBy::Key,
                "model" => GroupBy::Model,
                "user" => GroupBy::User,
                "endpoint" => GroupBy::Endpoint,
                other => {
                    let en = format!(
                        "`{other}`: group by hour, day, tenant, key, model, user or endpoint"
                    );
                    let zh = format!("`{other}`：可按小时、天、租户、密钥、模型、用户或端点分组");
                    return Err(AdminError::invalid("group_by", Text::new(en, zh)));
                }
            };
            if !out.contains(&group) {
                out.push(group);
            }
        }
        if out.contains(&GroupBy::Hour) && out.contains(&GroupBy::Day) {
            return Err(AdminError::invalid(
                "group_by",
                Text::new(
                    "group by hour or by day, not both",
                    "只能按小时或按天分组，不能同时选择",
                ),
            ));
        }
        Ok(out)
    }

    fn header(self) -> &'static str {
        match self {
            GroupBy::Hour => "hour",
            GroupBy::Day => "day",
            GroupBy::Tenant => "tenant",
            GroupBy::Key => "api_key",
            GroupBy::Model => "model",
            GroupBy::User => "user",
            GroupBy::Endpoint => "endpoint",
        }
    }
}

/// A time given as `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(date) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        if let Some(t) = date.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            AdminError::invalid(
                "time",
                Text::new(
                    format!("`{text}`: use a date (2026-11-01) or an RFC 3339 time"),
                    format!("`{text}`：请填写日期（2026-11-01）或 RFC 3339 时间"),
                ),
            )
        })
}

#[derive(Debug, Clone)]
pub struct ExportQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub tenant_id: Option<i64>,
    pub group_by: Vec<GroupBy>,
    /// Only these keys / models / end users / groups with errors (the console's filters).
    pub filters: crate::insights::Filters,
}

/// Sums of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

impl Totals {
    fn add(&mut self, r: &usage_rollup::Model) {
        self.requests += r.requests;
        self.errors += r.errors;
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cost_micros += r.cost_micros;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// One value per `group_by` entry, in its order.
    pub group: Vec<String>,
    pub totals: Totals,
}

/// Rows of usage between `from` (included) and `to` (excluded), by start of request, from the
/// hourly rollups when grouped by hour and the daily ones otherwise (then `from` and `to` must
/// be whole days).
pub async fn export(db: &impl ConnectionTrait, query: &ExportQuery) -> Result<Vec<ExportRow>> {
    let hourly = query.group_by.contains(&GroupBy::Hour);
    let step = if hourly {
        chrono::Duration::hours(1)
    } else {
        chrono::Duration::days(1)
    };
    let aligned = |t: DateTime<Utc>| t.timestamp() % step.num_seconds() == 0;
    if !aligned(query.from) || !aligned(query.to) || query.to <= query.from {
        return Err(AdminError::invalid(
            "time",
            if hourly {
                Text::new(
                    "`from` and `to` must be whole hours, `from` before `to`",
                    "`from` 和 `to` 必须是整点，且 `from` 早于 `to`",
                )
            } else {
                Text::new(
                    "`from` and `to` must be whole days (UTC), `from` before `to`",
                    "`from` 和 `to` 必须是整天（UTC），且 `from` 早于 `to`",
                )
            },
        ));
    }
    let mut select = usage_rollup::Entity::find()
        .filter(usage_rollup::Column::Granularity.eq(if hourly { "hour" } else { "day" }))
        .filter(usage_rollup::Column::BucketStart.gte(query.from))
        .filter(usage_rollup::Column::BucketStart.lt(query.to))
        .order_by_asc(usage_rollup::Column::BucketStart);
    if let Some(tenant_id) = query.tenant_id {
        select = select.filter(usage_rollup::Column::TenantId.eq(tenant_id));
    }
    let f = &query.filters;
    if let Some(key) = f.key_id {
        select = select.filter(usage_rollup::Column::KeyId.eq(key));
    }
    if let Some(model) = &f.model {
        select = select.filter(usage_rollup::Column::Model.eq(model.as_str()));
    }
    if let Some(user) = &f.end_user {
        select = select.filter(usage_rollup::Column::EndUser.eq(user.as_str()));
    }
    if f.errors_only {
        select = select.filter(usage_rollup::Column::Errors.gt(0));
    }
    let rollups = select.all(db).await?;
    let tenants: HashMap<i64, String> = tenant::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    let keys: HashMap<i64, String> = api_key::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|k| (k.id, k.public_id))
        .collect();
    let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    for r in &rollups {
        let group = query
            .group_by
            .iter()
            .map(|g| match g {
                GroupBy::Hour => r.bucket_start.format("%Y-%m-%dT%H:00:00Z").to_string(),
                GroupBy::Day => r.bucket_start.format("%Y-%m-%d").to_string(),
                GroupBy::Tenant => tenants
                    .get(&r.tenant_id)
                    .cloned()
                    .unwrap_or_else(|| r.tenant_id.to_string()),
                GroupBy::Key => keys.get(&r.key_id).cloned().unwrap_or_default(),
                GroupBy::Model => r.model.clone(),
                GroupBy::User => r.end_user.clone(),
                GroupBy::Endpoint => r.endpoint.clone(),
            })
            .collect();
        groups.entry(group).or_default().add(r);
    }
    Ok(groups
        .into_iter()
        .map(|(group, totals)| ExportRow { group, totals })
        .collect())
}

/// One CSV field, quoted when RFC 4180 says it must be.
fn field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// RFC 4180 CSV: one header row, CRLF line ends, UTF-8, money as decimals of micro-units.
pub fn to_csv(group_by: &[GroupBy], rows: &[ExportRow]) -> String {
    let mut out = String::new();
    let mut header: Vec<&str> = group_by.iter().map(|g| g.header()).collect();
    header.extend([
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
    ]);
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for row in rows {
        let t = &row.totals;
        let mut cells: Vec<String> = row.group.iter().map(|v| field(v)).collect();
        cells.extend([
            t.requests.to_string(),
            t.errors.to_string(),
            t.prompt_tokens.to_string(),
            t.completion_tokens.to_string(),
            (t.prompt_tokens + t.completion_tokens).to_string(),
            format_micros(t.cost_micros),
        ]);
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The same rows as JSON objects (cost as a decimal string and as integer micro-units).
pub fn to_json(group_by: &[GroupBy], rows: &[ExportRow]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut obj = serde_json::Map::new();
            for (g, v) in group_by.iter().zip(&row.group) {
                obj.insert(g.header().into(), v.clone().into());
            }
            let t = &row.totals;
            obj.insert("requests".into(), t.requests.into());
            obj.insert("errors".into(), t.errors.into());
            obj.insert("prompt_tokens".into(), t.prompt_tokens.into());
            obj.insert("completion_tokens".into(), t.completion_tokens.into());
            obj.insert(
                "total_tokens".into(),
                (t.prompt_tokens + t.completion_tokens).into(),
            );
            obj.insert("cost".into(), format_micros(t.cost_micros).into());
            obj.insert("cost_micros".into(), t.cost_micros.into());
            serde_json::Value::Object(obj)
        })
        .collect();
    serde_json::Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_rfc_4180_says_and_ends_lines_with_crlf() {
        let rows = vec![ExportRow {
            group: vec!["acme, inc".into(), "say \"hi\"".into()],
            totals: Totals {
                requests: 2,
                errors: 0,
                prompt_tokens: 10,
                completion_tokens: 5,
                cost_micros: 1_500_001,
            },
        }];
        let csv = to_csv(&[GroupBy::Tenant, GroupBy::User], &rows);
        assert_eq!(
            csv,
            "tenant,user,requests,errors,prompt_tokens,completion_tokens,total_tokens,cost\r\n\
             \"acme, inc\",\"say \"\"hi\"\"\",2,0,10,5,15,1.500001\r\n"
        );
    }

    #[test]
    fn group_lists_and_times_parse_as_written() {
        assert_eq!(
            GroupBy::parse_list("day,key,model").unwrap(),
            vec![GroupBy::Day, GroupBy::Key, GroupBy::Model]
        );
        assert!(GroupBy::parse_list("day,hour").is_err());
        assert!(GroupBy::parse_list("week").is_err());
        assert_eq!(
            parse_time("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }
}

/// A rollup that does not equal the sum of its raw events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub granularity: &'static str,
    pub bucket_start: DateTime<Utc>,
    pub tenant_id: i64,
    pub key_id: i64,
    pub model: String,
    pub end_user: String,
    pub endpoint: String,
    pub events: Totals,
    pub rollup: Totals,
}

/// Prove the rollups of whole days `[from, to)` equal the raw events of those days, for every
/// rollup family (`ledger::rollups::ROLLUPS`); weekly rollups are checked for the weeks wholly
/// inside the range. Run it only over days whose raw events have not been pruned.
pub async fn reconcile(
    db: &impl ConnectionTrait,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Mismatch>> {
    use crate::entity::usage_event;
    if from.timestamp() % 86_400 != 0 || to.timestamp() % 86_400 != 0 || to <= from {
        return Err(AdminError::invalid(
            "time",
            Text::new(
                "`from` and `to` must be whole days (UTC), `from` before `to`",
                "`from` 和 `to` 必须是整天（UTC），且 `from` 早于 `to`",
            ),
        ));
    }
    let events = usage_event::Entity::find()
        .filter(usage_event::Column::StartedAt.gte(from))
        .filter(usage_event::Column::StartedAt.lt(to))
        .all(db)
        .await?;
    let mut mismatches = Vec::new();
    for rollup in ROLLUPS {
        let granularity = rollup.granularity;
        let width = chrono::Duration::seconds(rollup.seconds);
        let mut expected: HashMap<Group, Totals> = HashMap::new();
        for e in events.iter().filter(|e| {
            let bucket = rollup.bucket(e.started_at);
            bucket >= from && bucket + width <= to
        }) {
            let t = expected
                .entry(rollup.group(
                    e.started_at,
                    e.tenant_id,
                    e.key_id,
                    &e.model,
                    e.end_user.as_deref(),
                    &e.endpoint,
                ))
                .or_default();
            t.requests += 1;
            t.errors += i64::from(e.status != "ok");
            t.prompt_tokens += e.prompt_tokens;
            t.completion_tokens += e.completion_tokens;
            t.cost_micros += e.cost_micros;
        }
        let rollups = usage_rollup::Entity::find()
            .filter(usage_rollup::Column::Granularity.eq(granularity))
            .filter(usage_rollup::Column::BucketStart.gte(from))
            .filter(usage_rollup::Column::BucketStart.lte(to - width))
            .all(db)
            .await?;
        for r in rollups {
            let group = (
                r.bucket_start,
                r.tenant_id,
                r.key_id,
                r.model.clone(),
                r.end_user.clone(),
                r.endpoint.clone(),
            );
            let mut rolled = Totals::default();
            rolled.add(&r);
            let events = expected.remove(&group).unwrap_or_default();
            if events != rolled {
                mismatches.push(mismatch(granularity, group, events, rolled));
            }
        }
        for (group, events) in expected {
            mismatches.push(mismatch(granularity, group, events, Totals::default()));
        }
    }
    Ok(mismatches)
}

fn mismatch(granularity: &'static str, g: Group, events: Totals, rollup: Totals) -> Mismatch {
    Mismatch {
        granularity,
        bucket_start: g.0,
        tenant_id: g.1,
        key_id: g.2,
        model: g.3,
        end_user: g.4,
        endpoint: g.5,
        events,
        rollup,
    }
}

/// Delete raw events that started before `before`; rollups keep their sums. Returns how many.
pub async fn prune_events(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64> {
    use crate::entity::usage_event;
    Ok(usage_event::Entity::delete_many()
        .filter(usage_event::Column::StartedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected)
}

/// One time bucket of the usage API, with one result per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub results: Vec<ExportRow>,
}

/// Usage of one tenant in buckets of `width_secs` (60, 3600 or 86400) from `start` (aligned
/// down to the width) until `end`, for requests to `endpoints`, grouped by `group_by` (key,
/// model, user, endpoint). Hours and days come from the rollups, minutes from the raw events.
pub async fn buckets(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    width_secs: i64,
    endpoints: &[&str],
    group_by: &[GroupBy],
) -> Result<Vec<Bucket>> {
    use crate::entity::usage_event;
    let align = |t: DateTime<Utc>| {
        let s = t.timestamp();
        DateTime::from_timestamp(s - s.rem_euclid(width_secs), 0).unwrap_or(t)
    };
    let start = align(start);
    if end <= start {
        return Ok(Vec::new());
    }
    let keys: HashMap<i64, String> = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .all(db)
        .await?
        .into_iter()
        .map(|k| (k.id, k.public_id))
        .collect();
    // (bucket start, group) → totals, from whichever source serves this width.
    let mut sums: BTreeMap<(i64, Vec<String>), Totals> = BTreeMap::new();
    let group_of = |key_id: i64, model: &str, user: &str, endpoint: &str| -> Vec<String> {
        group_by
            .iter()
            .map(|g| match g {
                GroupBy::Key => keys.get(&key_id).cloned().unwrap_or_default(),
                GroupBy::Model => model.to_string(),
                GroupBy::User => user.to_string(),
                GroupBy::Endpoint => endpoint.to_string(),
                GroupBy::Hour | GroupBy::Day | GroupBy::Tenant => String::new(),
            })
            .collect()
    };
    if width_secs == 60 {
        let events = usage_event::Entity::find()
            .filter(usage_event::Column::TenantId.eq(tenant_id))
            .filter(usage_event::Column::StartedAt.gte(start))
            .filter(usage_event::Column::StartedAt.lt(end))
            .filter(usage_event::Column::Endpoint.is_in(endpoints.iter().copied()))
            .all(db)
            .await?;
        for e in events {
            let at = align(e.started_at).timestamp();
            let group = group_of(
                e.key_id.unwrap_or(0),
                &e.model,
                e.end_user.as_deref().unwrap_or(""),
                &e.endpoint,
            );
            let t = sums.entry((at, group)).or_default();
            t.requests += 1;
            t.errors += i64::from(e.status != "ok");
            t.prompt_tokens += e.prompt_tokens;
            t.completion_tokens += e.completion_tokens;
            t.cost_micros += e.cost_micros;
        }
    } else {
        let granularity = if width_secs == 3600 { "hour" } else { "day" };
        let rollups = usage_rollup::Entity::find()
            .filter(usage_rollup::Column::Granularity.eq(granularity))
            .filter(usage_rollup::Column::TenantId.eq(tenant_id))
            .filter(usage_rollup::Column::BucketStart.gte(start))
            .filter(usage_rollup::Column::BucketStart.lt(end))
            .filter(usage_rollup::Column::Endpoint.is_in(endpoints.iter().copied()))
            .all(db)
            .await?;
        for r in rollups {
            let group = group_of(r.key_id, &r.model, &r.end_user, &r.endpoint);
            sums.entry((r.bucket_start.timestamp(), group))
                .or_default()
                .add(&r);
        }
    }
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let next = at + chrono::Duration::seconds(width_secs);
        let results = sums
            .range((at.timestamp(), Vec::new())..(next.timestamp(), Vec::new()))
            .map(|((_, group), totals)| ExportRow {
                group: group.clone(),
                totals: totals.clone(),
            })
            .collect();
        out.push(Bucket {
            start: at,
            end: next,
            results,
        });
        at = next;
    }
    Ok(out)
}

/// A tenant's monthly statement: requests, tokens and cost per model.
#[derive(Debug, Clone)]
pub struct Statement {
    pub tenant: String,
    pub month: String,
    pub currency: String,
    pub rows: Vec<ExportRow>,
    pub total: Totals,
}

/// The statement of `tenant_id` for `month` (`YYYY-MM`, UTC), from the daily rollups.
pub async fn statement(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    month: &str,
    currency: &str,
) -> Result<Statement> {
    let bad = || {
        AdminError::invalid(
            "month",
            Text::new(
                format!("`{month}`: write the month as 2026-11"),
                format!("`{month}`：月份请写成 2026-11 的形式"),
            ),
        )
    };
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(bad)?;
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(bad);
    let tenant = tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(AdminError::NotFound("tenant"))?;
    let query = ExportQuery {
        from: at(first)?,
        to: at(next)?,
        tenant_id: Some(tenant_id),
        group_by: vec![GroupBy::Model],
        filters: Default::default(),
    };
    let rows = export(db, &query).await?;
    let mut total = Totals::default();
    for r in &rows {
        total.requests += r.totals.requests;
        total.errors += r.totals.errors;
        total.prompt_tokens += r.totals.prompt_tokens;
        total.completion_tokens += r.totals.completion_tokens;
        total.cost_micros += r.totals.cost_micros;
    }
    Ok(Statement {
        tenant: tenant.name,
        month: first.format("%Y-%m").to_string(),
        currency: currency.to_uppercase(),
        rows,
        total,
    })
}

/// The statement as CSV: one row per model, then a `TOTAL` row.
pub fn statement_csv(s: &Statement) -> String {
    let mut rows = s.rows.clone();
    rows.push(ExportRow {
        group: vec!["TOTAL".into()],
        totals: s.total.clone(),
    });
    to_csv(&[GroupBy::Model], &rows)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The words of a printed statement, in one language.
#[derive(Debug, Clone, Copy)]
pub struct StatementLabels<'a> {
    /// The document's `lang` (BCP 47).
    pub lang: &'a str,
    pub title: &'a str,
    pub tenant: &'a str,
    pub period: &'a str,
    pub currency: &'a str,
    pub model: &'a str,
    pub requests: &'a str,
    pub prompt_tokens: &'a str,
    pub completion_tokens: &'a str,
    pub total_tokens: &'a str,
    pub cost: &'a str,
    pub total: &'a str,
}

impl StatementLabels<'static> {
    /// What `aiaas usage statement --format html` prints.
    pub const ENGLISH: Self = Self {
        lang: "en",
        title: "Usage statement",
        tenant: "Tenant",
        period: "Period",
        currency: "Currency",
        model: "Model",
        requests: "Requests",
        prompt_tokens: "Prompt tokens",
        completion_tokens: "Completion tokens",
        total_tokens: "Total tokens",
        cost: "Cost",
        total: "Total",
    };
}

/// The statement as a printable HTML document, in English.
pub fn statement_html(s: &Statement) -> String {
    statement_html_in(s, &StatementLabels::ENGLISH)
}

/// The statement as a printable HTML page (no scripts, no external resources) with these labels
/// (the console's language). Only the words change: the figures are the same exact decimals in
/// every language.
pub fn statement_html_in(s: &Statement, l: &StatementLabels) -> String {
    let row = |name: &str, t: &Totals, strong: bool| {
        let (open, close) = if strong {
            ("<th>", "</th>")
        } else {
            ("<td>", "</td>")
        };
        format!(
            "<tr>{open}{}{close}<td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td></tr>\n",
            escape(name),
            t.requests,
            t.prompt_tokens,
            t.completion_tokens,
            t.prompt_tokens + t.completion_tokens,
            format_micros(t.cost_micros),
        )
    };
    let mut body = String::new();
    for r in &s.rows {
        body.push_str(&row(&r.group[0], &r.totals, false));
    }
    format!(
        "<!doctype html>\n<html lang={lang}><head><meta charset=utf-8>\
         <title>{title} {month} - {tenant}</title>\n<style>\
         body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}\
         th,td{{border-bottom:1px solid #ccc;padding:.4em;text-align:left}}.n{{text-align:right}}\
         tfoot th,tfoot td{{border-top:2px solid #000;font-weight:bold}}\
         @media print{{body{{margin:0}}}}</style></head>\n<body>\n\
         <h1>{title}</h1>\n<p>{l_tenant}: <strong>{tenant}</strong><br>{l_period}: {month} \
         (UTC)<br>{l_currency}: {currency}</p>\n<table>\n<thead><tr><th>{l_model}</th>\
         <th class=n>{l_requests}</th><th class=n>{l_prompt}</th><th class=n>{l_completion}</th>\
         <th class=n>{l_total_tokens}</th><th class=n>{l_cost}</th></tr></thead>\n<tbody>\n\
         {body}</tbody>\n<tfoot>{total}</tfoot>\n</table>\n</body></html>\n",
        lang = escape(l.lang),
        title = escape(l.title),
        l_tenant = escape(l.tenant),
        l_period = escape(l.period),
        l_currency = escape(l.currency),
        l_model = escape(l.model),
        l_requests = escape(l.requests),
        l_prompt = escape(l.prompt_tokens),
        l_completion = escape(l.completion_tokens),
        l_total_tokens = escape(l.total_tokens),
        l_cost = escape(l.cost),
        month = escape(&s.month),
        tenant = escape(&s.tenant),
        currency = escape(&s.currency),
        total = row(l.total, &s.total, true),
    )
}
