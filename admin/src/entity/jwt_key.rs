//! `jwt_keys`: keys that verify JWT bearer tokens. A row with a tenant is a key that tenant
//! registered (its backend signs tokens for its own end users); the row without a tenant is the
//! server's own HS256 key, which signs the tokens aiaas mints for API keys.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jwt_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The `kid` header a token must carry.
    #[sea_orm(unique)]
    pub kid: String,
    pub tenant_id: Option<i64>,
    pub name: String,
    /// `HS256`, `RS256`, `ES256` or `EdDSA`: the only algorithm this key verifies.
    pub algorithm: String,
    /// HS256 shared secret (base64url).
    pub secret: Option<String>,
    /// PEM public key for RS256 / ES256 / EdDSA.
    pub public_key: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub enabled: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
