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

/// The whole weeks `[w0, w1)` of a per-key table (grouped by key, no key filter) over daily
/// rollups that the weekly `key_week` rows can answer: every week that starts at or after `from`
/// and whose last day starts before `to`. The days outside them still come from `key_day`, so the
/// sums are those of the daily rows exactly. `None` when the range holds no whole week.
fn weeks_of(query: &AggQuery) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    use crate::ledger::rollups::{MONDAY, WEEK};
    if granularity_of(query) != "key_day"
        || query.group != Some(Dim::Key)
        || query.filters.key_id.is_some()
    {
        return None;
    }
    // The smallest `origin + n × step` at or after `t`, and the largest at or before it.
    let up = |t: i64, step: i64, origin: i64| t + (origin - t).rem_euclid(step);
    let down = |t: i64, step: i64, origin: i64| t - (t - origin).rem_euclid(step);
    let w0 = up(query.from.timestamp(), WEEK, MONDAY);
    let w1 = down(up(query.to.timestamp(), 86_400, 0), WEEK, MONDAY);
    if w0 >= w1 {
        return None;
    }
    Some((
        DateTime::from_timestamp(w0, 0)?,
        DateTime::from_timestamp(w1, 0)?,
    ))
}

/// The rows of one rollup family in `[from, to)` that the query's tenant and filters select.
fn rows_of(
    query: &AggQuery,
    family: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> SelectStatement {
    let mut stmt = Query::select();
    // The family is a literal, not a bound value, so that the planners can use the partial
    // indexes defined for one family (`WHERE granularity = 'key_day'`); `build` relies on this
    // condition coming first.
    stmt.from(Alias::new("usage_rollups"))
        .and_where(Expr::cust(format!("granularity = '{family}'")))
        .and_where(Expr::col(Alias::new("bucket_start")).gte(from))
        .and_where(Expr::col(Alias::new("bucket_start")).lt(to));
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
    stmt
}

/// The sums the query matches, not yet grouped: over the rows of one family, or, for a per-key
/// table spanning whole weeks, over the weekly rows of those weeks and the daily rows of the days
/// around them (`UNION ALL`).
fn base(query: &AggQuery) -> SelectStatement {
    let mut stmt =
        match weeks_of(query) {
            None => rows_of(query, granularity_of(query), query.from, query.to),
            Some((w0, w1)) => {
                let parts = [
                    ("key_week", w0, w1),
                    ("key_day", query.from, w0),
                    ("key_day", w1, query.to),
                ];
                let mut selects = parts.into_iter().filter(|(_, from, to)| from < to).map(
                    |(family, from, to)| {
                        let mut part = rows_of(query, family, from, to);
                        part.columns(std::iter::once("key_id").chain(SUMS).map(Alias::new));
                        part
                    },
                );
                let mut union = selects.next().unwrap_or_else(Query::select);
                for part in selects {
                    union.union(sea_orm::sea_query::UnionType::All, part);
                }
                let mut outer = Query::select();
                outer.from_subquery(union, Alias::new("r"));
                outer
            }
        };
    for col in SUMS {
        // PostgreSQL's SUM(bigint) is numeric: cast back so both backends return i64.
        stmt.expr_as(
            Expr::cust(format!("CAST(COALESCE(SUM({col}), 0) AS BIGINT)")),
            Alias::new(format!("sum_{col}")),
        );
    }
    stmt
}

/// The partial index (migrations `m20261124_000004`, `m20261128_000001`) that serves one
/// tenant's rows of `family` for this query: by key for a key filter, else by time.
fn index_for(query: &AggQuery, family: &str) -> Option<&'static str> {
    query.tenant_id?;
    let key = query.filters.key_id.is_some();
    match family {
        "key_day" if key => Some("idx_usage_rollups_key_days"),
        "key_day" => Some("idx_usage_rollups_key_days_by_time"),
        "key_week" => Some("idx_usage_rollups_key_weeks"),
        "day" if key => Some("idx_usage_rollups_days_by_key"),
        _ => None,
    }
}

/// The statement for `db`. SQLite's planner has no statistics unless `ANALYZE` ran, and then
/// prefers the (tenant, granularity, bucket) index, which is not covering and reads every
/// family's rows of the range; it is told which partial index to use instead (covering
/// index-only scans). PostgreSQL chooses by its statistics.
fn build(db: &impl ConnectionTrait, query: &AggQuery, stmt: &SelectStatement) -> Statement {
    let backend = db.get_database_backend();
    let mut statement = backend.build(stmt);
    if backend == DbBackend::Sqlite {
        for family in ["key_day", "key_week", "day"] {
            if let Some(index) = index_for(query, family) {
                statement.sql = statement.sql.replace(
                    &format!(r#"FROM "usage_rollups" WHERE granularity = '{family}'"#),
                    &format!(
                        r#"FROM "usage_rollups" INDEXED BY {index} WHERE granularity = '{family}'"#
                    ),
                );
            }
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
        && granularity_of(query) == "key_day"
        && query.tenant_id.is_some()
        && weeks_of(query).is_none()
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
