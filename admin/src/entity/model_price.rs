//! `model_prices`: what a model costs per million tokens, from a date on. Rows are never
//! changed: a new price is a new row, so past events keep the price they were billed at.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "model_prices")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub model: String,
    /// Micro-units of the operator's currency per million prompt tokens.
    pub input_micros_per_mtok: i64,
    /// Micro-units per million completion tokens.
    pub output_micros_per_mtok: i64,
    pub effective_from: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
