//! `budget_usage`: what one budget has spent and holds reserved in one period.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "budget_usage")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub budget_id: i64,
    /// `2026-11` for a calendar month, `<N>d:<index>` for an N-day window.
    pub period_key: String,
    pub period_start: DateTimeUtc,
    pub period_end: Option<DateTimeUtc>,
    /// Settled spend.
    pub spent: i64,
    /// Worst-case amounts of requests still running.
    pub reserved: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
