//! Rate limits and budgets: per-tenant limits (and the key limits issue 3 did not have yet),
//! spend budgets per tenant or key, their usage per period, and in-flight reservations.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
    RpmLimit,
    RpmBurst,
    TpmLimit,
    TpmBurst,
    MaxConcurrent,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ApiKeys {
    Table,
    Id,
    RpmBurst,
    TpmBurst,
    MaxConcurrent,
}

#[derive(DeriveIden, Clone, Copy)]
enum Budgets {
    Table,
    Id,
    TenantId,
    KeyId,
    Unit,
    Amount,
    Period,
    AnchorAt,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum BudgetUsage {
    Table,
    Id,
    BudgetId,
    PeriodKey,
    PeriodStart,
    PeriodEnd,
    Spent,
    Reserved,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum BudgetReservations {
    Table,
    Id,
    UsageId,
    Amount,
    CreatedAt,
    ExpiresAt,
}

fn bigint_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().to_owned()
}

fn bigint<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

fn time<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn time_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn index(name: &str, table: impl IntoIden + 'static, cols: &[&str]) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(table).if_not_exists();
    for col in cols {
        idx.col(Alias::new(*col));
    }
    idx.to_owned()
}

/// One column per `ALTER TABLE`: SQLite adds only one at a time.
async fn add_columns(
    manager: &SchemaManager<'_>,
    table: impl IntoIden + Copy + 'static,
    cols: Vec<ColumnDef>,
) -> Result<(), DbErr> {
    for mut col in cols {
        manager
            .alter_table(Table::alter().table(table).add_column(&mut col).to_owned())
            .await?;
    }
    Ok(())
}

async fn drop_columns(
    manager: &SchemaManager<'_>,
    table: impl IntoIden + Copy + 'static,
    cols: Vec<DynIden>,
) -> Result<(), DbErr> {
    for col in cols {
        manager
            .alter_table(Table::alter().table(table).drop_column(col).to_owned())
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_columns(
            manager,
            Tenants::Table,
            vec![
                bigint_null(Tenants::RpmLimit),
                bigint_null(Tenants::RpmBurst),
                bigint_null(Tenants::TpmLimit),
                bigint_null(Tenants::TpmBurst),
                bigint_null(Tenants::MaxConcurrent),
                time_null(Tenants::UpdatedAt),
            ],
        )
        .await?;
        manager
            .create_index(index(
                "idx_tenants_updated",
                Tenants::Table,
                &["updated_at"],
            ))
            .await?;
        add_columns(
            manager,
            ApiKeys::Table,
            vec![
                bigint_null(ApiKeys::RpmBurst),
                bigint_null(ApiKeys::TpmBurst),
                bigint_null(ApiKeys::MaxConcurrent),
            ],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Budgets::Table)
                    .col(id(Budgets::Id))
                    .col(ColumnDef::new(Budgets::TenantId).big_integer().not_null())
                    .col(bigint_null(Budgets::KeyId))
                    .col(ColumnDef::new(Budgets::Unit).string().not_null())
                    .col(ColumnDef::new(Budgets::Amount).big_integer().not_null())
                    .col(ColumnDef::new(Budgets::Period).string().not_null())
                    .col(time(Budgets::AnchorAt))
                    .col(time(Budgets::CreatedAt))
                    .col(time(Budgets::UpdatedAt))
                    .col(time_null(Budgets::DeletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(Budgets::Table)
                            .from_col(Budgets::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(Budgets::Table)
                            .from_col(Budgets::KeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_budgets_tenant",
                Budgets::Table,
                &["tenant_id", "key_id"],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_budgets_updated",
                Budgets::Table,
                &["updated_at"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BudgetUsage::Table)
                    .col(id(BudgetUsage::Id))
                    .col(
                        ColumnDef::new(BudgetUsage::BudgetId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(BudgetUsage::PeriodKey).string().not_null())
                    .col(time(BudgetUsage::PeriodStart))
                    .col(time_null(BudgetUsage::PeriodEnd))
                    .col(bigint(BudgetUsage::Spent))
                    .col(bigint(BudgetUsage::Reserved))
                    .col(time(BudgetUsage::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(BudgetUsage::Table)
                            .from_col(BudgetUsage::BudgetId)
                            .to(Budgets::Table, Budgets::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let mut unique = index(
            "idx_budget_usage_period",
            BudgetUsage::Table,
            &["budget_id", "period_key"],
        );
        manager.create_index(unique.unique().to_owned()).await?;

        manager
            .create_table(
                Table::create()
                    .table(BudgetReservations::Table)
                    .col(
                        ColumnDef::new(BudgetReservations::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(BudgetReservations::UsageId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(BudgetReservations::Amount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(time(BudgetReservations::CreatedAt))
                    .col(time(BudgetReservations::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(BudgetReservations::Table)
                            .from_col(BudgetReservations::UsageId)
                            .to(BudgetUsage::Table, BudgetUsage::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_budget_reservations_expiry",
                BudgetReservations::Table,
                &["expires_at"],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BudgetReservations::Table.into_iden(),
            BudgetUsage::Table.into_iden(),
            Budgets::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        drop_columns(
            manager,
            ApiKeys::Table,
            vec![
                ApiKeys::RpmBurst.into_iden(),
                ApiKeys::TpmBurst.into_iden(),
                ApiKeys::MaxConcurrent.into_iden(),
            ],
        )
        .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_tenants_updated")
                    .table(Tenants::Table)
                    .to_owned(),
            )
            .await?;
        drop_columns(
            manager,
            Tenants::Table,
            vec![
                Tenants::RpmLimit.into_iden(),
                Tenants::RpmBurst.into_iden(),
                Tenants::TpmLimit.into_iden(),
                Tenants::TpmBurst.into_iden(),
                Tenants::MaxConcurrent.into_iden(),
                Tenants::UpdatedAt.into_iden(),
            ],
        )
        .await?;
        Ok(())
    }
}
