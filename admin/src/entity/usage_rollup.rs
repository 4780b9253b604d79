//! `usage_rollups`: hourly and daily sums of the events, per tenant, key, model, end user and
//! endpoint, written in the same transaction as the events they sum.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_rollups")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The rollup family: `hour`, `day`, `tenant_hour`, `tenant_day`, `key_day`, `key_week`
    /// (`aiaas_admin::ledger::rollups::ROLLUPS`).
    pub granularity: String,
    pub bucket_start: DateTimeUtc,
    /// `0`: no tenant (authentication off).
    pub tenant_id: i64,
    /// `0`: no key (a tenant-signed JWT).
    pub key_id: i64,
    pub model: String,
    /// `''`: no end user.
    pub end_user: String,
    pub endpoint: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
