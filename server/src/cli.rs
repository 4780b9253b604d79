//! Command-line interface: `aiaas serve`, `aiaas config`, `aiaas migrate` and the operator
//! subcommands (`tenant`, `key`, `user`, `jwt-key`) that scripts drive.

use std::path::PathBuf;

use aiaas_engine::ModelSpec;
use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "aiaas",
    version,
    about = "OpenAI-compatible LLM serving for many tenants"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the /v1 API.
    Serve(ServeArgs),
    /// Print the effective configuration (defaults < file < environment < flags) as TOML.
    Config(ServeArgs),
    /// Apply pending database migrations (or roll back with --down).
    Migrate(MigrateArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage console users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the JWT verification keys tenants register.
    #[command(subcommand, name = "jwt-key")]
    JwtKey(JwtKeyCommand),
    /// Manage spend budgets of tenants and keys.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Manage model prices (per million tokens, in the operator's currency).
    #[command(subcommand)]
    Price(PriceCommand),
    /// Usage for finance.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Mint a short-lived operator token (reads any tenant's usage over HTTP; runs nothing).
    OperatorToken {
        /// Who the token is for (recorded in the audit log and as the token's `sub`).
        #[arg(long)]
        name: String,
        /// Lifetime, at most 24h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PriceCommand {
    /// Set a model's price from now (or a later --from) on; earlier usage keeps its price.
    Set {
        model: String,
        /// Per million prompt tokens, e.g. 0.15 (at most 6 decimals).
        #[arg(long)]
        input: String,
        /// Per million completion tokens.
        #[arg(long)]
        output: String,
        /// When the price starts (a date or an RFC 3339 time, not in the past); default now.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every price, with its start.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Usage between two dates from the rollups, grouped, as CSV (RFC 4180) or JSON on stdout.
    Export {
        /// First day (or hour, with --group-by hour), included: 2026-11-01 or RFC 3339.
        #[arg(long)]
        from: String,
        /// End, excluded.
        #[arg(long)]
        to: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated: hour or day, tenant, key, model, user, endpoint.
        #[arg(long, default_value = "day,tenant,key,model")]
        group_by: String,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Check that the rollups of whole days equal their raw events; exit 1 on any difference.
    Reconcile {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// A tenant's monthly statement (requests, tokens and cost per model) as CSV or HTML.
    Statement {
        #[arg(long)]
        tenant: String,
        /// The month, e.g. 2026-11 (UTC).
        #[arg(long)]
        month: String,
        /// csv or html.
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Delete raw events that started before a date (rollups are kept).
    Prune {
        #[arg(long)]
        before: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// A limit on the command line: a positive number, or `none` to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitValue(pub Option<i64>);

fn parse_limit(text: &str) -> Result<LimitValue, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(LimitValue(None));
    }
    match text.parse::<i64>() {
        Ok(n) if n > 0 => Ok(LimitValue(Some(n))),
        _ => Err(format!("`{text}`: use a positive integer, or `none`")),
    }
}

/// Rate limits of a key or tenant (applied within a second, without restart).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Requests per minute (`none` removes the limit).
    #[arg(long, value_parser = parse_limit)]
    pub rpm: Option<LimitValue>,
    /// Requests allowed at once (default: a minute's worth).
    #[arg(long, value_parser = parse_limit)]
    pub rpm_burst: Option<LimitValue>,
    /// Tokens (prompt + completion) per minute.
    #[arg(long, value_parser = parse_limit)]
    pub tpm: Option<LimitValue>,
    /// Tokens that may be reserved at once (default: a minute's worth).
    #[arg(long, value_parser = parse_limit)]
    pub tpm_burst: Option<LimitValue>,
    /// Requests running at the same time.
    #[arg(long, value_parser = parse_limit)]
    pub max_concurrent: Option<LimitValue>,
}

impl LimitArgs {
    pub fn change(&self) -> aiaas_admin::limits::LimitsChange {
        let get = |v: Option<LimitValue>| v.map(|v| v.0);
        aiaas_admin::limits::LimitsChange {
            rpm: get(self.rpm),
            rpm_burst: get(self.rpm_burst),
            tpm: get(self.tpm),
            tpm_burst: get(self.tpm_burst),
            max_concurrent: get(self.max_concurrent),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set (or replace) the budget (tokens or money) of a tenant, or of one of its keys.
    Set {
        #[arg(long)]
        tenant: String,
        /// The key's id (the part after `sk-aiaas-`); without it the budget covers the tenant.
        #[arg(long)]
        key: Option<String>,
        /// Tokens (prompt + completion) allowed per period.
        #[arg(long, conflicts_with = "amount", required_unless_present = "amount")]
        tokens: Option<i64>,
        /// Money allowed per period, in the operator's currency (e.g. 25.50), at model prices.
        #[arg(long)]
        amount: Option<String>,
        /// `monthly` (calendar month, UTC) or a number of days, e.g. `7d`.
        #[arg(long, default_value = "monthly")]
        period: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List a tenant's budgets with this period's spend and reservations.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Remove the budget of a tenant (or of one key with --key).
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// A model to serve, as ID=SOURCE (GGUF file, model directory or hub repo id); repeatable.
    #[arg(long = "model", value_name = "ID=SOURCE", value_parser = ModelSpec::parse_flag)]
    pub models: Vec<ModelSpec>,
    /// Do not run pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
}

/// Where the configuration (and so the database) comes from; shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Database URL (overrides database.url): sqlite://PATH or postgres://...
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Roll back this many migrations instead of applying.
    #[arg(long, value_name = "STEPS")]
    pub down: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List tenants and their limits.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Change a tenant's rate limits (the stricter of tenant and key applies).
    SetLimits {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; prints the key (shown once) as the last line of stdout.
    Create {
        #[arg(long)]
        tenant: String,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated models the key may use (default: every model).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Lifetime, e.g. 30d, 12h.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Change a key's rate limits.
    SetLimits {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List a tenant's keys (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key by its id (the part after `sk-aiaas-`, before the next `-`).
    Revoke {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Mint a JWT for a key, signed by the server.
    Token {
        id: String,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The end user the token is for.
        #[arg(long)]
        sub: Option<String>,
        /// Comma-separated models, narrower than the key's.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a console user; the password is read from stdin (or --password-env), never argv.
    Create {
        #[arg(long)]
        email: String,
        /// operator, tenant_admin or finance.
        #[arg(long)]
        role: String,
        /// The tenant of a tenant_admin or finance user.
        #[arg(long)]
        tenant: Option<String>,
        /// Read the password from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum JwtKeyCommand {
    /// Register a key that verifies JWTs signed by the tenant's own backend; prints its `kid`.
    Add {
        #[arg(long)]
        tenant: String,
        /// HS256, RS256, ES256 or EdDSA.
        #[arg(long)]
        alg: String,
        /// PEM file with the public key (RS256, ES256, EdDSA).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Environment variable holding the HS256 shared secret.
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List a tenant's verification keys.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Stop accepting tokens signed with this key.
    Disable {
        kid: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Accept tokens signed with this key again.
    Enable {
        kid: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

impl DbArgs {
    pub fn load_config(&self) -> Result<Config, String> {
        Config::load(
            self.config.as_deref(),
            std::env::vars(),
            Overrides {
                database_url: self.database_url.clone(),
                ..Default::default()
            },
        )
    }
}

impl ServeArgs {
    pub fn load_config(&self) -> Result<Config, String> {
        let mut config = Config::load(
            self.db.config.as_deref(),
            std::env::vars(),
            Overrides {
                bind: self.bind.clone(),
                database_url: self.db.database_url.clone(),
                models: self.models.clone(),
            },
        )?;
        if self.no_migrate {
            config.database.migrate_on_start = false;
        }
        Ok(config)
    }
}
