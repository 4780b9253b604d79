//! The `aiaas` binary: parse the command line, load the configuration, run the library.

use aiaas_server::cli::{Cli, Command};
use aiaas_server::{commands, Application};
use clap::Parser;
use secrecy::ExposeSecret;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.load_config().map_err(anyhow::Error::msg)?;
            init_tracing(
                &config.server.log_format,
                "info,mistralrs_core=warn,sqlx=warn",
            );
            if config.models.is_empty() {
                tracing::warn!(
                    "no models configured: pass --model ID=SOURCE or a [[models]] table"
                );
            }
            let app = Application::build(config).await?;
            if let Some(key) = app.first_key() {
                // Shown once, on stdout (logs go to stderr and never carry it).
                println!(
                    "Created tenant `default` and its first API key (shown once, store it now):\n{}",
                    key.expose_secret()
                );
            }
            app.run_until_stopped().await
        }
        Command::Config(args) => {
            let config = args.load_config().map_err(anyhow::Error::msg)?;
            let mut shown = config.clone();
            shown.database.url = redact_password(&shown.database.url);
            shown.limits.redis_url = shown.limits.redis_url.as_deref().map(redact_password);
            println!("{}", toml::to_string_pretty(&shown)?);
            Ok(())
        }
        Command::Migrate(args) => {
            init_tracing("text", "warn");
            commands::migrate(args).await
        }
        Command::Tenant(command) => {
            init_tracing("text", "warn");
            commands::tenant(command).await
        }
        Command::Key(command) => {
            init_tracing("text", "warn");
            commands::key(command).await
        }
        Command::User(command) => {
            init_tracing("text", "warn");
            commands::user(command).await
        }
        Command::JwtKey(command) => {
            init_tracing("text", "warn");
            commands::jwt_key(command).await
        }
        Command::Budget(command) => {
            init_tracing("text", "warn");
            commands::budget(command).await
        }
        Command::Price(command) => {
            init_tracing("text", "warn");
            commands::price(command).await
        }
        Command::Usage(command) => {
            init_tracing("text", "warn");
            commands::usage(command).await
        }
        Command::OperatorToken { name, ttl, db } => {
            init_tracing("text", "warn");
            commands::operator_token(&name, &ttl, &db).await
        }
    }
}

fn init_tracing(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIAAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `scheme://user:password@host/...` with the password replaced, for display.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn database_passwords_are_not_printed() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/aiaas"),
            "postgres://app:***@db:5432/aiaas"
        );
        assert_eq!(
            redact_password("postgres://app@db/aiaas"),
            "postgres://app@db/aiaas"
        );
        assert_eq!(redact_password("sqlite://aiaas.db"), "sqlite://aiaas.db");
    }
}
