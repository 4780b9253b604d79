//! Per-key daily rollups (`key_day`: per tenant and key, without model, end user or endpoint)
//! for the console's per-key tables and key filters, back-filled here from the fine daily ones;
//! the ledger writer maintains them from now on. Two partial indexes (SQLite and PostgreSQL
//! both have them) serve pages that read one tenant's keys: a covering one over `key_day` rows
//! (`granularity` is in it so that SQLite sees it covering), so a month of per-key sums is an
//! index-only scan in key order, and one over the fine `day`
//! rows by key, for a key filter combined with a model or end-user dimension.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const KEY_DAYS_INDEX: &str = "idx_usage_rollups_key_days";
const DAYS_BY_KEY_INDEX: &str = "idx_usage_rollups_days_by_key";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO usage_rollups (granularity, bucket_start, tenant_id, key_id, model, \
             end_user, endpoint, requests, errors, prompt_tokens, completion_tokens, cost_micros) \
             SELECT 'key_day', bucket_start, tenant_id, key_id, '', '', '', SUM(requests), \
             SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros) \
             FROM usage_rollups WHERE granularity = 'day' \
             GROUP BY bucket_start, tenant_id, key_id",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {KEY_DAYS_INDEX} ON usage_rollups \
             (tenant_id, key_id, bucket_start, granularity, requests, errors, prompt_tokens, \
             completion_tokens, cost_micros) WHERE granularity = 'key_day'"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {DAYS_BY_KEY_INDEX} ON usage_rollups \
             (tenant_id, key_id, bucket_start) WHERE granularity = 'day'"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for name in [KEY_DAYS_INDEX, DAYS_BY_KEY_INDEX] {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        db.execute_unprepared("DELETE FROM usage_rollups WHERE granularity = 'key_day'")
            .await?;
        Ok(())
    }
}
