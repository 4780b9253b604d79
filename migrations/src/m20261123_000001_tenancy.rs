//! Tenancy: tenants, users, API keys, JWT verification keys and the audit log.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    Role,
    TenantId,
    CreatedAt,
    DisabledAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ApiKeys {
    Table,
    Id,
    PublicId,
    SecretHash,
    Prefix,
    Name,
    TenantId,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
    Models,
    RpmLimit,
    TpmLimit,
}

#[derive(DeriveIden, Clone, Copy)]
enum JwtKeys {
    Table,
    Id,
    Kid,
    TenantId,
    Name,
    Algorithm,
    Secret,
    PublicKey,
    Issuer,
    Audience,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    TenantId,
    Action,
    ObjectType,
    ObjectId,
    Ip,
    Detail,
}

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
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

fn text<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string().not_null().to_owned()
}

fn text_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string().null().to_owned()
}

/// A `tenant_id` column and its foreign key: tenants are never deleted from under their data.
fn tenant_fk<C, T>(col: C, table: T, nullable: bool) -> (ColumnDef, ForeignKeyCreateStatement)
where
    C: IntoIden + Copy + 'static,
    T: IntoIden + Copy + 'static,
{
    let mut def = ColumnDef::new(col).big_integer().to_owned();
    if nullable {
        def.null();
    } else {
        def.not_null();
    }
    let fk = ForeignKey::create()
        .from_tbl(table)
        .from_col(col)
        .to(Tenants::Table, Tenants::Id)
        .on_delete(ForeignKeyAction::Restrict)
        .to_owned();
    (def, fk)
}

fn index(
    name: &str,
    table: impl IntoIden + 'static,
    cols: &[&str],
    unique: bool,
) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(table).if_not_exists();
    for col in cols {
        idx.col(Alias::new(*col));
    }
    if unique {
        idx.unique();
    }
    idx.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(id(Tenants::Id))
                    .col(text(Tenants::Name).unique_key())
                    .col(time(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;

        let (tenant, fk) = tenant_fk(Users::TenantId, Users::Table, true);
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(id(Users::Id))
                    .col(text(Users::Email).unique_key())
                    .col(text(Users::PasswordHash))
                    .col(text(Users::Role))
                    .col(tenant)
                    .col(time(Users::CreatedAt))
                    .col(time_null(Users::DisabledAt))
                    .foreign_key(&mut fk.clone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_users_tenant",
                Users::Table,
                &["tenant_id"],
                false,
            ))
            .await?;

        let (tenant, fk) = tenant_fk(ApiKeys::TenantId, ApiKeys::Table, false);
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(id(ApiKeys::Id))
                    .col(text(ApiKeys::PublicId).unique_key())
                    .col(text(ApiKeys::SecretHash))
                    .col(text(ApiKeys::Prefix))
                    .col(text(ApiKeys::Name))
                    .col(tenant)
                    .col(ColumnDef::new(ApiKeys::CreatedBy).big_integer().null())
                    .col(time(ApiKeys::CreatedAt))
                    .col(time(ApiKeys::UpdatedAt))
                    .col(time_null(ApiKeys::ExpiresAt))
                    .col(time_null(ApiKeys::RevokedAt))
                    .col(time_null(ApiKeys::LastUsedAt))
                    .col(ColumnDef::new(ApiKeys::Models).text().null())
                    .col(ColumnDef::new(ApiKeys::RpmLimit).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::TpmLimit).big_integer().null())
                    .foreign_key(&mut fk.clone())
                    .foreign_key(
                        ForeignKey::create()
                            .from_tbl(ApiKeys::Table)
                            .from_col(ApiKeys::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_api_keys_tenant",
                ApiKeys::Table,
                &["tenant_id", "created_at"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "idx_api_keys_updated",
                ApiKeys::Table,
                &["updated_at"],
                false,
            ))
            .await?;

        let (tenant, fk) = tenant_fk(JwtKeys::TenantId, JwtKeys::Table, true);
        manager
            .create_table(
                Table::create()
                    .table(JwtKeys::Table)
                    .col(id(JwtKeys::Id))
                    .col(text(JwtKeys::Kid).unique_key())
                    .col(tenant)
                    .col(text(JwtKeys::Name))
                    .col(text(JwtKeys::Algorithm))
                    .col(ColumnDef::new(JwtKeys::Secret).text().null())
                    .col(ColumnDef::new(JwtKeys::PublicKey).text().null())
                    .col(text_null(JwtKeys::Issuer))
                    .col(text_null(JwtKeys::Audience))
                    .col(ColumnDef::new(JwtKeys::Enabled).boolean().not_null())
                    .col(time(JwtKeys::CreatedAt))
                    .col(time(JwtKeys::UpdatedAt))
                    .foreign_key(&mut fk.clone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_jwt_keys_tenant",
                JwtKeys::Table,
                &["tenant_id"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "idx_jwt_keys_updated",
                JwtKeys::Table,
                &["updated_at"],
                false,
            ))
            .await?;

        let (tenant, fk) = tenant_fk(AuditLog::TenantId, AuditLog::Table, true);
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(id(AuditLog::Id))
                    .col(time(AuditLog::At))
                    .col(text(AuditLog::Actor))
                    .col(tenant)
                    .col(text(AuditLog::Action))
                    .col(text(AuditLog::ObjectType))
                    .col(text(AuditLog::ObjectId))
                    .col(text_null(AuditLog::Ip))
                    .col(ColumnDef::new(AuditLog::Detail).text().null())
                    .foreign_key(&mut fk.clone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_audit_log_tenant_at",
                AuditLog::Table,
                &["tenant_id", "at"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "idx_audit_log_object",
                AuditLog::Table,
                &["object_type", "object_id"],
                false,
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            JwtKeys::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Users::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
