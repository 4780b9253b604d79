//! The admission policy cache: every tenant's rate limits and every live budget, in memory, with
//! a task that re-reads what changed every `refresh_interval` (so `aiaas tenant set-limits` or a
//! new budget applies within a second on every replica, without restart) and releases budget
//! reservations whose process died. Budget reservations themselves always go to the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use crate::budgets::{self, Budget, Exhausted, Reservation};
use crate::entity::{budget, tenant};
use crate::error::Result;
use crate::limits::Limits;

const REREAD_WINDOW: chrono::Duration = chrono::Duration::seconds(10);
const FULL_RELOAD: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub refresh_interval: Duration,
    /// How long a budget reservation may stay open before the sweeper presumes its process dead.
    pub reservation_ttl: Duration,
}

struct Inner {
    db: DatabaseConnection,
    settings: PolicySettings,
    tenants: RwLock<HashMap<i64, Limits>>,
    budgets: RwLock<Budgets>,
    /// Every model price (append-only, so re-read only when a new id appears).
    prices: RwLock<Vec<crate::entity::model_price::Model>>,
    /// `budget_usage` ids by (budget, period key): a period's row is created once.
    usage_ids: Mutex<HashMap<(i64, String), i64>>,
    marks: Mutex<Marks>,
}

#[derive(Default)]
struct Budgets {
    by_id: HashMap<i64, Budget>,
    by_tenant: HashMap<i64, Vec<Budget>>,
}

#[derive(Default)]
struct Marks {
    tenants: Option<DateTime<Utc>>,
    budgets: Option<DateTime<Utc>>,
    full_reload: Option<Instant>,
    swept: Option<Instant>,
}

/// Cheap to clone; the refresh task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Policies {
    /// Load everything, then keep it fresh in the background.
    pub async fn start(db: DatabaseConnection, settings: PolicySettings) -> Result<Self, DbErr> {
        let inner = Arc::new(Inner {
            db,
            settings,
            tenants: RwLock::default(),
            budgets: RwLock::default(),
            prices: RwLock::default(),
            usage_ids: Mutex::default(),
            marks: Mutex::default(),
        });
        inner.refresh().await?;
        tokio::spawn(refresh_loop(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    pub fn tenant_limits(&self, tenant_id: i64) -> Limits {
        read(&self.inner.tenants)
            .get(&tenant_id)
            .copied()
            .unwrap_or_default()
    }

    /// The budgets a request of this tenant (and key) must fit in: the tenant's and the key's.
    pub fn budgets_for(&self, tenant_id: i64, key_id: Option<i64>) -> Vec<Budget> {
        let budgets = read(&self.inner.budgets);
        let Some(list) = budgets.by_tenant.get(&tenant_id) else {
            return Vec::new();
        };
        list.iter()
            .filter(|b| b.key_id.is_none() || b.key_id == key_id)
            .cloned()
            .collect()
    }

    /// Reserve on each budget the amount `amount_for` says (in the budget's unit), all or
    /// nothing.
    pub async fn reserve(
        &self,
        budgets: &[Budget],
        amount_for: impl Fn(&Budget) -> i64,
    ) -> Result<std::result::Result<Vec<Reservation>, Exhausted>> {
        let now = Utc::now();
        let mut resolved = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let window = budget.window(now);
            let cache_key = (budget.id, window.key.clone());
            let cached = lock(&self.inner.usage_ids).get(&cache_key).copied();
            let usage_id = match cached {
                Some(id) => id,
                None => {
                    let id = budgets::ensure_usage(&self.inner.db, budget, &window).await?;
                    let mut ids = lock(&self.inner.usage_ids);
                    if ids.len() > 100_000 {
                        ids.clear();
                    }
                    ids.insert(cache_key, id);
                    id
                }
            };
            resolved.push((budget.clone(), usage_id, window, amount_for(budget)));
        }
        let ttl = chrono::Duration::from_std(self.inner.settings.reservation_ttl)
            .unwrap_or(chrono::Duration::hours(1));
        budgets::reserve(&self.inner.db, &resolved, ttl).await
    }

    /// Settle reservations; `actual` gives each one's real amount in its budget's unit.
    pub async fn settle(
        &self,
        held: &[Reservation],
        actual: impl Fn(&Reservation) -> i64,
    ) -> Result<()> {
        budgets::settle(&self.inner.db, held, actual).await
    }

    /// The price of `model` in force now, if it has one.
    pub fn price_now(&self, model: &str) -> Option<crate::entity::model_price::Model> {
        let prices = read(&self.inner.prices);
        crate::prices::price_at(&prices, model, Utc::now()).cloned()
    }

    /// Re-read what changed now (also done every `refresh_interval`).
    pub async fn refresh(&self) -> Result<(), DbErr> {
        self.inner.refresh().await
    }
}

impl Inner {
    async fn refresh(&self) -> Result<(), DbErr> {
        let (tenant_mark, budget_mark) = {
            let mut marks = lock(&self.marks);
            if marks
                .full_reload
                .is_none_or(|at| at.elapsed() >= FULL_RELOAD)
            {
                marks.full_reload = Some(Instant::now());
                (None, None)
            } else {
                (marks.tenants, marks.budgets)
            }
        };
        let mut tenant_query = tenant::Entity::find();
        if let Some(mark) = tenant_mark {
            tenant_query = tenant_query
                .filter(Condition::all().add(tenant::Column::UpdatedAt.gte(mark - REREAD_WINDOW)));
        }
        let tenant_rows = tenant_query.all(&self.db).await?;
        let mut budget_query = budget::Entity::find();
        if let Some(mark) = budget_mark {
            budget_query = budget_query.filter(budget::Column::UpdatedAt.gte(mark - REREAD_WINDOW));
        }
        let budget_rows = budget_query.all(&self.db).await?;
        let newest_price = read(&self.prices).iter().map(|p| p.id).max().unwrap_or(0);
        let fresh_prices = crate::entity::model_price::Entity::find()
            .filter(crate::entity::model_price::Column::Id.gt(newest_price))
            .all(&self.db)
            .await?;
        if !fresh_prices.is_empty() {
            let mut prices = write(&self.prices);
            prices.extend(fresh_prices);
            prices.sort_by_key(|p| p.effective_from);
        }

        {
            let mut tenants = write(&self.tenants);
            if tenant_mark.is_none() {
                tenants.clear();
            }
            for row in &tenant_rows {
                tenants.insert(row.id, Limits::from_tenant(row));
            }
        }
        if !budget_rows.is_empty() || budget_mark.is_none() {
            let mut budgets = write(&self.budgets);
            if budget_mark.is_none() {
                budgets.by_id.clear();
            }
            for row in &budget_rows {
                match Budget::from_row(row) {
                    Some(b) => budgets.by_id.insert(row.id, b),
                    None => budgets.by_id.remove(&row.id),
                };
            }
            let mut by_tenant: HashMap<i64, Vec<Budget>> = HashMap::new();
            for b in budgets.by_id.values() {
                by_tenant.entry(b.tenant_id).or_default().push(b.clone());
            }
            budgets.by_tenant = by_tenant;
        }

        let mut marks = lock(&self.marks);
        let newest_tenant = tenant_rows.iter().filter_map(|r| r.updated_at).max();
        marks.tenants = match (newest_tenant, marks.tenants) {
            (Some(n), Some(m)) => Some(n.max(m)),
            (Some(n), None) => Some(n),
            (None, m) => m.or(Some(Utc::now() - REREAD_WINDOW)),
        };
        let newest_budget = budget_rows.iter().map(|r| r.updated_at).max();
        marks.budgets = match (newest_budget, marks.budgets) {
            (Some(n), Some(m)) => Some(n.max(m)),
            (Some(n), None) => Some(n),
            (None, m) => m.or(Some(Utc::now() - REREAD_WINDOW)),
        };
        Ok(())
    }

    async fn sweep_if_due(&self) {
        {
            let mut marks = lock(&self.marks);
            if marks.swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            marks.swept = Some(Instant::now());
        }
        match budgets::sweep_expired(&self.db, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                released = n,
                "released budget reservations that outlived their TTL (a process stopped without settling them)"
            ),
            Err(err) => tracing::warn!(error = %err, "sweeping expired budget reservations failed"),
        }
    }
}

async fn refresh_loop(inner: Weak<Inner>) {
    let Some(every) = inner.upgrade().map(|i| i.settings.refresh_interval) else {
        return;
    };
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(err) = inner.refresh().await {
            tracing::warn!(error = %err, "policy cache refresh failed; serving from the last good copy");
        }
        inner.sweep_if_due().await;
    }
}
