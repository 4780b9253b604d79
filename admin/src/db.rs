//! Connecting to the database (SQLite with WAL by default, or PostgreSQL) and migrating it.

use std::time::Duration;

use aiaas_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, TransactionTrait,
};
use serde::{Deserialize, Serialize};

/// `[database]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (created if missing) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_secs: u64,
    /// Run pending migrations when `aiaas serve` starts.
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://aiaas.db".into(),
            max_connections: 16,
            min_connections: 1,
            acquire_timeout_secs: 5,
            migrate_on_start: true,
        }
    }
}

impl DatabaseSettings {
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

/// Open a pool. SQLite files are created when missing and use WAL with a busy timeout, so the
/// server and the operator CLI can write to one file at the same time.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections.max(1))
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs.max(1)))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
        });
    Database::connect(options).await
}

/// Arbitrary but fixed: the PostgreSQL advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6169_6161_735f_6d67; // "aiaas_mg"

/// Apply every pending migration. On PostgreSQL, replicas starting together on one database take
/// turns (a transaction-scoped advisory lock): the first applies, the others find nothing pending.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Migrator::up(db, None).await;
    }
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Begin a transaction that will write. On SQLite it takes the write lock at once (a no-op
/// `UPDATE`), so a transaction that reads before it writes waits its turn (busy timeout) instead
/// of failing with "database is locked" when another connection wrote in between; the ledger
/// writer makes that window frequent. On PostgreSQL it is a plain `BEGIN`.
///
/// SQLite can still answer `SQLITE_BUSY` at once, without waiting (seen when another process's
/// write commits while this one takes the lock): that attempt is rolled back and retried for up
/// to 10 seconds, like the busy timeout.
pub async fn begin_write<C: TransactionTrait>(db: &C) -> Result<DatabaseTransaction, DbErr> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let txn = db.begin().await?;
        if txn.get_database_backend() != DbBackend::Sqlite {
            return Ok(txn);
        }
        match txn
            .execute_unprepared("UPDATE tenants SET id = id WHERE 0")
            .await
        {
            Ok(_) => return Ok(txn),
            Err(e) if is_busy(&e) && started.elapsed() < Duration::from_secs(10) => {
                txn.rollback().await?;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &DbErr) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("(code: 5)")
}
