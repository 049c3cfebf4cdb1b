//! The `appliance` command: one file per command group; each calls the same services as the
//! HTTP API.

mod admin;
mod appservice;
mod backup;
mod cert;
mod element;
mod federation;
mod media;
mod password;
mod reports;
mod setup;
mod turn;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
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
    /// Manage accounts, registration tokens and media, make backups (works while the server
    /// runs), restore one.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// First-run setup without a browser, the setup token, the reachability checklist, and
    /// reopening the wizard (`--reconfigure`).
    Setup(Box<setup::SetupArgs>),
    /// The TLS certificate: status, and renewal (ACME) through the running server.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Element Web hosting: install or upgrade a release, show the installed version.
    #[command(subcommand)]
    Element(element::ElementCommand),
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
    /// No config file yet: setup mode, which writes one at `config_path`.
    Setup {
        config_path: PathBuf,
        /// No installed config directory: the development server on 127.0.0.1:8080.
        development: bool,
    },
}

/// Where the wizard writes the development server's config when nothing is installed.
const DEVELOPMENT_CONFIG: &str = "./appliance-data/config.yaml";

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
    let explicit_data_dir = cli.data_dir.clone();
    let (mut config, origin) = load_config(cli.config.as_deref(), cli.data_dir)?;
    let command = cli.command.unwrap_or(Command::Serve { listen: None });
    // A restore also works on a new box, before any config exists: it brings the config.
    if let Command::Admin(admin::AdminCommand::Restore(args)) = command {
        let (config_path, existing) = match origin {
            ConfigOrigin::File(path) => (path, Some(config)),
            ConfigOrigin::Setup { config_path, .. } => (config_path, None),
        };
        return backup::restore(args, config_path, explicit_data_dir, existing.as_ref());
    }
    if let ConfigOrigin::Setup {
        config_path,
        development,
    } = &origin
    {
        match command {
            // Only the packaged default path (or no `--config` at all) turns a missing file into
            // the wizard: a mistyped `--config` must not start the installed box's wizard on port
            // 80 as root.
            Command::Serve { .. }
                if cli.config.is_some() && config_path != Path::new(DEFAULT_CONFIG_PATH) =>
            {
                bail!(
                    "config file {path} does not exist (check the --config path or \
                     APPLIANCE_CONFIG); to create it with the setup wizard, run \
                     `appliance --config {path} setup wizard`",
                    path = config_path.display()
                )
            }
            Command::Serve { listen } => {
                serve_wizard(config, config_path.clone(), *development, listen)?;
                return Ok(ExitCode::SUCCESS);
            }
            Command::Setup(args) if args.is_wizard() => {
                serve_wizard(
                    config,
                    config_path.clone(),
                    *development,
                    args.wizard_listen(),
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            Command::Setup(args) => {
                return setup::run(
                    setup::SetupContext {
                        config_path: config_path.clone(),
                        data_dir: config.data_dir,
                        existing: None,
                        development: *development,
                    },
                    *args,
                );
            }
            _ if cli.config.is_some() => {
                bail!("config file {} does not exist", config_path.display())
            }
            _ => bail!(
                "no config file at {}: run `appliance serve` to set the server up",
                config_path.display()
            ),
        }
    }
    match command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                // Whether a reverse proxy sits in front carries over from the client listener.
                let client = config.listeners.iter().find(|l| l.serves("client"));
                let x_forwarded = client.is_some_and(|l| l.x_forwarded);
                let trusted_proxies = client
                    .map_or_else(crate::config::default_trusted_proxies, |l| {
                        l.trusted_proxies.clone()
                    });
                config.listeners = vec![crate::config::Listener {
                    port: listen.port(),
                    bind_addresses: vec![listen.ip().to_string()],
                    x_forwarded,
                    trusted_proxies,
                    ..crate::config::Listener::default()
                }];
            }
            crate::logging::init(&config.log_level);
            if let ConfigOrigin::File(path) = &origin {
                tracing::info!(config = %path.display(), "starting matrix-appliance {}", env!("CARGO_PKG_VERSION"));
            }
            server_runtime()?.block_on(crate::app::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check) => {
            let shown = match &origin {
                ConfigOrigin::File(path) => path.display().to_string(),
                ConfigOrigin::Setup { .. } => "the config".to_owned(),
            };
            let files = config.check_files();
            for (key, warning) in &files.warnings {
                eprintln!("{shown}: warning: `{key}`: {warning}");
            }
            for (key, error) in &files.errors {
                eprintln!("{shown}: `{key}`: {error}");
            }
            if !files.errors.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("{shown}: valid");
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
        Command::Setup(args) => {
            let ConfigOrigin::File(path) = origin else {
                unreachable!("setup mode was handled above")
            };
            setup::run(
                setup::SetupContext {
                    config_path: path,
                    data_dir: config.data_dir.clone(),
                    existing: Some(config),
                    development: false,
                },
                *args,
            )
        }
        Command::Cert(command) => {
            crate::logging::init("warn");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(cert::run(config, command))
        }
        Command::Element(command) => element::run(&config, command),
    }
}

/// Setup mode: the wizard writes `config_path`, then the same process serves the homeserver.
fn serve_wizard(
    config: Config,
    config_path: PathBuf,
    development: bool,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    crate::logging::init(&config.log_level);
    let target = crate::setup::Target {
        config_path,
        data_dir: config.data_dir.clone(),
        base: crate::config::Config::default(),
        reconfigure: false,
        plain_listener: development.then(|| match listen {
            Some(address) => crate::config::Listener {
                port: address.port(),
                bind_addresses: vec![address.ip().to_string()],
                ..crate::config::Listener::default()
            },
            None => crate::setup::SetupAddresses::development_listener(),
        }),
        in_place: false,
    };
    let addresses = match (listen, development) {
        (Some(address), _) => crate::setup::SetupAddresses::Listen(address),
        (None, true) => crate::setup::SetupAddresses::Development,
        (None, false) => crate::setup::SetupAddresses::Installed,
    };
    server_runtime()?.block_on(crate::setup::run(target, addresses))
}

/// How long an idle thread of tokio's blocking pool (SQLite reads, password hashes) waits for
/// more work before it exits, taking its stack and its allocator cache with it: a burst of
/// requests leaves a dozen threads behind, for 10 s with tokio's default.
const BLOCKING_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// The multi-threaded runtime that the server and the setup wizard run on.
fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
}

/// `--config` (or `APPLIANCE_CONFIG`) names the config file; a file that does not exist yet means
/// setup mode, which writes it. Without it, the installed path is used when present, then the
/// development server's; with neither, setup mode writes the installed path when the installed
/// config directory exists (the package makes it), the development path otherwise.
fn load_config(
    explicit: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(Config, ConfigOrigin)> {
    let installed = Path::new(DEFAULT_CONFIG_PATH);
    let (mut config, origin) = match explicit {
        Some(path) if !path.exists() => (
            Config::default(),
            ConfigOrigin::Setup {
                config_path: path.to_owned(),
                development: false,
            },
        ),
        Some(path) => (Config::load(path)?, ConfigOrigin::File(path.to_owned())),
        None if installed.exists() => (
            Config::load(installed)?,
            ConfigOrigin::File(installed.into()),
        ),
        None if Path::new(DEVELOPMENT_CONFIG).exists() => (
            Config::load(Path::new(DEVELOPMENT_CONFIG))?,
            ConfigOrigin::File(DEVELOPMENT_CONFIG.into()),
        ),
        None if installed.parent().is_some_and(Path::is_dir) => (
            Config::default(),
            ConfigOrigin::Setup {
                config_path: installed.into(),
                development: false,
            },
        ),
        None => (
            Config::development(),
            ConfigOrigin::Setup {
                config_path: DEVELOPMENT_CONFIG.into(),
                development: true,
            },
        ),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok((config, origin))
}
