//! `api_keys`: opaque API keys. Only the public id and SHA-256 of the secret are stored.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub public_id: String,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// What a person may see of the key: `sk-aiaas-<public id>-<first secret chars>…`.
    pub prefix: String,
    pub name: String,
    pub tenant_id: i64,
    pub created_by: Option<i64>,
    pub created_at: DateTimeUtc,
    /// Changed by every write that matters to verification; the auth cache polls it.
    pub updated_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
    /// JSON array of model ids the key may use; `NULL` means every model.
    pub models: Option<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub rpm_burst: Option<i64>,
    pub tpm_burst: Option<i64>,
    pub max_concurrent: Option<i64>,
    /// After a rotation: the hash of the secret it replaced, valid until `previous_valid_until`.
    pub previous_secret_hash: Option<String>,
    pub previous_valid_until: Option<DateTimeUtc>,
    pub rotated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::tenant::Entity",
        from = "Column::TenantId",
        to = "super::tenant::Column::Id"
    )]
    Tenant,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
