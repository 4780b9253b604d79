//! The OpenAI-style usage API, scoped to the caller's tenant:
//! `GET /v1/organization/usage/completions`, `GET /v1/organization/usage/embeddings` and
//! `GET /v1/organization/costs`, with `start_time`, `end_time`, `bucket_width` (1m, 1h, 1d),
//! `group_by` (model, api_key_id, user_id), `limit` and `page`. Hours and days are read from the
//! rollups, minutes from the raw events.

use actix_web::{web, HttpRequest, HttpResponse};
use aiaas_admin::auth::Credential;
use aiaas_admin::usage::{self, Bucket, GroupBy};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::state::AppState;

const COMPLETIONS: &[&str] = &["/v1/chat/completions", "/v1/completions"];
const EMBEDDINGS: &[&str] = &["/v1/embeddings"];
const ALL: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/organization/usage/completions",
        web::get().to(usage_completions),
    )
    .route(
        "/v1/organization/usage/embeddings",
        web::get().to(usage_embeddings),
    )
    .route("/v1/organization/costs", web::get().to(costs));
}

#[derive(Clone, Copy, PartialEq)]
enum Report {
    Completions,
    Embeddings,
    Costs,
}

struct Query {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    width: i64,
    group_by: Vec<GroupBy>,
    limit: usize,
}

fn parse_query(req: &HttpRequest) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|e| ApiError::bad_json(format!("Invalid query string: {e}")))?
            .into_inner();
    let one = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let time = |name: &'static str, value: &str| -> Result<DateTime<Utc>, ApiError> {
        value
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` must be Unix seconds.")))
    };
    let start = time(
        "start_time",
        one("start_time")
            .ok_or_else(|| ApiError::invalid("start_time", "`start_time` is required."))?,
    )?;
    let mut end = match one("end_time") {
        Some(v) => time("end_time", v)?,
        None => Utc::now(),
    };
    let (width, default_limit, max_limit) = match one("bucket_width").unwrap_or("1d") {
        "1m" => (60, 60, 1440),
        "1h" => (3600, 24, 168),
        "1d" => (86_400, 7, 31),
        other => {
            return Err(ApiError::invalid(
                "bucket_width",
                format!("`bucket_width` must be 1m, 1h or 1d, not `{other}`."),
            ))
        }
    };
    let limit = match one("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max_limit).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("`limit` must be between 1 and {max_limit} for this bucket width."),
                )
            })?,
        None => default_limit,
    };
    let mut start = start;
    if let Some(page) = one("page") {
        start = time("page", page)?;
    }
    let mut group_by = Vec::new();
    for (k, v) in &pairs {
        if k != "group_by" && k != "group_by[]" {
            continue;
        }
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let group = match name {
                "model" => GroupBy::Model,
                "api_key_id" => GroupBy::Key,
                "user_id" => GroupBy::User,
                "project_id" | "line_item" => continue,
                other => {
                    return Err(ApiError::invalid(
                        "group_by",
                        format!("`group_by` accepts model, api_key_id and user_id, not `{other}`."),
                    ))
                }
            };
            if !group_by.contains(&group) {
                group_by.push(group);
            }
        }
    }
    if end < start {
        end = start;
    }
    Ok(Query {
        start,
        end,
        width,
        group_by,
        limit,
    })
}

async fn usage_completions(
    caller: Authenticated,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    report(caller, req, state, Report::Completions).await
}

async fn usage_embeddings(
    caller: Authenticated,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    report(caller, req, state, Report::Embeddings).await
}

async fn costs(
    caller: Authenticated,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    report(caller, req, state, Report::Costs).await
}

async fn report(
    caller: Authenticated,
    req: HttpRequest,
    state: web::Data<AppState>,
    kind: Report,
) -> Result<HttpResponse, ApiError> {
    if caller.0.credential == Credential::Anonymous {
        return Err(ApiError::forbidden(
            "Usage reports need a tenant's credential (authentication is switched off).",
        ));
    }
    let query = parse_query(&req)?;
    // Operators name the tenant; a tenant's credential reads its own tenant only.
    let asked = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().into_iter().find(|(k, _)| k == "tenant"))
        .map(|(_, v)| v);
    let tenant_id = match (&caller.0.credential, asked) {
        (Credential::Operator, None) => {
            return Err(ApiError::invalid(
                "tenant",
                "An operator token must name the `tenant` whose usage it reads.",
            ))
        }
        (_, Some(name)) => {
            let tenant = aiaas_admin::tenants::find_tenant_by_name(&state.db, &name)
                .await
                .map_err(|err| {
                    tracing::error!(error = %err, "tenant lookup failed");
                    ApiError::internal()
                })?;
            match tenant {
                Some(t)
                    if caller.0.credential == Credential::Operator
                        || t.id == caller.0.tenant_id =>
                {
                    t.id
                }
                _ => {
                    return Err(ApiError::forbidden(
                        "A tenant's credential reads its own tenant's usage only.",
                    ))
                }
            }
        }
        (_, None) => caller.0.tenant_id,
    };
    let endpoints = match kind {
        Report::Completions => COMPLETIONS,
        Report::Embeddings => EMBEDDINGS,
        Report::Costs => ALL,
    };
    // One bucket more than asked, to know whether there is a next page.
    let span = chrono::Duration::seconds(query.width * (query.limit as i64 + 1));
    let until = query.end.min(query.start + span);
    let mut buckets = usage::buckets(
        &state.db,
        tenant_id,
        query.start,
        until,
        query.width,
        endpoints,
        &query.group_by,
    )
    .await
    .map_err(|err| {
        tracing::error!(error = %err, "usage query failed");
        ApiError::internal()
    })?;
    let has_more = buckets.len() > query.limit;
    buckets.truncate(query.limit);
    let next_page = has_more
        .then(|| buckets.last().map(|b| b.end.timestamp().to_string()))
        .flatten();
    let currency = state.currency.clone();
    let data: Vec<Value> = buckets
        .iter()
        .map(|b| bucket_json(b, kind, &query.group_by, &currency))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "page",
        "data": data,
        "has_more": has_more,
        "next_page": next_page,
    })))
}

fn bucket_json(bucket: &Bucket, kind: Report, group_by: &[GroupBy], currency: &str) -> Value {
    let results: Vec<Value> = bucket
        .results
        .iter()
        .map(|row| {
            let field = |g: GroupBy| {
                group_by
                    .iter()
                    .position(|x| *x == g)
                    .map(|i| Value::from(row.group[i].clone()))
                    .unwrap_or(Value::Null)
            };
            let t = &row.totals;
            match kind {
                Report::Completions => json!({
                    "object": "organization.usage.completions.result",
                    "input_tokens": t.prompt_tokens,
                    "output_tokens": t.completion_tokens,
                    "input_cached_tokens": 0,
                    "input_audio_tokens": 0,
                    "output_audio_tokens": 0,
                    "num_model_requests": t.requests,
                    "project_id": null,
                    "user_id": field(GroupBy::User),
                    "api_key_id": field(GroupBy::Key),
                    "model": field(GroupBy::Model),
                    "batch": null,
                }),
                Report::Embeddings => json!({
                    "object": "organization.usage.embeddings.result",
                    "input_tokens": t.prompt_tokens,
                    "num_model_requests": t.requests,
                    "project_id": null,
                    "user_id": field(GroupBy::User),
                    "api_key_id": field(GroupBy::Key),
                    "model": field(GroupBy::Model),
                }),
                Report::Costs => json!({
                    "object": "organization.costs.result",
                    "amount": {
                        // OpenAI sends a number; the exact integer is beside it.
                        "value": t.cost_micros as f64 / 1_000_000.0,
                        "value_micros": t.cost_micros,
                        "currency": currency,
                    },
                    "line_item": field(GroupBy::Model),
                    "project_id": null,
                    "api_key_id": field(GroupBy::Key),
                    "user_id": field(GroupBy::User),
                }),
            }
        })
        .collect();
    json!({
        "object": "bucket",
        "start_time": bucket.start.timestamp(),
        "end_time": bucket.end.timestamp(),
        "results": results,
    })
}
