//! The admin console: browser sessions, sign-in lockout per account, key rotation with a grace
//! period (the previous secret stays valid until a deadline), suspended tenants, and coarse
//! rollups for dashboards (`tenant_hour`, `tenant_day`: per tenant, model and endpoint),
//! back-filled here from the fine ones; the ledger writer maintains both from now on.

use sea_orm_migration::prelude::*;

use crate::columns::{
    add_columns, drop_columns, id, index, int_zero, text, text_null, time, time_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ConsoleSessions {
    Table,
    Id,
    TokenHash,
    UserId,
    CsrfToken,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    Ip,
    UserAgent,
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    FailedLogins,
    LockedUntil,
    PasswordChangedAt,
    LastLoginAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ApiKeys {
    Table,
    PreviousSecretHash,
    PreviousValidUntil,
    RotatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    SuspendedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .col(id(ConsoleSessions::Id))
                    .col(text(ConsoleSessions::TokenHash))
                    .col(
                        ColumnDef::new(ConsoleSessions::UserId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(text(ConsoleSessions::CsrfToken))
                    .col(time(ConsoleSessions::CreatedAt))
                    .col(time(ConsoleSessions::LastSeenAt))
                    .col(time(ConsoleSessions::ExpiresAt))
                    .col(text_null(ConsoleSessions::Ip))
                    .col(text_null(ConsoleSessions::UserAgent))
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(ConsoleSessions::Table)
                            .from_col(ConsoleSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let mut unique = index(
            "idx_console_sessions_token",
            ConsoleSessions::Table,
            &["token_hash"],
        );
        manager.create_index(unique.unique().to_owned()).await?;
        manager
            .create_index(index(
                "idx_console_sessions_user",
                ConsoleSessions::Table,
                &["user_id"],
            ))
            .await?;
        add_columns(
            manager,
            Users::Table,
            vec![
                int_zero(Users::FailedLogins),
                time_null(Users::LockedUntil),
                time_null(Users::PasswordChangedAt),
                time_null(Users::LastLoginAt),
            ],
        )
        .await?;
        add_columns(
            manager,
            ApiKeys::Table,
            vec![
                text_null(ApiKeys::PreviousSecretHash),
                time_null(ApiKeys::PreviousValidUntil),
                time_null(ApiKeys::RotatedAt),
            ],
        )
        .await?;
        add_columns(
            manager,
            Tenants::Table,
            vec![time_null(Tenants::SuspendedAt)],
        )
        .await?;
        let db = manager.get_connection();
        for (coarse, fine) in [("tenant_hour", "hour"), ("tenant_day", "day")] {
            db.execute_unprepared(&format!(
                "INSERT INTO usage_rollups (granularity, bucket_start, tenant_id, key_id, model, \
                 end_user, endpoint, requests, errors, prompt_tokens, completion_tokens, cost_micros) \
                 SELECT '{coarse}', bucket_start, tenant_id, 0, model, '', endpoint, SUM(requests), \
                 SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros) \
                 FROM usage_rollups WHERE granularity = '{fine}' \
                 GROUP BY bucket_start, tenant_id, model, endpoint"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DELETE FROM usage_rollups WHERE granularity IN ('tenant_hour', 'tenant_day')",
            )
            .await?;
        drop_columns(
            manager,
            Tenants::Table,
            vec![Tenants::SuspendedAt.into_iden()],
        )
        .await?;
        drop_columns(
            manager,
            ApiKeys::Table,
            vec![
                ApiKeys::PreviousSecretHash.into_iden(),
                ApiKeys::PreviousValidUntil.into_iden(),
                ApiKeys::RotatedAt.into_iden(),
            ],
        )
        .await?;
        drop_columns(
            manager,
            Users::Table,
            vec![
                Users::FailedLogins.into_iden(),
                Users::LockedUntil.into_iden(),
                Users::PasswordChangedAt.into_iden(),
                Users::LastLoginAt.into_iden(),
            ],
        )
        .await?;
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await?;
        Ok(())
    }
}
