//! Tenants: create, find, list, suspend.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};

use crate::audit::{self, Actor, Event};
use crate::entity::tenant;
use crate::error::{AdminError, Result};
use crate::Text;

/// Tenant names are what operators type: 1–64 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            "name",
            Text::new(
                format!("`{name}` is not a valid tenant name: use 1-64 of a-z, 0-9, '-', '_', '.'"),
                format!("`{name}` 不是有效的租户名称：请使用 1–64 个 a-z、0-9、'-'、'_'、'.' 字符"),
            ),
        ))
    }
}

pub async fn insert_tenant(
    db: &impl TransactionTrait,
    name: &str,
    actor: &Actor,
) -> Result<tenant::Model> {
    validate_name(name)?;
    let txn = crate::db::begin_write(db).await?;
    if find_tenant_by_name(&txn, name).await?.is_some() {
        return Err(AdminError::Conflict(Text::new(
            format!("tenant `{name}` already exists"),
            format!("租户 `{name}` 已存在"),
        )));
    }
    let created = tenant::ActiveModel {
        name: Set(name.to_string()),
        created_at: Set(chrono::Utc::now()),
        updated_at: Set(Some(chrono::Utc::now())),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(created.id),
            action: "tenant.create",
            object_type: "tenant",
            object_id: created.id.to_string(),
            detail: Some(serde_json::json!({ "name": name })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(created)
}

pub async fn find_tenant_by_name(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name))
        .one(db)
        .await?)
}

/// The tenant called `name`, or `NotFound`.
pub async fn require_tenant(db: &impl ConnectionTrait, name: &str) -> Result<tenant::Model> {
    find_tenant_by_name(db, name)
        .await?
        .ok_or(AdminError::NotFound("tenant"))
}

pub async fn find_tenant(db: &impl ConnectionTrait, id: i64) -> Result<Option<tenant::Model>> {
    Ok(tenant::Entity::find_by_id(id).one(db).await?)
}

pub async fn list_tenants(db: &impl ConnectionTrait) -> Result<Vec<tenant::Model>> {
    Ok(tenant::Entity::find()
        .order_by_asc(tenant::Column::Name)
        .all(db)
        .await?)
}

pub async fn count_tenants(db: &impl ConnectionTrait) -> Result<u64> {
    Ok(tenant::Entity::find().count(db).await?)
}

/// The tenant created on the first start of an empty database.
pub const DEFAULT_TENANT: &str = "default";

/// First start on an empty database: create the `default` tenant and its first API key, so the
/// quickstart works as printed. Returns the new key (shown once), or `None` if tenants exist.
/// Two replicas starting together on one empty database: the second one finds the tenant taken
/// and creates nothing.
pub async fn bootstrap(db: &impl TransactionTrait) -> Result<Option<crate::keys::CreatedKey>> {
    let txn = db.begin().await?;
    let empty = count_tenants(&txn).await? == 0;
    txn.commit().await?;
    if !empty {
        return Ok(None);
    }
    let actor = Actor::system();
    let tenant = match insert_tenant(db, DEFAULT_TENANT, &actor).await {
        Ok(tenant) => tenant,
        Err(AdminError::Conflict(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let key = crate::keys::insert_key(
        db,
        crate::keys::NewKey {
            tenant_id: tenant.id,
            name: Some("first key".into()),
            ..Default::default()
        },
        &actor,
    )
    .await?;
    Ok(Some(key))
}

/// Suspend a tenant (every key and token of theirs is refused within the auth refresh interval)
/// or lift the suspension.
pub async fn set_tenant_suspended(
    db: &impl TransactionTrait,
    tenant_id: i64,
    suspended: bool,
    actor: &Actor,
) -> Result<tenant::Model> {
    use sea_orm::IntoActiveModel;
    let txn = crate::db::begin_write(db).await?;
    let found = find_tenant(&txn, tenant_id)
        .await?
        .ok_or(AdminError::NotFound("tenant"))?;
    let mut row = found.into_active_model();
    let now = chrono::Utc::now();
    row.suspended_at = Set(suspended.then_some(now));
    row.updated_at = Set(Some(now));
    let updated = row.update(&txn).await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(tenant_id),
            action: if suspended {
                "tenant.suspend"
            } else {
                "tenant.resume"
            },
            object_type: "tenant",
            object_id: tenant_id.to_string(),
            detail: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn tenant_names_are_plain_identifiers() {
        for good in ["acme", "acme-corp", "a1", "team_7.eu"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "-acme", "a b", "acme/x", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
