//! Command-line interface: `aiaas serve` (and future operator subcommands).

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
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// A model to serve, as ID=SOURCE (GGUF file, model directory or hub repo id); repeatable.
    #[arg(long = "model", value_name = "ID=SOURCE", value_parser = ModelSpec::parse_flag)]
    pub models: Vec<ModelSpec>,
}

impl ServeArgs {
    pub fn load_config(&self) -> Result<Config, String> {
        Config::load(
            self.config.as_deref(),
            std::env::vars(),
            Overrides {
                bind: self.bind.clone(),
                models: self.models.clone(),
            },
        )
    }
}
