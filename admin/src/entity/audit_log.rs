//! `audit_log`: who did what to which object, when, and from where.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// `cli`, `system` or `user:<email>`.
    pub actor: String,
    pub tenant_id: Option<i64>,
    /// e.g. `key.create`, `key.revoke`, `tenant.create`.
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub ip: Option<String>,
    /// JSON with the details that matter (never a secret).
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
