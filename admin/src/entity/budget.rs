//! `budgets`: a spend cap per tenant (`key_id` NULL) or per key, per period.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "budgets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// `NULL`: the budget covers the whole tenant.
    pub key_id: Option<i64>,
    /// `tokens` (prompt + completion); money units arrive with model prices.
    pub unit: String,
    /// The cap per period, in `unit`.
    pub amount: i64,
    /// `monthly` (calendar month, UTC) or `<N>d` (windows of N days from `anchor_at`).
    pub period: String,
    pub anchor_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
