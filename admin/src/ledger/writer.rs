//! The ledger writer: journal → database in batches. Each batch is one transaction: the events
//! not yet in `usage_events` (idempotent on the request id, so a replay writes nothing twice),
//! priced at the price in force when each request started, and their sums added to the hourly
//! and daily rollups of every family in `rollups::ROLLUPS`, all in the same transaction.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Set};
use tokio::sync::watch;

use super::journal::Journal;
use super::rollups::ROLLUPS;
use super::{Inner, LedgerSettings, UsageEvent};
use crate::entity::{model_price, usage_event, usage_rollup};
use crate::error::Result;
use crate::prices;

/// What one batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub inserted: usize,
    pub duplicates: usize,
}

type RollupKey = (
    &'static str,
    DateTime<Utc>,
    i64,
    i64,
    String,
    String,
    String,
);

#[derive(Default)]
struct Sums {
    requests: i64,
    errors: i64,
    prompt: i64,
    completion: i64,
    cost: i64,
}

/// Write a batch of events (and their rollups) in one transaction.
pub async fn write_batch(
    db: &DatabaseConnection,
    events: &[UsageEvent],
    prices: &[model_price::Model],
) -> Result<Written> {
    let txn = crate::db::begin_write(db).await?;
    let ids: Vec<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
    let mut known: HashSet<String> = HashSet::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> = usage_event::Entity::find()
            .select_only()
            .column(usage_event::Column::RequestId)
            .filter(usage_event::Column::RequestId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(&txn)
            .await?;
        known.extend(rows);
    }
    let mut written = Written::default();
    let mut rows = Vec::new();
    let mut sums: HashMap<RollupKey, Sums> = HashMap::new();
    for event in events {
        if !known.insert(event.request_id.clone()) {
            written.duplicates += 1;
            continue;
        }
        let price = prices::price_at(prices, &event.model, event.started_at);
        let cost = price.map_or(0, |p| {
            prices::cost_micros(p, event.prompt_tokens, event.completion_tokens)
        });
        for rollup in ROLLUPS {
            let (start, tenant, key, model, user, endpoint) = rollup.group(
                event.started_at,
                event.tenant_id,
                event.key_id,
                &event.model,
                event.end_user.as_deref(),
                &event.endpoint,
            );
            let key = (
                rollup.granularity,
                start,
                tenant,
                key,
                model,
                user,
                endpoint,
            );
            let s = sums.entry(key).or_default();
            s.requests += 1;
            s.errors += i64::from(event.status != "ok");
            s.prompt += event.prompt_tokens;
            s.completion += event.completion_tokens;
            s.cost += cost;
        }
        rows.push(usage_event::ActiveModel {
            request_id: Set(event.request_id.clone()),
            tenant_id: Set(event.tenant_id),
            key_id: Set(event.key_id),
            end_user: Set(event.end_user.clone()),
            model: Set(event.model.clone()),
            endpoint: Set(event.endpoint.clone()),
            prompt_tokens: Set(event.prompt_tokens),
            completion_tokens: Set(event.completion_tokens),
            total_tokens: Set(event.prompt_tokens + event.completion_tokens),
            cached_tokens: Set(event.cached_tokens),
            status: Set(event.status.clone()),
            http_status: Set(event.http_status),
            stream: Set(event.stream),
            started_at: Set(event.started_at),
            first_token_at: Set(event.first_token_at),
            finished_at: Set(event.finished_at),
            cost_micros: Set(cost),
            price_id: Set(price.map(|p| p.id)),
            ..Default::default()
        });
        written.inserted += 1;
    }
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(500));
        usage_event::Entity::insert_many(std::mem::replace(&mut rows, rest))
            .exec(&txn)
            .await?;
    }
    let mut rollups: Vec<usage_rollup::ActiveModel> = sums
        .into_iter()
        .map(
            |((granularity, start, tenant, key, model, user, endpoint), s)| {
                usage_rollup::ActiveModel {
                    granularity: Set(granularity.to_string()),
                    bucket_start: Set(start),
                    tenant_id: Set(tenant),
                    key_id: Set(key),
                    model: Set(model),
                    end_user: Set(user),
                    endpoint: Set(endpoint),
                    requests: Set(s.requests),
                    errors: Set(s.errors),
                    prompt_tokens: Set(s.prompt),
                    completion_tokens: Set(s.completion),
                    cost_micros: Set(s.cost),
                    ..Default::default()
                }
            },
        )
        .collect();
    let add = |col: &str| Expr::cust(format!("usage_rollups.{col} + excluded.{col}"));
    let upsert = OnConflict::columns([
        usage_rollup::Column::Granularity,
        usage_rollup::Column::BucketStart,
        usage_rollup::Column::TenantId,
        usage_rollup::Column::KeyId,
        usage_rollup::Column::Model,
        usage_rollup::Column::EndUser,
        usage_rollup::Column::Endpoint,
    ])
    .value(usage_rollup::Column::Requests, add("requests"))
    .value(usage_rollup::Column::Errors, add("errors"))
    .value(usage_rollup::Column::PromptTokens, add("prompt_tokens"))
    .value(
        usage_rollup::Column::CompletionTokens,
        add("completion_tokens"),
    )
    .value(usage_rollup::Column::CostMicros, add("cost_micros"))
    .to_owned();
    // One multi-row upsert per 500 groups (each group appears once per statement).
    while !rollups.is_empty() {
        let rest = rollups.split_off(rollups.len().min(500));
        usage_rollup::Entity::insert_many(std::mem::replace(&mut rollups, rest))
            .on_conflict(upsert.clone())
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(written)
}

/// Runs a journal operation (file reads and writes, fsync) on tokio's blocking threads: a slow
/// disk then holds up this task only, not a runtime worker and the requests it serves.
async fn on_disk<T, F>(ledger: &Arc<Inner>, op: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Journal) -> std::io::Result<T> + Send + 'static,
{
    let ledger = Arc::clone(ledger);
    tokio::task::spawn_blocking(move || op(&ledger.journal))
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err)))
}

/// The writer task: runs until the ledger is dropped, then finishes what is journaled.
pub(super) async fn run(
    inner: Weak<Inner>,
    db: DatabaseConnection,
    settings: LedgerSettings,
    flushed: watch::Sender<u64>,
) {
    let Some(start) = inner.upgrade().map(|i| i.journal.checkpoint()) else {
        return;
    };
    let mut offset = start;
    let mut failing = false;
    let mut pruned_at: Option<std::time::Instant> = None;
    let interval = Duration::from_millis(settings.flush_interval_ms.max(1));
    loop {
        let Some(ledger) = inner.upgrade() else {
            return;
        };
        let batch = settings.batch_size.max(1);
        let (events, next) = match on_disk(&ledger, move |j| j.read_from(offset, batch)).await {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(error = %err, "ledger: reading the journal failed");
                (Vec::new(), offset)
            }
        };
        if next == offset {
            if settings.retention_days > 0
                && pruned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600))
            {
                pruned_at = Some(std::time::Instant::now());
                let before =
                    Utc::now() - chrono::Duration::days(i64::from(settings.retention_days));
                match crate::usage::prune_events(&db, before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(deleted = n, "ledger: raw events past retention pruned")
                    }
                    Err(err) => tracing::warn!(error = %err, "ledger: pruning raw events failed"),
                }
            }
            let limit = settings.rotate_bytes;
            match on_disk(&ledger, move |j| j.rotate(offset, limit)).await {
                Ok(true) => offset = 0,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "ledger: rotating the journal failed"),
            }
            flushed.send_replace(ledger.journal.position(offset));
            let _ = tokio::time::timeout(interval, ledger.wake.notified()).await;
            continue;
        }
        if let Err(err) = on_disk(&ledger, |j| j.sync()).await {
            tracing::warn!(error = %err, "ledger: fsync of the journal failed");
        }
        let result = match prices::list_prices(&db).await {
            Ok(prices) => write_batch(&db, &events, &prices).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(written) => {
                if failing {
                    tracing::info!("ledger: the database takes events again");
                    failing = false;
                }
                if written.duplicates > 0 {
                    tracing::debug!(
                        duplicates = written.duplicates,
                        "ledger: replayed events were already written"
                    );
                }
                if let Err(err) = on_disk(&ledger, move |j| j.commit(next)).await {
                    tracing::warn!(error = %err, "ledger: saving the checkpoint failed");
                }
                offset = next;
                flushed.send_replace(ledger.journal.position(offset));
            }
            Err(err) => {
                if !failing {
                    tracing::error!(error = %err,
                        "ledger: the database refuses events; keeping them in the journal");
                    failing = true;
                }
                drop(ledger);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
