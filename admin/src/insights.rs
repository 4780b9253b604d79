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
/// and whose last day starts before `to`. `week_parts` adds the days around them, so the sums are
/// those of the daily rows exactly. `None` when the range holds no whole week.
fn weeks_of(query: &AggQuery) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    use crate::ledger::rollups::{ceil_to, floor_to, DAY, MONDAY, WEEK};
    if granularity_of(query) != "key_day"
        || query.group != Some(Dim::Key)
        || query.filters.key_id.is_some()
    {
        return None;
    }
    let w0 = ceil_to(query.from.timestamp(), WEEK, MONDAY);
    let w1 = floor_to(ceil_to(query.to.timestamp(), DAY, 0), WEEK, MONDAY);
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
/// Rows of one family in `[from, to)`, added (`1`) or subtracted (`-1`).
type Part = (&'static str, DateTime<Utc>, DateTime<Utc>, i8);

/// The rows a per-key table over whole weeks reads, each added (`1`) or subtracted (`-1`): the
/// weekly rows of the whole weeks, and at either end the cheaper of the daily rows of the days
/// in range, or the weekly row of that week minus the daily rows of its days out of range (so
/// an end reads at most three days: for "the last 30 days" the days after today hold nothing).
fn week_parts(query: &AggQuery) -> Option<Vec<Part>> {
    use crate::ledger::rollups::{ceil_to, DAY, WEEK};
    let (w0, w1) = weeks_of(query)?;
    let time = |t: i64| DateTime::from_timestamp(t, 0);
    // The first and the last day (exclusive) whose daily rows the range counts.
    let first = ceil_to(query.from.timestamp(), DAY, 0);
    let end = ceil_to(query.to.timestamp(), DAY, 0);
    let (w0, w1) = (w0.timestamp(), w1.timestamp());
    let mut parts = vec![("key_week", time(w0)?, time(w1)?, 1)];
    if first < w0 {
        if (w0 - first) / DAY > 3 {
            parts.push(("key_week", time(w0 - WEEK)?, time(w0)?, 1));
            parts.push(("key_day", time(w0 - WEEK)?, time(first)?, -1));
        } else {
            parts.push(("key_day", time(first)?, time(w0)?, 1));
        }
    }
    if w1 < end {
        if (end - w1) / DAY > 3 {
            parts.push(("key_week", time(w1)?, time(w1 + WEEK)?, 1));
            parts.push(("key_day", time(end)?, time(w1 + WEEK)?, -1));
        } else {
            parts.push(("key_day", time(w1)?, time(end)?, 1));
        }
    }
    Some(parts)
}

/// The sums the query matches, not yet grouped: over the rows of one family, or, for a per-key
/// table spanning whole weeks, over the signed parts of `week_parts` (`UNION ALL`; `grouped`
/// then drops keys whose parts cancel out).
fn base(query: &AggQuery) -> SelectStatement {
    let mut stmt = match week_parts(query) {
        None => rows_of(query, granularity_of(query), query.from, query.to),
        Some(parts) => {
            let mut selects = parts.into_iter().map(|(family, from, to, sign)| {
                let mut part = rows_of(query, family, from, to);
                part.column(Alias::new("key_id"));
                for col in SUMS {
                    if sign < 0 {
                        part.expr_as(Expr::cust(format!("-{col}")), Alias::new(col));
                    } else {
                        part.column(Alias::new(col));
                    }
                }
                part
            });
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
    build_for(db.get_database_backend(), query, stmt)
}

fn build_for(backend: DbBackend, query: &AggQuery, stmt: &SelectStatement) -> Statement {
    let mut statement = backend.build(stmt);
    if backend == DbBackend::Sqlite {
        for family in ["key_day", "key_week", "day"] {
            if let Some(index) = index_for(query, family) {
                // sea-query writes the custom condition in parentheses.
                let from = format!(r#"FROM "usage_rollups" WHERE (granularity = '{family}')"#);
                let indexed = from.replacen(
                    r#""usage_rollups""#,
                    &format!(r#""usage_rollups" INDEXED BY {index}"#),
                    1,
                );
                statement.sql = statement.sql.replace(&from, &indexed);
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

/// A PostgreSQL planner setting for one tenant's per-key table, measured on the console bench
/// (`bench/README.md`, console pages; 1,000,000 events over 10,000 keys, 2 cores):
/// - over whole weeks (`key_week` and `key_day` rows, `UNION ALL`): no parallel workers. Its
///   planner splits the ~80k rows over two workers and merges their partial aggregates, which
///   took 90–120 ms against 55–78 ms in one process;
/// - over days only: no hash aggregate. It chose a parallel sequential scan and hashed the rows;
///   aggregating the covering index-only scan in key order took half the time.
fn planner_setting(db: &impl ConnectionTrait, query: &AggQuery) -> Option<&'static str> {
    if db.get_database_backend() != DbBackend::Postgres
        || query.group != Some(Dim::Key)
        || granularity_of(query) != "key_day"
        || query.tenant_id.is_none()
    {
        return None;
    }
    Some(match weeks_of(query) {
        Some(_) => "SET LOCAL max_parallel_workers_per_gather = 0",
        None => "SET LOCAL enable_hashagg = off",
    })
}

/// Runs a grouped statement, with its planner setting if it has one (scoped to this statement
/// by a read-only transaction).
async fn query_groups(
    db: &(impl ConnectionTrait + TransactionTrait),
    query: &AggQuery,
    statement: Statement,
) -> Result<Vec<QueryResult>> {
    let Some(setting) = planner_setting(db, query) else {
        return Ok(db.query_all(statement).await?);
    };
    let txn = db
        .begin_with_config(None, Some(AccessMode::ReadOnly))
        .await?;
    txn.execute_unprepared(setting).await?;
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
    if week_parts(query).is_some() {
        // A key used only on days that a week's part subtracts again: every rollup row counts
        // at least one request, so a group with none has no rows in range.
        stmt.and_having(Expr::cust("SUM(requests) <> 0"));
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn by_key(from: &str, to: &str) -> AggQuery {
        AggQuery {
            tenant_id: Some(1),
            granularity: Granularity::Day,
            from: at(from),
            to: at(to),
            filters: Filters::default(),
            group: Some(Dim::Key),
        }
    }

    #[test]
    fn whole_weeks_are_those_every_day_of_which_the_daily_rows_would_count() {
        let weeks = |q: &AggQuery| weeks_of(q).map(|(a, b)| (a.to_rfc3339(), b.to_rfc3339()));
        // 2026-10-29 is a Thursday, 2026-11-29 a Sunday: the weeks of Mondays 2, 9 and 16.
        assert_eq!(
            weeks(&by_key("2026-10-29T00:00:00Z", "2026-11-29T00:00:00Z")),
            Some((
                "2026-11-02T00:00:00+00:00".into(),
                "2026-11-23T00:00:00+00:00".into()
            ))
        );
        // Ending on a Monday at midnight includes the week before it.
        assert_eq!(
            weeks(&by_key("2026-11-02T00:00:00Z", "2026-11-30T00:00:00Z")),
            Some((
                "2026-11-02T00:00:00+00:00".into(),
                "2026-11-30T00:00:00+00:00".into()
            ))
        );
        // Off day boundaries: daily rows from Thursday 5 (the first day starting after 16:00 on
        // the 4th) to Tuesday 24 (starting before 08:00 on the 24th).
        assert_eq!(
            weeks(&by_key("2026-11-04T16:00:00Z", "2026-11-24T08:00:00Z")),
            Some((
                "2026-11-09T00:00:00+00:00".into(),
                "2026-11-23T00:00:00+00:00".into()
            ))
        );
        assert_eq!(
            weeks(&by_key("2026-11-20T00:00:00Z", "2026-11-25T00:00:00Z")),
            None
        );
        let mut one_key = by_key("2026-10-29T00:00:00Z", "2026-11-29T00:00:00Z");
        one_key.filters.key_id = Some(7);
        assert_eq!(weeks(&one_key), None, "one key reads its days");
        let mut by_model = by_key("2026-10-29T00:00:00Z", "2026-11-29T00:00:00Z");
        by_model.group = Some(Dim::Model);
        assert_eq!(weeks(&by_model), None);
    }

    #[test]
    fn sqlite_statements_name_the_partial_index_of_each_family() {
        let query = by_key("2026-10-29T00:00:00Z", "2026-11-29T00:00:00Z");
        let sql = build_for(DbBackend::Sqlite, &query, &base(&query)).sql;
        assert!(
            sql.contains(r#""usage_rollups" INDEXED BY idx_usage_rollups_key_weeks WHERE (granularity = 'key_week')"#),
            "{sql}"
        );
        // Thursday 29 to Sunday 1 is read as the week of Monday 26 minus its first three
        // days; Monday 23 to Saturday 28 as that week minus Sunday 29.
        assert_eq!(
            sql.matches("INDEXED BY idx_usage_rollups_key_weeks")
                .count(),
            3,
            "{sql}"
        );
        assert_eq!(
            sql.matches("INDEXED BY idx_usage_rollups_key_days_by_time")
                .count(),
            2,
            "{sql}"
        );
        assert_eq!(sql.matches("-requests").count(), 2, "{sql}");
        let mut one_key = query.clone();
        one_key.filters.key_id = Some(7);
        let sql = build_for(DbBackend::Sqlite, &one_key, &base(&one_key)).sql;
        assert!(
            sql.contains("INDEXED BY idx_usage_rollups_key_days WHERE"),
            "{sql}"
        );
        let postgres = build_for(DbBackend::Postgres, &query, &base(&query)).sql;
        assert!(!postgres.contains("INDEXED BY"), "{postgres}");
    }
}
