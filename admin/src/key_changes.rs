//! What the console does to keys beyond create and revoke: a searchable, paginated list,
//! rotation with a grace period (the replaced secret keeps working until a deadline you choose,
//! so clients can be redeployed without an outage), and edits of name, model allowlist and
//! expiry. Every change is audited with its before and after.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use secrecy::SecretString;

use crate::audit::{self, Actor, Event};
use crate::entity::api_key;
use crate::error::{AdminError, Result};
use crate::keys::{find_key_in_scope, CreatedKey, KEY_PREFIX};
use crate::Scope;
use crate::Text;

/// Which keys a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyStatus {
    #[default]
    All,
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    pub fn parse(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "revoked" => Self::Revoked,
            "expired" => Self::Expired,
            _ => Self::All,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// One page of a tenant's keys, newest first.
pub struct KeyPage {
    pub rows: Vec<api_key::Model>,
    /// Keys matching the search, over all pages.
    pub total: u64,
}

/// Keys of `tenant_id` whose name or prefix contains `search` (case-insensitive on ASCII),
/// with `status`, page `page` (from 0) of `per_page`.
pub async fn list_keys_page(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    search: &str,
    status: KeyStatus,
    page: u64,
    per_page: u64,
) -> Result<KeyPage> {
    let now = Utc::now();
    let mut query = api_key::Entity::find().filter(api_key::Column::TenantId.eq(tenant_id));
    let search = search.trim();
    if !search.is_empty() {
        // LIKE with the wildcards of the search escaped: `50%` finds a literal `50%`.
        let pattern = format!(
            "%{}%",
            search
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let like = |col: api_key::Column| {
            sea_orm::sea_query::Expr::expr(sea_orm::sea_query::Func::lower(
                sea_orm::sea_query::Expr::col(col),
            ))
            .like(sea_orm::sea_query::LikeExpr::new(pattern.clone()).escape('\\'))
        };
        query = query.filter(
            Condition::any()
                .add(like(api_key::Column::Name))
                .add(like(api_key::Column::Prefix)),
        );
    }
    query = match status {
        KeyStatus::All => query,
        KeyStatus::Active => query.filter(api_key::Column::RevokedAt.is_null()).filter(
            Condition::any()
                .add(api_key::Column::ExpiresAt.is_null())
                .add(api_key::Column::ExpiresAt.gt(now)),
        ),
        KeyStatus::Revoked => query.filter(api_key::Column::RevokedAt.is_not_null()),
        KeyStatus::Expired => query
            .filter(api_key::Column::RevokedAt.is_null())
            .filter(api_key::Column::ExpiresAt.lte(now)),
    };
    let total = query.clone().count(db).await?;
    let rows = query
        .order_by_desc(api_key::Column::CreatedAt)
        .order_by_desc(api_key::Column::Id)
        .offset(page * per_page)
        .limit(per_page)
        .all(db)
        .await?;
    Ok(KeyPage { rows, total })
}

/// Longest grace period a rotation may give the replaced secret.
pub const MAX_GRACE: Duration = Duration::days(30);

/// Give a key a new secret. The key keeps its id, name, limits, budgets and usage history; the
/// replaced secret is still accepted until `now + grace` (zero: refused at once).
pub async fn rotate_key(
    db: &impl TransactionTrait,
    scope: Scope,
    public_id: &str,
    grace: Duration,
    actor: &Actor,
) -> Result<CreatedKey> {
    if grace < Duration::zero() || grace > MAX_GRACE {
        return Err(AdminError::invalid(
            "grace",
            Text::new(
                "the grace period is between 0 and 30 days",
                "宽限期必须在 0 到 30 天之间",
            ),
        ));
    }
    let txn = crate::db::begin_write(db).await?;
    let key = find_key_in_scope(&txn, scope, public_id).await?;
    if key.revoked_at.is_some() {
        return Err(AdminError::invalid(
            "key",
            Text::new("a revoked key cannot be rotated", "已吊销的密钥不能轮换"),
        ));
    }
    let now = Utc::now();
    let secret = crate::keys::random_secret();
    let tenant_id = key.tenant_id;
    let previous = key.secret_hash.clone();
    let mut row = key.into_active_model();
    row.secret_hash = Set(crate::keys::hex(&crate::keys::hash_secret(&secret)));
    row.prefix = Set(format!("{KEY_PREFIX}{public_id}-{}…", &secret[..4]));
    row.previous_secret_hash = Set((grace > Duration::zero()).then_some(previous));
    row.previous_valid_until = Set((grace > Duration::zero()).then_some(now + grace));
    row.rotated_at = Set(Some(now));
    row.updated_at = Set(now);
    let key = row.update(&txn).await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(tenant_id),
            action: "key.rotate",
            object_type: "api_key",
            object_id: public_id.to_string(),
            detail: Some(serde_json::json!({
                "grace_seconds": grace.num_seconds(),
                "previous_valid_until": key.previous_valid_until,
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(CreatedKey {
        key,
        secret: SecretString::from(format!("{KEY_PREFIX}{public_id}-{secret}")),
    })
}

/// An edit of a key: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyEdit {
    pub name: Option<String>,
    /// `Some(None)`: every model.
    pub models: Option<Option<Vec<String>>>,
    /// `Some(None)`: never expires.
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Change a key's name, allowlist or expiry (the key must be in `scope` and not revoked).
pub async fn update_key(
    db: &impl TransactionTrait,
    scope: Scope,
    public_id: &str,
    edit: KeyEdit,
    actor: &Actor,
) -> Result<api_key::Model> {
    let probe = crate::keys::NewKey {
        name: edit.name.clone(),
        models: edit.models.clone().flatten(),
        expires_at: edit.expires_at.flatten(),
        ..Default::default()
    };
    crate::keys::validate(&probe)?;
    let txn = crate::db::begin_write(db).await?;
    let key = find_key_in_scope(&txn, scope, public_id).await?;
    if key.revoked_at.is_some() {
        return Err(AdminError::invalid(
            "key",
            Text::new("a revoked key cannot be edited", "已吊销的密钥不能编辑"),
        ));
    }
    let before = serde_json::json!({
        "name": key.name, "models": crate::keys::allowed_models(&key), "expires_at": key.expires_at,
    });
    let tenant_id = key.tenant_id;
    let mut row = key.into_active_model();
    if let Some(name) = edit.name {
        row.name = Set(name.trim().to_string());
    }
    if let Some(models) = edit.models {
        row.models = Set(models.map(|m| serde_json::Value::from(m).to_string()));
    }
    if let Some(expires_at) = edit.expires_at {
        row.expires_at = Set(expires_at);
    }
    row.updated_at = Set(Utc::now());
    let key = row.update(&txn).await?;
    let after = serde_json::json!({
        "name": key.name, "models": crate::keys::allowed_models(&key), "expires_at": key.expires_at,
    });
    if before != after {
        audit::insert_event(
            &txn,
            actor,
            Event {
                tenant_id: Some(tenant_id),
                action: "key.update",
                object_type: "api_key",
                object_id: public_id.to_string(),
                detail: Some(serde_json::json!({ "before": before, "after": after })),
            },
        )
        .await?;
    }
    txn.commit().await?;
    Ok(key)
}

/// Mint a short-lived JWT for a key (see `jwt_keys::mint_key_token`) and audit it.
pub async fn mint_token_audited(
    db: &(impl ConnectionTrait + TransactionTrait),
    scope: Scope,
    public_id: &str,
    ttl: Duration,
    sub: Option<String>,
    actor: &Actor,
) -> Result<String> {
    let token =
        crate::jwt_keys::mint_key_token(db, scope, public_id, ttl, sub.clone(), None).await?;
    let key = find_key_in_scope(db, scope, public_id).await?;
    audit::insert_event(
        db,
        actor,
        Event {
            tenant_id: Some(key.tenant_id),
            action: "key.mint_token",
            object_type: "api_key",
            object_id: public_id.to_string(),
            detail: Some(serde_json::json!({ "ttl_seconds": ttl.num_seconds(), "sub": sub })),
        },
    )
    .await?;
    Ok(token)
}
