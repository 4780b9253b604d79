//! Rate limits of a key or a tenant: requests and tokens per minute (each with a burst
//! allowance) and concurrent requests. Stored as columns of `api_keys` and `tenants`; enforced by
//! the server's limiter, which reads them from the auth and policy caches (a change is seen
//! within a second, without restart).

use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Set, TransactionTrait,
};

use crate::audit::{self, Actor, Event};
use crate::entity::{api_key, tenant};
use crate::error::{AdminError, Result};
use crate::Scope;
use crate::Text;

/// Limits of one key or tenant; `None` is "no limit". The stricter of key and tenant wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Requests that may arrive at once (default: a whole minute's worth, `rpm`).
    pub rpm_burst: Option<i64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<i64>,
    /// Tokens that may be reserved at once (default: `tpm`).
    pub tpm_burst: Option<i64>,
    /// Requests running at the same time.
    pub max_concurrent: Option<i64>,
}

impl Limits {
    pub fn from_key(row: &api_key::Model) -> Self {
        Self {
            rpm: row.rpm_limit,
            rpm_burst: row.rpm_burst,
            tpm: row.tpm_limit,
            tpm_burst: row.tpm_burst,
            max_concurrent: row.max_concurrent,
        }
    }

    pub fn from_tenant(row: &tenant::Model) -> Self {
        Self {
            rpm: row.rpm_limit,
            rpm_burst: row.rpm_burst,
            tpm: row.tpm_limit,
            tpm_burst: row.tpm_burst,
            max_concurrent: row.max_concurrent,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_concurrent.is_none()
    }

    /// Every value positive; a burst only next to its limit.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("rpm", self.rpm),
            ("rpm_burst", self.rpm_burst),
            ("tpm", self.tpm),
            ("tpm_burst", self.tpm_burst),
            ("max_concurrent", self.max_concurrent),
        ];
        for (param, value) in fields {
            if matches!(value, Some(v) if !(1..=1_000_000_000_000).contains(&v)) {
                return Err(AdminError::invalid(
                    param,
                    Text::new(
                        format!("`{param}` must be a positive integer"),
                        format!("`{param}` 必须是正整数"),
                    ),
                ));
            }
        }
        if self.rpm_burst.is_some() && self.rpm.is_none() {
            return Err(AdminError::invalid(
                "rpm_burst",
                Text::new(
                    "a requests burst needs a requests-per-minute limit",
                    "设置请求突发量前需要先设置每分钟请求数上限",
                ),
            ));
        }
        if self.tpm_burst.is_some() && self.tpm.is_none() {
            return Err(AdminError::invalid(
                "tpm_burst",
                Text::new(
                    "a tokens burst needs a tokens-per-minute limit",
                    "设置 Token 突发量前需要先设置每分钟 Token 数上限",
                ),
            ));
        }
        Ok(())
    }
}

/// A change to some limits: `None` leaves a field alone, `Some(None)` removes the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsChange {
    pub rpm: Option<Option<i64>>,
    pub rpm_burst: Option<Option<i64>>,
    pub tpm: Option<Option<i64>>,
    pub tpm_burst: Option<Option<i64>>,
    pub max_concurrent: Option<Option<i64>>,
}

impl LimitsChange {
    pub fn apply(&self, mut limits: Limits) -> Limits {
        let set = |field: &mut Option<i64>, change: Option<Option<i64>>| {
            if let Some(value) = change {
                *field = value;
            }
        };
        set(&mut limits.rpm, self.rpm);
        set(&mut limits.rpm_burst, self.rpm_burst);
        set(&mut limits.tpm, self.tpm);
        set(&mut limits.tpm_burst, self.tpm_burst);
        set(&mut limits.max_concurrent, self.max_concurrent);
        // Removing a limit removes its burst.
        if limits.rpm.is_none() {
            limits.rpm_burst = None;
        }
        if limits.tpm.is_none() {
            limits.tpm_burst = None;
        }
        limits
    }

    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.rpm_burst.is_none()
            && self.tpm.is_none()
            && self.tpm_burst.is_none()
            && self.max_concurrent.is_none()
    }
}

/// Change a key's limits (the key must be in `scope`); returns the limits now in force.
pub async fn update_key_limits(
    db: &impl TransactionTrait,
    scope: Scope,
    public_id: &str,
    change: LimitsChange,
    actor: &Actor,
) -> Result<Limits> {
    let txn = crate::db::begin_write(db).await?;
    let key = crate::keys::find_key_in_scope(&txn, scope, public_id).await?;
    let limits = change.apply(Limits::from_key(&key));
    limits.validate()?;
    let tenant_id = key.tenant_id;
    let mut row = key.into_active_model();
    row.rpm_limit = Set(limits.rpm);
    row.rpm_burst = Set(limits.rpm_burst);
    row.tpm_limit = Set(limits.tpm);
    row.tpm_burst = Set(limits.tpm_burst);
    row.max_concurrent = Set(limits.max_concurrent);
    row.updated_at = Set(chrono::Utc::now());
    row.update(&txn).await?;
    record(
        &txn,
        actor,
        tenant_id,
        "key.limits",
        "api_key",
        public_id,
        &limits,
    )
    .await?;
    txn.commit().await?;
    Ok(limits)
}

/// Change a tenant's limits (the tenant must be in `scope`); returns the limits now in force.
pub async fn update_tenant_limits(
    db: &impl TransactionTrait,
    scope: Scope,
    tenant_id: i64,
    change: LimitsChange,
    actor: &Actor,
) -> Result<Limits> {
    if !scope.covers(tenant_id) {
        return Err(AdminError::NotFound("tenant"));
    }
    let txn = crate::db::begin_write(db).await?;
    let tenant = tenant::Entity::find_by_id(tenant_id)
        .one(&txn)
        .await?
        .ok_or(AdminError::NotFound("tenant"))?;
    let limits = change.apply(Limits::from_tenant(&tenant));
    limits.validate()?;
    let mut row = tenant.into_active_model();
    row.rpm_limit = Set(limits.rpm);
    row.rpm_burst = Set(limits.rpm_burst);
    row.tpm_limit = Set(limits.tpm);
    row.tpm_burst = Set(limits.tpm_burst);
    row.max_concurrent = Set(limits.max_concurrent);
    row.updated_at = Set(Some(chrono::Utc::now()));
    row.update(&txn).await?;
    let id = tenant_id.to_string();
    record(
        &txn,
        actor,
        tenant_id,
        "tenant.limits",
        "tenant",
        &id,
        &limits,
    )
    .await?;
    txn.commit().await?;
    Ok(limits)
}

async fn record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    tenant_id: i64,
    action: &str,
    object_type: &str,
    object_id: &str,
    limits: &Limits,
) -> Result<()> {
    audit::insert_event(
        db,
        actor,
        Event {
            tenant_id: Some(tenant_id),
            action,
            object_type,
            object_id: object_id.to_string(),
            detail: serde_json::to_value(limits).ok(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_sets_clears_and_keeps_fields() {
        let before = Limits {
            rpm: Some(10),
            rpm_burst: Some(2),
            tpm: Some(1000),
            ..Default::default()
        };
        let change = LimitsChange {
            rpm: Some(None),
            max_concurrent: Some(Some(4)),
            ..Default::default()
        };
        let after = change.apply(before);
        assert_eq!(after.rpm, None);
        assert_eq!(after.rpm_burst, None, "a burst goes with its limit");
        assert_eq!(after.tpm, Some(1000));
        assert_eq!(after.max_concurrent, Some(4));
        assert!(after.validate().is_ok());
    }

    #[test]
    fn limits_must_be_positive_and_bursts_need_a_limit() {
        let bad = [
            Limits {
                rpm: Some(0),
                ..Default::default()
            },
            Limits {
                tpm_burst: Some(5),
                ..Default::default()
            },
            Limits {
                max_concurrent: Some(-1),
                ..Default::default()
            },
        ];
        for limits in bad {
            assert!(limits.validate().is_err(), "{limits:?}");
        }
    }
}
