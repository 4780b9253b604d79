//! Database schema of aiaas: the sea-orm-migration `Migrator`, one file per schema change, each
//! with a working `down`. Files are never edited after they land; portable across SQLite and
//! PostgreSQL (tests always build their schema by running this `Migrator`).

pub use sea_orm_migration::prelude::*;

mod columns;
mod m20261123_000001_tenancy;
mod m20261124_000001_limits_budgets;
mod m20261124_000002_ledger;
mod m20261124_000003_console;
mod m20261124_000004_key_rollups;
mod m20261128_000001_key_weeks;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_tenancy::Migration),
            Box::new(m20261124_000001_limits_budgets::Migration),
            Box::new(m20261124_000002_ledger::Migration),
            Box::new(m20261124_000003_console::Migration),
            Box::new(m20261124_000004_key_rollups::Migration),
            Box::new(m20261128_000001_key_weeks::Migration),
        ]
    }
}
