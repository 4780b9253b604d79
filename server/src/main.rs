//! The `aiaas` binary: parse the command line, load the configuration, run the library.

use aiaas_server::cli::{Cli, Command};
use aiaas_server::Application;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.load_config().map_err(anyhow::Error::msg)?;
            init_tracing(&config.server.log_format);
            if config.models.is_empty() {
                tracing::warn!(
                    "no models configured: pass --model ID=SOURCE or a [[models]] table"
                );
            }
            let app = Application::build(config).await?;
            app.run_until_stopped().await
        }
        Command::Config(args) => {
            let config = args.load_config().map_err(anyhow::Error::msg)?;
            println!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIAAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,mistralrs_core=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
