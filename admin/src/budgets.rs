//! Spend budgets: a cap per tenant or per key and per period (calendar month, or windows of N
//! days), kept exactly under concurrency by the database every replica shares.
//!
//! Admission reserves the request's worst case with one conditional `UPDATE` per budget
//! (`spent + reserved + amount <= cap`, atomic on SQLite and PostgreSQL alike) and records the
//! reservation in its own row, all in one transaction; the end of the request deletes that row and
//! moves the actual amount to `spent`. A reservation whose process died is released by a sweeper
//! once it expires. So N parallel requests against a cap that allows K of them: at most K are
//! admitted, and `spent` never passes the cap.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::audit::{self, Actor, Event};
use crate::entity::{budget, budget_reservation, budget_usage};
use crate::error::{AdminError, Result};
use crate::Scope;
use crate::Text;

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Prompt + completion tokens.
    Tokens,
    /// Money: micro-units of the operator's currency, at the model prices in force.
    Micros,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Tokens => "tokens",
            Unit::Micros => "micros",
        }
    }

    pub fn parse(text: &str) -> Option<Unit> {
        match text {
            "tokens" => Some(Unit::Tokens),
            "micros" => Some(Unit::Micros),
            _ => None,
        }
    }
}

/// How a budget's periods are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar months, UTC.
    Monthly,
    /// Consecutive windows of N days from the budget's anchor.
    Days(i64),
}

/// One period of a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub key: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text == "monthly" {
            return Ok(Period::Monthly);
        }
        match text.strip_suffix('d').map(str::parse::<i64>) {
            Some(Ok(days)) if (1..=3660).contains(&days) => Ok(Period::Days(days)),
            _ => Err(AdminError::invalid(
                "period",
                Text::new(
                    format!(
                        "`{text}` is not a period: use `monthly` or a number of days like `7d`"
                    ),
                    format!("`{text}` 不是有效的周期：请填写 `monthly` 或天数，例如 `7d`"),
                ),
            )),
        }
    }

    pub fn as_string(self) -> String {
        match self {
            Period::Monthly => "monthly".into(),
            Period::Days(days) => format!("{days}d"),
        }
    }

    /// The period that contains `now`.
    pub fn window(self, anchor: DateTime<Utc>, now: DateTime<Utc>) -> Window {
        match self {
            Period::Monthly => {
                let start = month_start(now.year(), now.month());
                let (y, m) = if now.month() == 12 {
                    (now.year() + 1, 1)
                } else {
                    (now.year(), now.month() + 1)
                };
                Window {
                    key: format!("{:04}-{:02}", now.year(), now.month()),
                    start,
                    end: month_start(y, m),
                }
            }
            Period::Days(days) => {
                let length = Duration::days(days);
                let index = (now - anchor)
                    .num_seconds()
                    .div_euclid(length.num_seconds());
                let start = anchor + Duration::seconds(index * length.num_seconds());
                Window {
                    key: format!("{days}d:{index}"),
                    start,
                    end: start + length,
                }
            }
        }
    }
}

fn month_start(year: i32, month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// A budget as admission sees it (cached by `policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub id: i64,
    pub tenant_id: i64,
    pub key_id: Option<i64>,
    pub unit: Unit,
    pub amount: i64,
    pub period: Period,
    pub anchor_at: DateTime<Utc>,
}

impl Budget {
    pub fn from_row(row: &budget::Model) -> Option<Self> {
        if row.deleted_at.is_some() {
            return None;
        }
        let unit = Unit::parse(&row.unit)?;
        Some(Self {
            id: row.id,
            tenant_id: row.tenant_id,
            key_id: row.key_id,
            unit,
            amount: row.amount,
            period: Period::parse(&row.period).ok()?,
            anchor_at: row.anchor_at,
        })
    }

    pub fn window(&self, now: DateTime<Utc>) -> Window {
        self.period.window(self.anchor_at, now)
    }
}

/// How much a budget allows per period, in what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub unit: Unit,
    pub amount: i64,
}

impl Cap {
    pub fn tokens(amount: i64) -> Self {
        Self {
            unit: Unit::Tokens,
            amount,
        }
    }

    pub fn micros(amount: i64) -> Self {
        Self {
            unit: Unit::Micros,
            amount,
        }
    }
}

/// Set the budget of a tenant (`key` None) or of one of its keys, replacing the amount and period
/// of an existing one (spend so far in the current period still counts).
pub async fn set_budget(
    db: &impl TransactionTrait,
    scope: Scope,
    tenant_id: i64,
    key_public_id: Option<&str>,
    cap: Cap,
    period: Period,
    actor: &Actor,
) -> Result<budget::Model> {
    let Cap { unit, amount } = cap;
    if !scope.covers(tenant_id) {
        return Err(AdminError::NotFound("tenant"));
    }
    if amount <= 0 {
        return Err(AdminError::invalid(
            "amount",
            Text::new(
                "a budget must be a positive amount",
                "预算必须是大于零的金额",
            ),
        ));
    }
    let txn = crate::db::begin_write(db).await?;
    let key_id = match key_public_id {
        Some(public_id) => {
            let key =
                crate::keys::find_key_in_scope(&txn, Scope::Tenant(tenant_id), public_id).await?;
            Some(key.id)
        }
        None => None,
    };
    let now = Utc::now();
    let saved = match find_active(&txn, tenant_id, key_id).await? {
        Some(existing) => {
            let mut row = existing.into_active_model();
            row.unit = Set(unit.as_str().into());
            row.amount = Set(amount);
            row.period = Set(period.as_string());
            row.updated_at = Set(now);
            row.update(&txn).await?
        }
        None => {
            budget::ActiveModel {
                tenant_id: Set(tenant_id),
                key_id: Set(key_id),
                unit: Set(unit.as_str().into()),
                amount: Set(amount),
                period: Set(period.as_string()),
                anchor_at: Set(now),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
                ..Default::default()
            }
            .insert(&txn)
            .await?
        }
    };
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(tenant_id),
            action: "budget.set",
            object_type: "budget",
            object_id: saved.id.to_string(),
            detail: Some(serde_json::json!({
                "key": key_public_id, "unit": unit.as_str(), "amount": amount,
                "period": period.as_string(),
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(saved)
}

/// Remove the budget of a tenant or key (its usage history stays).
pub async fn delete_budget(
    db: &impl TransactionTrait,
    scope: Scope,
    tenant_id: i64,
    key_public_id: Option<&str>,
    actor: &Actor,
) -> Result<()> {
    if !scope.covers(tenant_id) {
        return Err(AdminError::NotFound("tenant"));
    }
    let txn = crate::db::begin_write(db).await?;
    let key_id = match key_public_id {
        Some(public_id) => Some(
            crate::keys::find_key_in_scope(&txn, Scope::Tenant(tenant_id), public_id)
                .await?
                .id,
        ),
        None => None,
    };
    let existing = find_active(&txn, tenant_id, key_id)
        .await?
        .ok_or(AdminError::NotFound("budget"))?;
    let id = existing.id;
    let mut row = existing.into_active_model();
    let now = Utc::now();
    row.deleted_at = Set(Some(now));
    row.updated_at = Set(now);
    row.update(&txn).await?;
    audit::insert_event(
        &txn,
        actor,
        Event {
            tenant_id: Some(tenant_id),
            action: "budget.delete",
            object_type: "budget",
            object_id: id.to_string(),
            detail: Some(serde_json::json!({ "key": key_public_id })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

async fn find_active(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    key_id: Option<i64>,
) -> Result<Option<budget::Model>> {
    let mut query = budget::Entity::find()
        .filter(budget::Column::TenantId.eq(tenant_id))
        .filter(budget::Column::DeletedAt.is_null());
    query = match key_id {
        Some(id) => query.filter(budget::Column::KeyId.eq(id)),
        None => query.filter(budget::Column::KeyId.is_null()),
    };
    Ok(query.one(db).await?)
}

/// A budget and its current period's figures.
#[derive(Debug, Clone)]
pub struct BudgetStatus {
    pub budget: budget::Model,
    pub window: Window,
    pub spent: i64,
    pub reserved: i64,
}

/// A tenant's live budgets with what the current period has spent and holds reserved.
pub async fn list_budgets(db: &impl ConnectionTrait, tenant_id: i64) -> Result<Vec<BudgetStatus>> {
    let rows = budget::Entity::find()
        .filter(budget::Column::TenantId.eq(tenant_id))
        .filter(budget::Column::DeletedAt.is_null())
        .order_by_asc(budget::Column::Id)
        .all(db)
        .await?;
    let now = Utc::now();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let period = Period::parse(&row.period)?;
        let window = period.window(row.anchor_at, now);
        let usage = budget_usage::Entity::find()
            .filter(budget_usage::Column::BudgetId.eq(row.id))
            .filter(budget_usage::Column::PeriodKey.eq(window.key.as_str()))
            .one(db)
            .await?;
        let (spent, reserved) = usage.map_or((0, 0), |u| (u.spent, u.reserved));
        out.push(BudgetStatus {
            budget: row,
            window,
            spent,
            reserved,
        });
    }
    Ok(out)
}

/// The `budget_usage` row of this budget's current period, created on first use.
pub async fn ensure_usage(
    db: &impl ConnectionTrait,
    budget: &Budget,
    window: &Window,
) -> Result<i64> {
    let row = budget_usage::ActiveModel {
        budget_id: Set(budget.id),
        period_key: Set(window.key.clone()),
        period_start: Set(window.start),
        period_end: Set(Some(window.end)),
        spent: Set(0),
        reserved: Set(0),
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    budget_usage::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                budget_usage::Column::BudgetId,
                budget_usage::Column::PeriodKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .do_nothing()
        .exec(db)
        .await?;
    budget_usage::Entity::find()
        .filter(budget_usage::Column::BudgetId.eq(budget.id))
        .filter(budget_usage::Column::PeriodKey.eq(window.key.as_str()))
        .one(db)
        .await?
        .map(|u| u.id)
        .ok_or(AdminError::NotFound("budget usage"))
}

/// A held reservation: give it back with [`settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub usage_id: i64,
    pub budget_id: i64,
    pub unit: Unit,
    pub amount: i64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub budget_id: i64,
    pub unit: Unit,
    pub key_id: Option<i64>,
    pub cap: i64,
    /// Settled plus reserved by requests still running.
    pub used: i64,
    pub requested: i64,
    pub period_end: DateTime<Utc>,
}

/// Reserve `amount` on every budget (already resolved to their current usage rows), all or
/// nothing. `Ok(Err(_))`: a budget cannot take it.
pub async fn reserve(
    db: &DatabaseConnection,
    budgets: &[(Budget, i64, Window, i64)],
    ttl: Duration,
) -> Result<std::result::Result<Vec<Reservation>, Exhausted>> {
    let now = Utc::now();
    let txn = db.begin().await?;
    let mut held = Vec::with_capacity(budgets.len());
    for (budget, usage_id, window, amount) in budgets {
        let amount = *amount;
        let taken = budget_usage::Entity::update_many()
            .col_expr(
                budget_usage::Column::Reserved,
                Expr::col(budget_usage::Column::Reserved).add(amount),
            )
            .col_expr(budget_usage::Column::UpdatedAt, Expr::value(now))
            .filter(budget_usage::Column::Id.eq(*usage_id))
            .filter(
                Expr::expr(
                    Expr::col(budget_usage::Column::Spent)
                        .add(Expr::col(budget_usage::Column::Reserved))
                        .add(amount),
                )
                .lte(budget.amount),
            )
            .exec(&txn)
            .await?
            .rows_affected;
        if taken != 1 {
            drop(txn);
            let used = budget_usage::Entity::find_by_id(*usage_id)
                .one(db)
                .await
                .ok()
                .flatten()
                .map_or(budget.amount, |u| u.spent + u.reserved);
            return Ok(Err(Exhausted {
                budget_id: budget.id,
                unit: budget.unit,
                key_id: budget.key_id,
                cap: budget.amount,
                used,
                requested: amount,
                period_end: window.end,
            }));
        }
        let reservation = Reservation {
            id: uuid::Uuid::new_v4().to_string(),
            usage_id: *usage_id,
            budget_id: budget.id,
            unit: budget.unit,
            amount,
        };
        budget_reservation::ActiveModel {
            id: Set(reservation.id.clone()),
            usage_id: Set(*usage_id),
            amount: Set(amount),
            created_at: Set(now),
            expires_at: Set(now + ttl),
        }
        .insert(&txn)
        .await?;
        held.push(reservation);
    }
    txn.commit().await?;
    Ok(Ok(held))
}

/// End reservations: each one's row is deleted and its budget's `reserved` gives back the worst
/// case while `spent` takes `actual`. A reservation the sweeper already released (its process
/// was presumed dead) still charges `actual`, so what was used is never lost.
pub async fn settle(
    db: &DatabaseConnection,
    held: &[Reservation],
    actual: impl Fn(&Reservation) -> i64,
) -> Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let txn = db.begin().await?;
    for reservation in held {
        let actual = actual(reservation);
        let released = budget_reservation::Entity::delete_by_id(reservation.id.clone())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        let mut update = budget_usage::Entity::update_many()
            .col_expr(
                budget_usage::Column::Spent,
                Expr::col(budget_usage::Column::Spent).add(actual),
            )
            .col_expr(budget_usage::Column::UpdatedAt, Expr::value(now));
        if released {
            update = update.col_expr(
                budget_usage::Column::Reserved,
                Expr::col(budget_usage::Column::Reserved).sub(reservation.amount),
            );
        }
        update
            .filter(budget_usage::Column::Id.eq(reservation.usage_id))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Release reservations past their expiry (their process stopped without settling): the worst
/// case goes back, nothing is charged. Returns how many were released.
pub async fn sweep_expired(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<u64> {
    let expired = budget_reservation::Entity::find()
        .filter(budget_reservation::Column::ExpiresAt.lt(now))
        .order_by_asc(budget_reservation::Column::ExpiresAt)
        .limit(500)
        .all(db)
        .await?;
    let mut released = 0;
    for reservation in expired {
        let txn = db.begin().await?;
        let gone = budget_reservation::Entity::delete_many()
            .filter(budget_reservation::Column::Id.eq(reservation.id.as_str()))
            .filter(budget_reservation::Column::ExpiresAt.lt(now))
            .exec(&txn)
            .await?
            .rows_affected;
        if gone == 1 {
            budget_usage::Entity::update_many()
                .col_expr(
                    budget_usage::Column::Reserved,
                    Expr::col(budget_usage::Column::Reserved).sub(reservation.amount),
                )
                .filter(budget_usage::Column::Id.eq(reservation.usage_id))
                .exec(&txn)
                .await?;
            released += 1;
        }
        txn.commit().await?;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn monthly_windows_are_calendar_months_in_utc() {
        let w = Period::Monthly.window(at("2026-01-15T00:00:00Z"), at("2026-12-31T23:59:59Z"));
        assert_eq!(w.key, "2026-12");
        assert_eq!(w.start, at("2026-12-01T00:00:00Z"));
        assert_eq!(w.end, at("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn day_windows_count_from_the_anchor() {
        let anchor = at("2026-11-01T12:00:00Z");
        let w = Period::Days(7).window(anchor, at("2026-11-09T00:00:00Z"));
        assert_eq!(w.key, "7d:1");
        assert_eq!(w.start, at("2026-11-08T12:00:00Z"));
        assert_eq!(w.end, at("2026-11-15T12:00:00Z"));
        assert_eq!(Period::Days(7).window(anchor, anchor).key, "7d:0");
    }

    #[test]
    fn periods_parse_as_operators_write_them() {
        assert_eq!(Period::parse("monthly").unwrap(), Period::Monthly);
        assert_eq!(Period::parse("30d").unwrap(), Period::Days(30));
        for bad in ["", "weekly", "0d", "-3d", "d"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }
}
