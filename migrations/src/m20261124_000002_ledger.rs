//! The usage ledger: model prices (with history), one usage event per admitted request, and
//! hourly / daily rollups maintained with the events.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ModelPrices {
    Table,
    Id,
    Model,
    InputMicrosPerMtok,
    OutputMicrosPerMtok,
    EffectiveFrom,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum UsageEvents {
    Table,
    Id,
    RequestId,
    TenantId,
    KeyId,
    EndUser,
    Model,
    Endpoint,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
    CachedTokens,
    Status,
    HttpStatus,
    Stream,
    StartedAt,
    FirstTokenAt,
    FinishedAt,
    CostMicros,
    PriceId,
}

#[derive(DeriveIden, Clone, Copy)]
enum UsageRollups {
    Table,
    Id,
    Granularity,
    BucketStart,
    TenantId,
    KeyId,
    Model,
    EndUser,
    Endpoint,
    Requests,
    Errors,
    PromptTokens,
    CompletionTokens,
    CostMicros,
}

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn bigint<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn text<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string().not_null().to_owned()
}

fn time<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ModelPrices::Table)
                    .col(id(ModelPrices::Id))
                    .col(text(ModelPrices::Model))
                    .col(bigint(ModelPrices::InputMicrosPerMtok))
                    .col(bigint(ModelPrices::OutputMicrosPerMtok))
                    .col(time(ModelPrices::EffectiveFrom))
                    .col(time(ModelPrices::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let mut unique = index(
            "idx_model_prices_from",
            ModelPrices::Table,
            &["model", "effective_from"],
        );
        manager.create_index(unique.unique().to_owned()).await?;

        // No foreign keys: the ledger outlives whatever it refers to, and its writer must never
        // fail a batch over a row deleted elsewhere.
        manager
            .create_table(
                Table::create()
                    .table(UsageEvents::Table)
                    .col(id(UsageEvents::Id))
                    .col(text(UsageEvents::RequestId).unique_key())
                    .col(ColumnDef::new(UsageEvents::TenantId).big_integer().null())
                    .col(ColumnDef::new(UsageEvents::KeyId).big_integer().null())
                    .col(ColumnDef::new(UsageEvents::EndUser).string().null())
                    .col(text(UsageEvents::Model))
                    .col(text(UsageEvents::Endpoint))
                    .col(bigint(UsageEvents::PromptTokens))
                    .col(bigint(UsageEvents::CompletionTokens))
                    .col(bigint(UsageEvents::TotalTokens))
                    .col(
                        ColumnDef::new(UsageEvents::CachedTokens)
                            .big_integer()
                            .null(),
                    )
                    .col(text(UsageEvents::Status))
                    .col(ColumnDef::new(UsageEvents::HttpStatus).integer().not_null())
                    .col(ColumnDef::new(UsageEvents::Stream).boolean().not_null())
                    .col(time(UsageEvents::StartedAt))
                    .col(
                        ColumnDef::new(UsageEvents::FirstTokenAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(time(UsageEvents::FinishedAt))
                    .col(bigint(UsageEvents::CostMicros))
                    .col(ColumnDef::new(UsageEvents::PriceId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_usage_events_tenant_time",
                UsageEvents::Table,
                &["tenant_id", "started_at"],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_usage_events_time",
                UsageEvents::Table,
                &["started_at"],
            ))
            .await?;

        // Rollups: `0` / `''` stand for "none" so the unique key works on both databases.
        manager
            .create_table(
                Table::create()
                    .table(UsageRollups::Table)
                    .col(id(UsageRollups::Id))
                    .col(text(UsageRollups::Granularity))
                    .col(time(UsageRollups::BucketStart))
                    .col(bigint(UsageRollups::TenantId))
                    .col(bigint(UsageRollups::KeyId))
                    .col(text(UsageRollups::Model))
                    .col(text(UsageRollups::EndUser))
                    .col(text(UsageRollups::Endpoint))
                    .col(bigint(UsageRollups::Requests))
                    .col(bigint(UsageRollups::Errors))
                    .col(bigint(UsageRollups::PromptTokens))
                    .col(bigint(UsageRollups::CompletionTokens))
                    .col(bigint(UsageRollups::CostMicros))
                    .to_owned(),
            )
            .await?;
        let mut unique = index(
            "idx_usage_rollups_key",
            UsageRollups::Table,
            &[
                "granularity",
                "bucket_start",
                "tenant_id",
                "key_id",
                "model",
                "end_user",
                "endpoint",
            ],
        );
        manager.create_index(unique.unique().to_owned()).await?;
        manager
            .create_index(index(
                "idx_usage_rollups_tenant",
                UsageRollups::Table,
                &["tenant_id", "granularity", "bucket_start"],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            UsageRollups::Table.into_iden(),
            UsageEvents::Table.into_iden(),
            ModelPrices::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
