//! Per-key weekly rollups (`key_week`: per tenant and key, ISO weeks starting Monday 00:00 UTC),
//! back-filled here from the per-key daily ones; the ledger writer maintains them from now on.
//! A month of per-key sums then reads about four weekly rows per key and daily rows only for
//! the days at either end, instead of thirty daily rows per key.
//!
//! Two covering partial indexes lead with the bucket, so that a date range reads only the rows
//! inside it (whatever the history before it): one over the weekly rows and one over the daily
//! per-key rows (the existing `idx_usage_rollups_key_days` leads with the key, for key filters).

use sea_orm::prelude::ChronoDateTimeUtc;
use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const KEY_WEEKS_INDEX: &str = "idx_usage_rollups_key_weeks";
const KEY_DAYS_BY_TIME_INDEX: &str = "idx_usage_rollups_key_days_by_time";

const WEEK: i64 = 7 * 86_400;
/// 1970-01-05, the first Monday after the Unix epoch (as `ledger::rollups::MONDAY`).
const MONDAY: i64 = 4 * 86_400;

const SUMS: [&str; 5] = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        // One tenant at a time, so that a large ledger is never held in memory at once. The
        // week of a day is computed here rather than in SQL: the two databases store times
        // differently, and the rows must match what the writer binds.
        let tenants = db
            .query_all(Statement::from_string(
                backend,
                "SELECT DISTINCT tenant_id FROM usage_rollups WHERE granularity = 'key_day'",
            ))
            .await?;
        for tenant in tenants {
            let tenant: i64 = tenant.try_get("", "tenant_id")?;
            let mut select = Query::select();
            select
                .columns(
                    ["key_id", "bucket_start"]
                        .into_iter()
                        .chain(SUMS)
                        .map(Alias::new),
                )
                .from(Alias::new("usage_rollups"))
                .and_where(Expr::cust("granularity = 'key_day'"))
                .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant));
            let rows = db.query_all(backend.build(&select)).await?;
            let mut weeks: std::collections::BTreeMap<(i64, i64), [i64; 5]> = Default::default();
            for row in rows {
                let key: i64 = row.try_get("", "key_id")?;
                let day: ChronoDateTimeUtc = row.try_get("", "bucket_start")?;
                let t = day.timestamp();
                let week = t - (t - MONDAY).rem_euclid(WEEK);
                let sums = weeks.entry((key, week)).or_default();
                for (sum, col) in sums.iter_mut().zip(SUMS) {
                    *sum += row.try_get::<i64>("", col)?;
                }
            }
            let weeks: Vec<_> = weeks.into_iter().collect();
            for chunk in weeks.chunks(500) {
                let mut insert = Query::insert();
                insert.into_table(Alias::new("usage_rollups")).columns(
                    [
                        "granularity",
                        "bucket_start",
                        "tenant_id",
                        "key_id",
                        "model",
                        "end_user",
                        "endpoint",
                    ]
                    .into_iter()
                    .chain(SUMS)
                    .map(Alias::new),
                );
                for ((key, week), sums) in chunk {
                    let start = ChronoDateTimeUtc::from_timestamp(*week, 0)
                        .ok_or_else(|| DbErr::Custom(format!("week {week} out of range")))?;
                    let mut values: Vec<SimpleExpr> = vec![
                        "key_week".into(),
                        start.into(),
                        tenant.into(),
                        (*key).into(),
                        "".into(),
                        "".into(),
                        "".into(),
                    ];
                    values.extend(sums.iter().map(|s| SimpleExpr::from(*s)));
                    insert
                        .values(values)
                        .map_err(|e| DbErr::Custom(e.to_string()))?;
                }
                db.execute(backend.build(&insert)).await?;
            }
        }
        let covering = format!("granularity, {}", SUMS.join(", "));
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {KEY_WEEKS_INDEX} ON usage_rollups \
             (tenant_id, bucket_start, key_id, {covering}) WHERE granularity = 'key_week'"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {KEY_DAYS_BY_TIME_INDEX} ON usage_rollups \
             (tenant_id, bucket_start, key_id, {covering}) WHERE granularity = 'key_day'"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for name in [KEY_WEEKS_INDEX, KEY_DAYS_BY_TIME_INDEX] {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        db.execute_unprepared("DELETE FROM usage_rollups WHERE granularity = 'key_week'")
            .await?;
        Ok(())
    }
}
