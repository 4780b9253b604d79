//! The usage ledger's write path. Every admitted request ends in exactly one [`UsageEvent`]:
//! the request path appends it to a local journal (one `write` to an append-only file: once it
//! returns, the event survives the process being killed) and wakes the writer; the writer reads
//! the journal from its checkpoint, inserts batches into the database (idempotent on the request
//! id, with the hourly and daily rollups in the same transaction), then moves the checkpoint. A
//! database that is down or slow only delays the checkpoint: nothing is lost, and each event is
//! written once when it comes back. Shutdown drains the journal.

mod journal;
pub mod rollups;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

pub use writer::{write_batch, Written};

/// `[ledger]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    /// When false, usage is not recorded at all (benchmarks that isolate the ledger's own cost
    /// only: nothing is metered or billed). What an earlier run journaled is still written.
    pub enabled: bool,
    /// Where the journal lives (one directory per `aiaas serve` process; it is locked).
    pub journal_dir: PathBuf,
    /// The writer inserts at most this many events per transaction.
    pub batch_size: usize,
    /// And flushes at least this often while events wait.
    pub flush_interval_ms: u64,
    /// The journal is truncated once everything in it is written and it is larger than this.
    pub rotate_bytes: u64,
    /// Raw events older than this many days are deleted (hourly); rollups keep their sums.
    /// 0 keeps every event.
    pub retention_days: u32,
    /// The currency of prices and costs (ISO 4217, lower case as OpenAI writes it).
    pub currency: String,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            journal_dir: PathBuf::from("aiaas-journal"),
            batch_size: 1000,
            flush_interval_ms: 100,
            rotate_bytes: 64 * 1024 * 1024,
            retention_days: 0,
            currency: "usd".into(),
        }
    }
}

/// One request's usage, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub request_id: String,
    pub tenant_id: Option<i64>,
    pub key_id: Option<i64>,
    pub end_user: Option<String>,
    pub model: String,
    pub endpoint: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: Option<i64>,
    /// `ok`, `error`, `cancelled`, `timeout`, `rejected`.
    pub status: String,
    pub http_status: i32,
    pub stream: bool,
    pub started_at: DateTime<Utc>,
    pub first_token_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

struct Inner {
    journal: journal::Journal,
    wake: Notify,
    /// The journal offset written to the database so far.
    flushed: watch::Receiver<u64>,
}

/// Cheap to clone. Dropping the last clone stops nothing by itself: call [`Ledger::drain`].
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
    /// `ledger.enabled`.
    recording: bool,
}

impl Ledger {
    /// Open (and lock) the journal, replay what an earlier run left unwritten, and start the
    /// writer.
    pub fn start(db: DatabaseConnection, settings: LedgerSettings) -> std::io::Result<Ledger> {
        let recording = settings.enabled;
        let journal = journal::Journal::open(&settings.journal_dir)?;
        let (flushed_tx, flushed) = watch::channel(journal.checkpoint());
        let inner = Arc::new(Inner {
            journal,
            wake: Notify::new(),
            flushed,
        });
        tokio::spawn(writer::run(
            Arc::downgrade(&inner),
            db,
            settings,
            flushed_tx,
        ));
        Ok(Ledger { inner, recording })
    }

    /// Record one event. Never waits on the database; an error here means the local disk
    /// refused the write (logged: the event is lost).
    pub fn record(&self, event: &UsageEvent) {
        if !self.recording {
            return;
        }
        match self.inner.journal.append(event) {
            Ok(_) => self.inner.wake.notify_one(),
            Err(err) => tracing::error!(error = %err, request_id = %event.request_id,
                "usage event could not be journaled; it is lost"),
        }
    }

    /// Wait until everything journaled so far is in the database (or `limit` passes); true if
    /// it all is.
    pub async fn drain(&self, limit: Duration) -> bool {
        let target = self.inner.journal.len();
        self.inner.wake.notify_one();
        let mut flushed = self.inner.flushed.clone();
        let done = tokio::time::timeout(limit, flushed.wait_for(|at| *at >= target)).await;
        let ok = matches!(done, Ok(Ok(_)));
        if !ok {
            tracing::warn!(
                "ledger: not everything reached the database before shutdown; the journal keeps \
                 the rest and the next start writes it"
            );
        }
        ok
    }

    /// Bytes journaled and bytes written to the database (for `/ready` and tests).
    pub fn progress(&self) -> (u64, u64) {
        (self.inner.journal.len(), *self.inner.flushed.borrow())
    }
}
