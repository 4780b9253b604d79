//! `usage_events`: one row per admitted `/v1` request, whatever its outcome.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The `x-request-id` the client saw; recording is idempotent on it.
    #[sea_orm(unique)]
    pub request_id: String,
    /// `NULL` when authentication is off.
    pub tenant_id: Option<i64>,
    pub key_id: Option<i64>,
    /// The JWT `sub`, else the request's `user`.
    pub end_user: Option<String>,
    pub model: String,
    pub endpoint: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cached_tokens: Option<i64>,
    /// `ok`, `error`, `cancelled` (client gone), `timeout` (queue deadline), `rejected` (queue full).
    pub status: String,
    pub http_status: i32,
    pub stream: bool,
    pub started_at: DateTimeUtc,
    pub first_token_at: Option<DateTimeUtc>,
    pub finished_at: DateTimeUtc,
    /// At the price in force when the request started (0 without a price).
    pub cost_micros: i64,
    pub price_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
