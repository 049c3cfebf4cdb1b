//! The `appliance` command: one file per command group; each calls the same services as the
//! HTTP API.

mod admin;
mod password;
mod turn;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "appliance",
    version,
    about = "A Matrix homeserver appliance: one process, one package, one web page"
)]
pub struct Cli {
    /// The config file (YAML).
    #[arg(long, global = true, env = "APPLIANCE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// The data directory (database, keys, media); overrides `data_dir` from the config.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (what a bare `appliance` does).
    Serve {
        /// Serve everything (client and federation APIs, plain HTTP) on this one address instead
        /// of the config's listeners: for development and tests.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage accounts and registration tokens (works while the server runs).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The built-in TURN relay.
    #[command(subcommand)]
    Turn(turn::TurnCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the config, then print the effective config with secrets redacted.
    Check,
}

/// Where the config came from.
pub enum ConfigOrigin {
    File(PathBuf),
    /// No config file: the development server on localhost.
    Development,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let (mut config, origin) = load_config(cli.config.as_deref(), cli.data_dir)?;
    match cli.command.unwrap_or(Command::Serve { listen: None }) {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listeners = vec![crate::config::Listener {
                    port: listen.port(),
                    bind_addresses: vec![listen.ip().to_string()],
                    ..crate::config::Listener::default()
                }];
            }
            crate::logging::init(&config.log_level);
            match &origin {
                ConfigOrigin::Development => tracing::warn!(
                    data_dir = %config.data_dir.display(),
                    "no config file ({DEFAULT_CONFIG_PATH}): running a development homeserver for `{}`",
                    config.server_name
                ),
                ConfigOrigin::File(path) => {
                    tracing::info!(config = %path.display(), "starting matrix-appliance {}", env!("CARGO_PKG_VERSION"))
                }
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::app::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check) => {
            if let ConfigOrigin::File(path) = &origin {
                eprintln!("{}: valid", path.display());
            } else {
                eprintln!(
                    "no config file at {DEFAULT_CONFIG_PATH}: these are the development defaults"
                );
            }
            print!("{}", config.to_redacted_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Turn(command) => turn::run(&config, command),
        Command::Admin(command) => {
            crate::logging::init("warn");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(admin::run(config, command))
        }
    }
}

/// `--config` (or `APPLIANCE_CONFIG`) must exist when given; without it, the installed path is
/// used when present, and the development config otherwise.
fn load_config(
    explicit: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(Config, ConfigOrigin)> {
    let (mut config, origin) = match explicit {
        Some(path) if !path.exists() => bail!("config file {} does not exist", path.display()),
        Some(path) => (Config::load(path)?, ConfigOrigin::File(path.to_owned())),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
            Config::load(Path::new(DEFAULT_CONFIG_PATH))?,
            ConfigOrigin::File(DEFAULT_CONFIG_PATH.into()),
        ),
        None => (Config::development(), ConfigOrigin::Development),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok((config, origin))
}
