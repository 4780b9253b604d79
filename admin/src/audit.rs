//! The audit log: every change made through the control plane records who, what, which object,
//! when and from where, in the same transaction as the change.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};

use crate::entity::audit_log;
use crate::error::Result;

/// Who is acting: `cli`, `system`, or `user:<email>`, and from which address.
#[derive(Debug, Clone)]
pub struct Actor {
    pub label: String,
    pub user_id: Option<i64>,
    pub ip: Option<String>,
}

impl Actor {
    pub fn cli() -> Self {
        Self {
            label: "cli".into(),
            user_id: None,
            ip: None,
        }
    }

    pub fn system() -> Self {
        Self {
            label: "system".into(),
            user_id: None,
            ip: None,
        }
    }
}

pub struct Event<'a> {
    pub tenant_id: Option<i64>,
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: String,
    pub detail: Option<serde_json::Value>,
}

pub async fn insert_event(
    db: &impl ConnectionTrait,
    actor: &Actor,
    event: Event<'_>,
) -> Result<()> {
    audit_log::ActiveModel {
        at: Set(chrono::Utc::now()),
        actor: Set(actor.label.clone()),
        tenant_id: Set(event.tenant_id),
        action: Set(event.action.into()),
        object_type: Set(event.object_type.into()),
        object_id: Set(event.object_id),
        ip: Set(actor.ip.clone()),
        detail: Set(event.detail.map(|d| d.to_string())),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// The audit trail of one tenant (or, with `None`, of the whole platform), newest first.
pub async fn list_events(
    db: &impl ConnectionTrait,
    tenant_id: Option<i64>,
    limit: u64,
) -> Result<Vec<audit_log::Model>> {
    use sea_orm::QuerySelect;
    let mut query = audit_log::Entity::find();
    if let Some(tenant) = tenant_id {
        query = query.filter(audit_log::Column::TenantId.eq(tenant));
    }
    Ok(query
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// One page (from 0) of the audit trail of a tenant (or of the platform), newest first, and the
/// number of rows over all pages.
pub async fn list_events_page(
    db: &impl ConnectionTrait,
    tenant_id: Option<i64>,
    page: u64,
    per_page: u64,
) -> Result<(Vec<audit_log::Model>, u64)> {
    use sea_orm::{PaginatorTrait, QuerySelect};
    let mut query = audit_log::Entity::find();
    if let Some(tenant) = tenant_id {
        query = query.filter(audit_log::Column::TenantId.eq(tenant));
    }
    let total = query.clone().count(db).await?;
    let rows = query
        .order_by_desc(audit_log::Column::Id)
        .offset(page * per_page)
        .limit(per_page)
        .all(db)
        .await?;
    Ok((rows, total))
}
