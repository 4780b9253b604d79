//! `tenants`: the organisations that use the service.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub created_at: DateTimeUtc,
    pub rpm_limit: Option<i64>,
    pub rpm_burst: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub tpm_burst: Option<i64>,
    pub max_concurrent: Option<i64>,
    /// Set by every write that matters to admission (limits); the limits cache polls it.
    pub updated_at: Option<DateTimeUtc>,
    /// A suspended tenant's keys and tokens are refused (set by an operator).
    pub suspended_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::api_key::Entity")]
    ApiKeys,
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKeys.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
