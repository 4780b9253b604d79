//! The operator subcommands: each opens the configured database, calls one control-plane
//! service and prints a plain result that scripts can parse (tab-separated rows; a created key
//! or token alone on the last line).

use aiaas_admin::audit::Actor;
use aiaas_admin::{jwt_keys, keys, tenants, users, Scope};
use anyhow::{bail, Context};
use sea_orm::DatabaseConnection;
use secrecy::{ExposeSecret, SecretString};

use crate::cli::{DbArgs, JwtKeyCommand, KeyCommand, MigrateArgs, TenantCommand, UserCommand};

async fn open(db: &DbArgs) -> anyhow::Result<DatabaseConnection> {
    let config = db.load_config().map_err(anyhow::Error::msg)?;
    let conn = aiaas_admin::db::connect(&config.database)
        .await
        .with_context(|| "cannot open the database (database.url)".to_string())?;
    if config.database.migrate_on_start {
        aiaas_admin::db::migrate(&conn)
            .await
            .context("migrating the database")?;
    }
    Ok(conn)
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    use aiaas_migrations::{Migrator, MigratorTrait};
    let config = args.db.load_config().map_err(anyhow::Error::msg)?;
    let conn = aiaas_admin::db::connect(&config.database).await?;
    match args.down {
        Some(steps) => {
            Migrator::down(&conn, Some(steps)).await?;
            println!("rolled back {steps} migration(s)");
        }
        None => {
            let pending = Migrator::get_pending_migrations(&conn).await?.len();
            Migrator::up(&conn, None).await?;
            println!("applied {pending} migration(s)");
        }
    }
    Ok(())
}

pub async fn tenant(command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { name, db } => {
            let conn = open(&db).await?;
            let tenant = tenants::insert_tenant(&conn, &name, &Actor::cli()).await?;
            println!("{}\t{}", tenant.id, tenant.name);
        }
        TenantCommand::List { db } => {
            let conn = open(&db).await?;
            println!("id\tname\tcreated_at");
            for t in tenants::list_tenants(&conn).await? {
                println!("{}\t{}\t{}", t.id, t.name, when(Some(t.created_at)));
            }
        }
    }
    Ok(())
}

pub async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            tenant,
            name,
            models,
            expires,
            db,
        } => {
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            let expires_at = expires
                .map(|e| aiaas_admin::parse_duration(&e).map(|d| chrono::Utc::now() + d))
                .transpose()?;
            let created = keys::insert_key(
                &conn,
                keys::NewKey {
                    tenant_id: tenant.id,
                    name,
                    models,
                    expires_at,
                    ..Default::default()
                },
                &Actor::cli(),
            )
            .await?;
            eprintln!(
                "created key {} for tenant `{}`; it is shown once, store it now:",
                created.key.public_id, tenant.name
            );
            println!("{}", created.secret.expose_secret());
        }
        KeyCommand::List { tenant, db } => {
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            println!("id\tprefix\tname\tmodels\tcreated_at\texpires_at\trevoked_at\tlast_used_at");
            for k in keys::list_keys(&conn, tenant.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.public_id,
                    k.prefix,
                    k.name,
                    keys::allowed_models(&k).map_or_else(|| "*".into(), |m| m.join(",")),
                    when(Some(k.created_at)),
                    when(k.expires_at),
                    when(k.revoked_at),
                    when(k.last_used_at),
                );
            }
        }
        KeyCommand::Revoke { id, db } => {
            let conn = open(&db).await?;
            let key = keys::revoke_key(&conn, Scope::Platform, &id, &Actor::cli()).await?;
            println!("revoked {} at {}", key.public_id, when(key.revoked_at));
        }
        KeyCommand::Token {
            id,
            ttl,
            sub,
            models,
            db,
        } => {
            let conn = open(&db).await?;
            let ttl = aiaas_admin::parse_duration(&ttl)?;
            let token =
                jwt_keys::mint_key_token(&conn, Scope::Platform, &id, ttl, sub, models).await?;
            println!("{token}");
        }
    }
    Ok(())
}

pub async fn user(command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create {
        email,
        role,
        tenant,
        password_env,
        db,
    } = command;
    let role = users::Role::parse(&role)?;
    let password = match password_env {
        Some(var) => {
            std::env::var(&var).with_context(|| format!("environment variable {var} is not set"))?
        }
        None => {
            // One line: `printf '%s\n' "$PW" | aiaas user create ...`, or typed and Enter.
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let conn = open(&db).await?;
    let tenant_id = match tenant {
        Some(name) => Some(tenants::require_tenant(&conn, &name).await?.id),
        None => None,
    };
    let user = users::insert_user(
        &conn,
        users::NewUser {
            email,
            password: SecretString::from(password),
            role,
            tenant_id,
        },
        &Actor::cli(),
    )
    .await?;
    println!("{}\t{}\t{}", user.id, user.email, user.role);
    Ok(())
}

pub async fn jwt_key(command: JwtKeyCommand) -> anyhow::Result<()> {
    match command {
        JwtKeyCommand::Add {
            tenant,
            alg,
            public_key,
            secret_env,
            issuer,
            audience,
            name,
            db,
        } => {
            let public_key = public_key
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))
                })
                .transpose()?;
            let secret = secret_env
                .map(|var| {
                    std::env::var(&var)
                        .map(SecretString::from)
                        .with_context(|| format!("environment variable {var} is not set"))
                })
                .transpose()?;
            if public_key.is_none() && secret.is_none() {
                bail!("pass --public-key FILE (RS256, ES256, EdDSA) or --secret-env VAR (HS256)");
            }
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            let key = jwt_keys::insert_jwt_key(
                &conn,
                jwt_keys::NewJwtKey {
                    tenant_id: tenant.id,
                    name,
                    algorithm: alg,
                    secret,
                    public_key,
                    issuer,
                    audience,
                },
                &Actor::cli(),
            )
            .await?;
            eprintln!("tokens signed with this key must carry this `kid` header:");
            println!("{}", key.kid);
        }
        JwtKeyCommand::List { tenant, db } => {
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            println!("kid\talgorithm\tissuer\taudience\tenabled\tcreated_at");
            for k in jwt_keys::list_jwt_keys(&conn, tenant.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.kid,
                    k.algorithm,
                    k.issuer.as_deref().unwrap_or("-"),
                    k.audience.as_deref().unwrap_or("-"),
                    k.enabled,
                    when(Some(k.created_at)),
                );
            }
        }
        JwtKeyCommand::Disable { kid, db } => set_enabled(&kid, &db, false).await?,
        JwtKeyCommand::Enable { kid, db } => set_enabled(&kid, &db, true).await?,
    }
    Ok(())
}

async fn set_enabled(kid: &str, db: &DbArgs, enabled: bool) -> anyhow::Result<()> {
    let conn = open(db).await?;
    let key =
        jwt_keys::set_jwt_key_enabled(&conn, Scope::Platform, kid, enabled, &Actor::cli()).await?;
    println!(
        "{}	{}",
        key.kid,
        if key.enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}
