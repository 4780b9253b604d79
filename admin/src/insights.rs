//! Usage aggregates for the console, computed by the database from the rollups (hourly or
//! daily) with `GROUP BY`, so a page over millions of events reads a few thousand rollup rows
//! and returns one page of groups: dashboard series, per-model breakdowns and the usage
//! explorer's grouped, filtered, paginated tables.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, Order, Query, SelectStatement};
use sea_orm::{AccessMode, ConnectionTrait, DbBackend, QueryResult, Statement, TransactionTrait};

use crate::error::Result;
use crate::usage::Totals;

/// Which rollups to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }
}

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Bucket,
    Key,
    Model,
    User,
    Endpoint,
}

impl Dim {
    fn column(self) -> &'static str {
        match self {
            Self::Bucket => "bucket_start",
            Self::Key => "key_id",
            Self::Model => "model",
            Self::User => "end_user",
            Self::Endpoint => "endpoint",
        }
    }
}

/// Filters of the usage explorer (all optional).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub key_id: Option<i64>,
    pub model: Option<String>,
    pub end_user: Option<String>,
    /// Only groups of rollups that saw errors.
    pub errors_only: bool,
}

#[derive(Debug, Clone)]
pub struct AggQuery {
    /// `None`: every tenant (operators).
    pub tenant_id: Option<i64>,
    pub granularity: Granularity,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub filters: Filters,
    pub group: Option<Dim>,
}

/// One group's value: a time, a key id or a text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupValue {
    Time(DateTime<Utc>),
    Key(i64),
    Text(String),
    None,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub group: GroupValue,
    pub totals: Totals,
}

const SUMS: [&str; 5] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
];

/// The rollups that answer a query: the smallest family that keeps every dimension it filters
/// or groups by (see `ledger::rollups::ROLLUPS`).
fn granularity_of(query: &AggQuery) -> &'static str {
    let f = &query.filters;
    let group = query.group;
    let key = f.key_id.is_some() || group == Some(Dim::Key);
    let user = f.end_user.is_some() || group == Some(Dim::User);
    let model = f.model.is_some() || matches!(group, Some(Dim::Model | Dim::Endpoint));
    // `errors_only` selects rollup rows with errors: those of the fine families.
    let fine = user || f.errors_only;
    match query.granularity {
        Granularity::Hour if fine || key => "hour",
        Granularity::Hour => "tenant_hour",
        Granularity::Day if fine || (key && model) => "day",
        Granularity::Day if key => "key_day",
        Granularity::Day => "tenant_day",
    }
}

fn base(query: &AggQuery) -> SelectStatement {
    let mut stmt = Query::select();
    // The family is a literal, not a bound value, so that the planners can use the partial
    // indexes defined for one family (`WHERE granularity = 'key_day'`).
    stmt.from(Alias::new("usage_rollups"))
        .and_where(Expr::cust(format!(
            "granularity = '{}'",
            granularity_of(query)
        )))
        .and_where(Expr::col(Alias::new("bucket_start")).gte(query.from))
        .and_where(Expr::col(Alias::new("bucket_start")).lt(query.to));
    if let Some(tenant) = query.tenant_id {
        stmt.and_where(Expr::col(Alias::new("tenant_id")).eq(tenant));
    }
    let f = &query.filters;
    if let Some(key) = f.key_id {
        stmt.and_where(Expr::col(Alias::new("key_id")).eq(key));
    }
    if let Some(model) = &f.model {
        stmt.and_where(Expr::col(Alias::new("model")).eq(model.as_str()));
    }
    if let Some(user) = &f.end_user {
        stmt.and_where(Expr::col(Alias::new("end_user")).eq(user.as_str()));
    }
    if f.errors_only {
        stmt.and_where(Expr::col(Alias::new("errors")).gt(0));
    }
    for col in SUMS {
        // PostgreSQL's SUM(bigint) is numeric: cast back so both backends return i64.
        stmt.expr_as(
            Expr::cust(format!("CAST(COALESCE(SUM({col}), 0) AS BIGINT)")),
            Alias::new(format!("sum_{col}")),
        );
    }
    stmt
}

/// The partial index (migration `m20261124_000004`) that serves one tenant's per-key reads.
fn key_index(query: &AggQuery) -> Option<&'static str> {
    query.tenant_id?;
    match granularity_of(query) {
        "key_day" => Some("idx_usage_rollups_key_days"),
        "day" if query.filters.key_id.is_some() => Some("idx_usage_rollups_days_by_key"),
        _ => None,
    }
}

/// The statement for `db`. SQLite's planner has no statistics unless `ANALYZE` ran, and then
/// prefers the (tenant, granularity, bucket) index, which reads every row of the range and
/// sorts them; it is told to use the per-key index instead (a covering index-only scan in key
/// order). PostgreSQL chooses by its statistics.
fn build(db: &impl ConnectionTrait, query: &AggQuery, stmt: &SelectStatement) -> Statement {
    let backend = db.get_database_backend();
    let mut statement = backend.build(stmt);
    if backend == DbBackend::Sqlite {
        if let Some(index) = key_index(query) {
            statement.sql = statement.sql.replacen(
                r#"FROM "usage_rollups""#,
                &format!(r#"FROM "usage_rollups" INDEXED BY {index}"#),
                1,
            );
        }
    }
    statement
}

fn totals_of(row: &QueryResult) -> Result<Totals> {
    let get = |col: &str| row.try_get::<i64>("", &format!("sum_{col}"));
    Ok(Totals {
        requests: get("requests")?,
        errors: get("errors")?,
        prompt_tokens: get("prompt_tokens")?,
        completion_tokens: get("completion_tokens")?,
        cost_micros: get("cost_micros")?,
    })
}

/// Sums over everything the query matches. The grouping does not change them, so they are read
/// from the smallest family the filters allow (a per-key table's total needs no per-key rows).
pub async fn totals(db: &impl ConnectionTrait, query: &AggQuery) -> Result<Totals> {
    let query = &AggQuery {
        group: None,
        ..query.clone()
    };
    let stmt = base(query);
    let row = db.query_one(build(db, query, &stmt)).await?;
    match row {
        Some(row) => totals_of(&row),
        None => Ok(Totals::default()),
    }
}

/// How a grouped table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By the group value (times ascending).
    Group,
    /// Most expensive first, then most requests.
    Cost,
    Requests,
}

/// Whether PostgreSQL should aggregate the per-key rows as they come out of the per-key index
/// (already in key order) instead of hashing them. Its planner prefers a hash aggregate over a
/// sequential or parallel scan for ten thousand keys, which measured twice as slow (see
/// `bench/README.md`, console pages).
fn stream_by_key(db: &impl ConnectionTrait, query: &AggQuery) -> bool {
    db.get_database_backend() == DbBackend::Postgres
        && query.group == Some(Dim::Key)
        && key_index(query).is_some()
}

/// Runs a grouped statement; on PostgreSQL per-key groups are aggregated in index order (a
/// read-only transaction scopes the planner setting to this one statement).
async fn query_groups(
    db: &(impl ConnectionTrait + TransactionTrait),
    query: &AggQuery,
    statement: Statement,
) -> Result<Vec<QueryResult>> {
    if !stream_by_key(db, query) {
        return Ok(db.query_all(statement).await?);
    }
    let txn = db
        .begin_with_config(None, Some(AccessMode::ReadOnly))
        .await?;
    txn.execute_unprepared("SET LOCAL enable_hashagg = off")
        .await?;
    let rows = txn.query_all(statement).await?;
    txn.commit().await?;
    Ok(rows)
}

/// One page of groups and the number of groups over all pages.
pub async fn grouped(
    db: &(impl ConnectionTrait + TransactionTrait),
    query: &AggQuery,
    sort: Sort,
    offset: u64,
    limit: u64,
) -> Result<(Vec<Row>, u64)> {
    let Some(dim) = query.group else {
        let totals = totals(db, query).await?;
        return Ok((
            vec![Row {
                group: GroupValue::None,
                totals,
            }],
            1,
        ));
    };
    let col = Alias::new(dim.column());
    let mut stmt = base(query);
    stmt.column(col.clone()).group_by_col(col.clone());
    let mut count = Query::select();
    count
        .expr_as(Expr::cust("COUNT(*)"), Alias::new("n"))
        .from_subquery(stmt.clone(), Alias::new("groups"));
    // The number of groups comes with the page (a window over the groups), so the rollups
    // are read once; only a page past the end needs the separate count.
    stmt.expr_as(Expr::cust("COUNT(*) OVER ()"), Alias::new("n_groups"));
    match sort {
        Sort::Group => {
            stmt.order_by(col.clone(), Order::Asc);
        }
        Sort::Cost => {
            stmt.order_by_expr(Expr::cust("sum_cost_micros"), Order::Desc)
                .order_by_expr(Expr::cust("sum_requests"), Order::Desc)
                .order_by(col.clone(), Order::Asc);
        }
        Sort::Requests => {
            stmt.order_by_expr(Expr::cust("sum_requests"), Order::Desc)
                .order_by(col.clone(), Order::Asc);
        }
    }
    stmt.offset(offset).limit(limit);
    let rows = query_groups(db, query, build(db, query, &stmt)).await?;
    let total = match rows.first() {
        Some(row) => row.try_get::<i64>("", "n_groups")?.max(0) as u64,
        None if offset == 0 => 0,
        None => match query_groups(db, query, build(db, query, &count))
            .await?
            .first()
        {
            Some(row) => row.try_get::<i64>("", "n")?.max(0) as u64,
            None => 0,
        },
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let group = match dim {
            Dim::Bucket => GroupValue::Time(row.try_get::<DateTime<Utc>>("", dim.column())?),
            Dim::Key => GroupValue::Key(row.try_get::<i64>("", dim.column())?),
            Dim::Model | Dim::User | Dim::Endpoint => {
                GroupValue::Text(row.try_get::<String>("", dim.column())?)
            }
        };
        out.push(Row {
            group,
            totals: totals_of(&row)?,
        });
    }
    Ok((out, total))
}

/// A time series with one point per bucket from `from` to `to`, empty buckets included.
pub async fn series(
    db: &(impl ConnectionTrait + TransactionTrait),
    query: &AggQuery,
) -> Result<Vec<(DateTime<Utc>, Totals)>> {
    let mut query = query.clone();
    query.group = Some(Dim::Bucket);
    let (rows, _) = grouped(db, &query, Sort::Group, 0, 10_000).await?;
    let mut by_time: std::collections::HashMap<i64, Totals> = rows
        .into_iter()
        .filter_map(|r| match r.group {
            GroupValue::Time(t) => Some((t.timestamp(), r.totals)),
            _ => None,
        })
        .collect();
    let step = query.granularity.seconds();
    let mut out = Vec::new();
    let mut at = query.from.timestamp();
    at -= at.rem_euclid(step);
    while at < query.to.timestamp() {
        let time = DateTime::from_timestamp(at, 0).unwrap_or(query.from);
        out.push((time, by_time.remove(&at).unwrap_or_default()));
        at += step;
    }
    Ok(out)
}
