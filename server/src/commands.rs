//! The operator subcommands: each opens the configured database, calls one control-plane
//! service and prints a plain result that scripts can parse (tab-separated rows; a created key
//! or token alone on the last line).

use aiaas_admin::audit::Actor;
use aiaas_admin::budgets::{self, Period, Unit};
use aiaas_admin::limits::{self, Limits};
use aiaas_admin::{jwt_keys, keys, tenants, users, Scope};
use anyhow::{bail, Context};
use sea_orm::DatabaseConnection;
use secrecy::{ExposeSecret, SecretString};

use crate::cli::{
    BudgetCommand, DbArgs, JwtKeyCommand, KeyCommand, MigrateArgs, PriceCommand, TenantCommand,
    UsageCommand, UserCommand,
};

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

fn unit_of(text: &str) -> Unit {
    Unit::parse(text).unwrap_or(Unit::Tokens)
}

/// Tokens as a number, money as an exact decimal.
fn show_amount(unit: Unit, amount: i64) -> String {
    match unit {
        Unit::Tokens => amount.to_string(),
        Unit::Micros => aiaas_admin::prices::format_micros(amount),
    }
}

fn limit(value: Option<i64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `rpm=60 rpm_burst=- tpm=10000 tpm_burst=- max_concurrent=4`
fn show_limits(l: &Limits) -> String {
    format!(
        "rpm={} rpm_burst={} tpm={} tpm_burst={} max_concurrent={}",
        limit(l.rpm),
        limit(l.rpm_burst),
        limit(l.tpm),
        limit(l.tpm_burst),
        limit(l.max_concurrent)
    )
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
            println!("id\tname\tcreated_at\tlimits");
            for t in tenants::list_tenants(&conn).await? {
                let shown = show_limits(&Limits::from_tenant(&t));
                println!(
                    "{}\t{}\t{}\t{shown}",
                    t.id,
                    t.name,
                    when(Some(t.created_at))
                );
            }
        }
        TenantCommand::SetLimits {
            name,
            limits: args,
            db,
        } => {
            let change = args.change();
            if change.is_empty() {
                bail!("nothing to change: give --rpm, --tpm, --max-concurrent, --rpm-burst or --tpm-burst");
            }
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &name).await?;
            let now = limits::update_tenant_limits(
                &conn,
                Scope::Platform,
                tenant.id,
                change,
                &Actor::cli(),
            )
            .await?;
            println!("{}\t{}", tenant.name, show_limits(&now));
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
            limits: args,
            db,
        } => {
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            let key_limits = args.change().apply(Limits::default());
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
                    limits: key_limits,
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
            println!("id\tprefix\tname\tmodels\tcreated_at\texpires_at\trevoked_at\tlast_used_at\tlimits");
            for k in keys::list_keys(&conn, tenant.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.public_id,
                    k.prefix,
                    k.name,
                    keys::allowed_models(&k).map_or_else(|| "*".into(), |m| m.join(",")),
                    when(Some(k.created_at)),
                    when(k.expires_at),
                    when(k.revoked_at),
                    when(k.last_used_at),
                    show_limits(&Limits::from_key(&k)),
                );
            }
        }
        KeyCommand::SetLimits {
            id,
            limits: args,
            db,
        } => {
            let change = args.change();
            if change.is_empty() {
                bail!("nothing to change: give --rpm, --tpm, --max-concurrent, --rpm-burst or --tpm-burst");
            }
            let conn = open(&db).await?;
            let now = limits::update_key_limits(&conn, Scope::Platform, &id, change, &Actor::cli())
                .await?;
            println!("{id}\t{}", show_limits(&now));
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

pub async fn budget(command: BudgetCommand) -> anyhow::Result<()> {
    match command {
        BudgetCommand::Set {
            tenant,
            key,
            tokens,
            amount,
            period,
            db,
        } => {
            let period = Period::parse(&period)?;
            let (unit, value) = match (tokens, amount) {
                (Some(tokens), _) => (Unit::Tokens, tokens),
                (None, Some(amount)) => (Unit::Micros, aiaas_admin::prices::parse_micros(&amount)?),
                (None, None) => bail!("give --tokens or --amount"),
            };
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            let saved = budgets::set_budget(
                &conn,
                Scope::Platform,
                tenant.id,
                key.as_deref(),
                budgets::Cap {
                    unit,
                    amount: value,
                },
                period,
                &Actor::cli(),
            )
            .await?;
            println!(
                "budget {}\t{}\t{}\t{} {} per {}",
                saved.id,
                tenant.name,
                key.as_deref().unwrap_or("*"),
                show_amount(unit, saved.amount),
                if unit == Unit::Tokens {
                    "tokens"
                } else {
                    "money"
                },
                saved.period
            );
        }
        BudgetCommand::List { tenant, db } => {
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            let key_ids: std::collections::HashMap<i64, String> = keys::list_keys(&conn, tenant.id)
                .await?
                .into_iter()
                .map(|k| (k.id, k.public_id))
                .collect();
            println!("id\tkey\tunit\tamount\tperiod\tperiod_start\tperiod_end\tspent\treserved");
            for b in budgets::list_budgets(&conn, tenant.id).await? {
                let key = b
                    .budget
                    .key_id
                    .and_then(|id| key_ids.get(&id).cloned())
                    .unwrap_or_else(|| "*".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    b.budget.id,
                    key,
                    b.budget.unit,
                    show_amount(unit_of(&b.budget.unit), b.budget.amount),
                    b.budget.period,
                    when(Some(b.window.start)),
                    when(Some(b.window.end)),
                    show_amount(unit_of(&b.budget.unit), b.spent),
                    show_amount(unit_of(&b.budget.unit), b.reserved)
                );
            }
        }
        BudgetCommand::Delete { tenant, key, db } => {
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            budgets::delete_budget(
                &conn,
                Scope::Platform,
                tenant.id,
                key.as_deref(),
                &Actor::cli(),
            )
            .await?;
            println!(
                "deleted the budget of {}",
                key.as_deref().unwrap_or(&tenant.name)
            );
        }
    }
    Ok(())
}

pub async fn price(command: PriceCommand) -> anyhow::Result<()> {
    use aiaas_admin::prices;
    match command {
        PriceCommand::Set {
            model,
            input,
            output,
            from,
            db,
        } => {
            let input = prices::parse_micros(&input)?;
            let output = prices::parse_micros(&output)?;
            let from = from
                .map(|f| aiaas_admin::usage::parse_time(&f))
                .transpose()?;
            let conn = open(&db).await?;
            let saved =
                prices::insert_price(&conn, &model, input, output, from, &Actor::cli()).await?;
            println!(
                "{}\t{}\tinput {} output {} per million tokens from {}",
                saved.id,
                saved.model,
                prices::format_micros(saved.input_micros_per_mtok),
                prices::format_micros(saved.output_micros_per_mtok),
                when(Some(saved.effective_from))
            );
        }
        PriceCommand::List { db } => {
            let conn = open(&db).await?;
            println!("id\tmodel\tinput_per_mtok\toutput_per_mtok\teffective_from");
            for p in prices::list_prices(&conn).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    p.id,
                    p.model,
                    prices::format_micros(p.input_micros_per_mtok),
                    prices::format_micros(p.output_micros_per_mtok),
                    when(Some(p.effective_from))
                );
            }
        }
    }
    Ok(())
}

pub async fn usage(command: UsageCommand) -> anyhow::Result<()> {
    use aiaas_admin::usage::{self as ledger_usage, ExportQuery, GroupBy};
    match command {
        UsageCommand::Export {
            from,
            to,
            tenant,
            group_by,
            format,
            db,
        } => {
            if format != "csv" && format != "json" {
                bail!("--format must be csv or json");
            }
            let group_by = GroupBy::parse_list(&group_by)?;
            let conn = open(&db).await?;
            let tenant_id = match tenant {
                Some(name) => Some(tenants::require_tenant(&conn, &name).await?.id),
                None => None,
            };
            let query = ExportQuery {
                from: ledger_usage::parse_time(&from)?,
                to: ledger_usage::parse_time(&to)?,
                tenant_id,
                group_by: group_by.clone(),
                filters: Default::default(),
            };
            let rows = ledger_usage::export(&conn, &query).await?;
            if format == "csv" {
                print!("{}", ledger_usage::to_csv(&group_by, &rows));
            } else {
                println!("{}", ledger_usage::to_json(&group_by, &rows));
            }
        }
        UsageCommand::Reconcile { from, to, db } => {
            let conn = open(&db).await?;
            let from = ledger_usage::parse_time(&from)?;
            let to = ledger_usage::parse_time(&to)?;
            let mismatches = ledger_usage::reconcile(&conn, from, to).await?;
            for m in &mismatches {
                println!(
                    "{}\t{}\ttenant {}\tkey {}\t{}\t{}\t{}\tevents {:?}\trollup {:?}",
                    m.granularity,
                    when(Some(m.bucket_start)),
                    m.tenant_id,
                    m.key_id,
                    m.model,
                    m.end_user,
                    m.endpoint,
                    m.events,
                    m.rollup
                );
            }
            if !mismatches.is_empty() {
                bail!(
                    "{} rollup(s) differ from their raw events",
                    mismatches.len()
                );
            }
            println!("rollups equal their raw events");
        }
        UsageCommand::Statement {
            tenant,
            month,
            format,
            db,
        } => {
            if format != "csv" && format != "html" {
                bail!("--format must be csv or html");
            }
            let config = db.load_config().map_err(anyhow::Error::msg)?;
            let conn = open(&db).await?;
            let tenant = tenants::require_tenant(&conn, &tenant).await?;
            let statement =
                ledger_usage::statement(&conn, tenant.id, &month, &config.ledger.currency).await?;
            if format == "csv" {
                print!("{}", ledger_usage::statement_csv(&statement));
            } else {
                print!("{}", ledger_usage::statement_html(&statement));
            }
        }
        UsageCommand::Prune { before, db } => {
            let conn = open(&db).await?;
            let before = ledger_usage::parse_time(&before)?;
            let deleted = ledger_usage::prune_events(&conn, before).await?;
            println!(
                "deleted {deleted} raw event(s) that started before {}",
                when(Some(before))
            );
        }
    }
    Ok(())
}

pub async fn operator_token(name: &str, ttl: &str, db: &DbArgs) -> anyhow::Result<()> {
    let conn = open(db).await?;
    let ttl = aiaas_admin::parse_duration(ttl)?;
    let token = jwt_keys::mint_operator_token(&conn, name, ttl, &Actor::cli()).await?;
    println!("{token}");
    Ok(())
}
