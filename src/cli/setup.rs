//! `appliance setup …`: the wizard's steps from the command line (for Ansible and tests), the
//! setup token, the reachability checklist, and reopening the wizard on an installed box.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::setup::{
    answers::{Answers, ElementChoice, RegistrationChoice, TlsChoice},
    apply::{Target, apply},
    checklist::Checklist,
    i18n::Catalogue,
};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SetupArgs {
    #[command(subcommand)]
    action: Option<SetupAction>,

    /// Reopen the wizard on an installed box (with a new setup token), pre-filled with the
    /// current config; the server name cannot change.
    #[arg(long)]
    reconfigure: bool,
    /// With --reconfigure: serve the wizard on this address (default: port 8080, every
    /// interface).
    #[arg(long, value_name = "ADDR:PORT", requires = "reconfigure")]
    listen: Option<SocketAddr>,

    /// The server name, the part after the colon in @alice:example.org. It cannot change later.
    #[arg(long, conflicts_with = "reconfigure")]
    server_name: Option<String>,
    /// The public host name of this box (default: the server name).
    #[arg(long)]
    host: Option<String>,
    /// The server name's web traffic reaches this box: serve /.well-known/matrix/server here.
    #[arg(long)]
    wellknown_here: bool,
    /// The first admin's user name.
    #[arg(long, value_name = "USER")]
    admin: Option<String>,
    /// A file whose first line is the first admin's password.
    #[arg(long, value_name = "FILE")]
    admin_password_file: Option<PathBuf>,
    /// Where the TLS certificate comes from: acme (Let's Encrypt), files, or self-signed.
    #[arg(long, value_name = "acme|files|self-signed", value_parser = ["acme", "files", "self-signed"])]
    tls: Option<String>,
    /// With --tls acme: the contact e-mail address given to the CA.
    #[arg(long)]
    acme_email: Option<String>,
    /// With --tls acme: accept the CA's terms of service (required).
    #[arg(long)]
    accept_terms_of_service: bool,
    /// With --tls acme: use Let's Encrypt's staging directory (a dry run).
    #[arg(long)]
    acme_staging: bool,
    /// With --tls files: the PEM certificate chain.
    #[arg(long, value_name = "PATH")]
    tls_certificate_path: Option<String>,
    /// With --tls files: the PEM private key.
    #[arg(long, value_name = "PATH")]
    tls_private_key_path: Option<String>,
    /// Who may register: closed (admins add people), token (invite tokens; the first is made
    /// now), or open.
    #[arg(long, default_value = "closed", value_parser = ["closed", "token", "open"])]
    registration: String,
    /// The built-in TURN relay for calls.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    turn: String,
    #[arg(long)]
    turn_listen_port: Option<u16>,
    #[arg(long)]
    turn_min_port: Option<u16>,
    #[arg(long)]
    turn_max_port: Option<u16>,
    /// The relay's public address, when it should not be detected.
    #[arg(long)]
    turn_external_ip: Option<String>,
    /// Element Web on its own host name, under the main host (/element), or off.
    /// (default: host when an Element release is installed, off otherwise).
    #[arg(long, value_parser = ["host", "path", "off"])]
    element: Option<String>,
    /// With --element host: its host name (default: element.<server name>).
    #[arg(long)]
    element_host: Option<String>,
    /// Federation with other Matrix servers.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    federation: String,
    /// Apply without asking; without it the summary is printed and nothing is changed.
    #[arg(long)]
    yes: bool,
}

#[derive(Subcommand)]
enum SetupAction {
    /// Print the setup token of a server waiting in setup mode.
    Token,
    /// Print what to do outside the box so that it is reachable: DNS records, router ports, the
    /// well-known files of a delegated server name, and where Element is.
    Checklist,
    /// Open the first-run wizard to write a config file that does not exist yet: what a bare
    /// `appliance serve` does with the packaged config path or with no `--config` at all, for
    /// any other `--config` path. After apply the same process serves the homeserver.
    Wizard {
        /// Serve the wizard, then the homeserver, on this one plain-HTTP address (default: the
        /// installed box's ports 80 and 8080 on every interface).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
}

impl SetupArgs {
    /// `appliance setup wizard`.
    pub fn is_wizard(&self) -> bool {
        matches!(self.action, Some(SetupAction::Wizard { .. }))
    }

    pub fn wizard_listen(&self) -> Option<SocketAddr> {
        match self.action {
            Some(SetupAction::Wizard { listen }) => listen,
            _ => None,
        }
    }
}

/// Where the config is (or is to be) and what is in it.
pub struct SetupContext {
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// The current config, when the file exists.
    pub existing: Option<crate::config::Config>,
    /// The development server (no installed config directory): one plain listener.
    pub development: bool,
}

pub fn run(context: SetupContext, args: SetupArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(SetupAction::Token) => {
            let token = crate::setup::token::read(&context.data_dir).with_context(|| {
                format!(
                    "no setup token in {}: the server is not waiting in setup mode",
                    context.data_dir.display()
                )
            })?;
            println!("{token}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(SetupAction::Checklist) => {
            let Some(config) = &context.existing else {
                bail!(
                    "no config at {}: run the setup first",
                    context.config_path.display()
                );
            };
            let public_ip = match config.turn_external_ip {
                Some(ip) => Some(ip),
                None => super::server_runtime()?
                    .block_on(crate::turn::public_ip::detect(&config.turn_stun_servers))
                    .ok()
                    .map(|(ip, _)| ip),
            };
            let mut checklist = Checklist::new(config, public_ip);
            checklist.read_turn_status(config);
            print!("{}", checklist.to_text(Catalogue::english()));
            return Ok(ExitCode::SUCCESS);
        }
        Some(SetupAction::Wizard { .. }) => bail!(
            "{} exists already: `appliance setup --reconfigure` changes it",
            context.config_path.display()
        ),
        None => {}
    }
    if args.reconfigure {
        let Some(config) = context.existing.clone() else {
            bail!(
                "no config at {}: `appliance serve` starts the first setup",
                context.config_path.display()
            );
        };
        crate::logging::init(&config.log_level);
        let plain_listener = (!config.listeners.iter().any(|l| l.tls))
            .then(|| config.listeners.first().cloned())
            .flatten();
        let target = Target {
            config_path: context.config_path,
            data_dir: config.data_dir.clone(),
            base: config,
            reconfigure: true,
            plain_listener,
            in_place: false,
        };
        let addresses = match args.listen {
            Some(address) => crate::setup::SetupAddresses::Listen(address),
            None => crate::setup::SetupAddresses::Reconfigure,
        };
        super::server_runtime()?.block_on(crate::setup::run(target, addresses))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(server_name) = args.server_name.clone() else {
        bail!(
            "give --server-name and the other choices (see `appliance setup --help`), or open the \
             wizard: `appliance serve`"
        );
    };
    if context.existing.is_some() {
        bail!(
            "{} exists already: `appliance setup --reconfigure` changes it",
            context.config_path.display()
        );
    }
    let element_installed = crate::config::Config {
        data_dir: context.data_dir.clone(),
        ..crate::config::Config::default()
    }
    .element_installed();
    let answers = answers_from_args(server_name, &args, element_installed)?;
    let tr = Catalogue::english();
    let errors = answers.check_all(false);
    if !errors.is_empty() {
        for (field, key) in &errors {
            eprintln!(
                "--{}: {}",
                field.replace('_', "-"),
                answers.error_text(tr, key)
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    let target = Target {
        config_path: context.config_path.clone(),
        data_dir: context.data_dir.clone(),
        base: crate::config::Config::default(),
        reconfigure: false,
        plain_listener: context
            .development
            .then(crate::setup::SetupAddresses::development_listener),
        in_place: false,
    };
    if !args.yes {
        let (_, yaml) = crate::setup::apply::build_config(&answers, &target)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "This config would be written to {} (secrets are generated anew on apply):\n",
            target.config_path.display()
        );
        print!("{}", redact_secrets(&yaml));
        println!("\nNothing was changed; add --yes to apply.");
        return Ok(ExitCode::SUCCESS);
    }
    crate::logging::init("warn");
    let applied = super::server_runtime()?
        .block_on(apply(&answers, &target, |_| {}))
        .map_err(|e| anyhow::anyhow!("setup not applied: {e}"))?;
    println!("config written to {}", target.config_path.display());
    println!(
        "admin @{}:{} created",
        answers.admin_user, answers.server_name
    );
    if let Some(token) = &applied.registration_token {
        println!("first registration token: {token}");
        println!(
            "{}",
            crate::setup::apply::first_token_note(tr, applied.registration_token_expiry)
        );
    }
    println!();
    print!(
        "{}",
        Checklist::new(&applied.config, applied.config.turn_external_ip).to_text(tr)
    );
    Ok(ExitCode::SUCCESS)
}

fn answers_from_args(
    server_name: String,
    args: &SetupArgs,
    element_installed: bool,
) -> anyhow::Result<Answers> {
    let defaults = Answers::default();
    let password = match &args.admin_password_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => bail!("give the first admin's password with --admin-password-file"),
    };
    let Some(tls) = args.tls.as_deref() else {
        bail!("choose where the certificate comes from: --tls acme|files|self-signed");
    };
    let admin_user = args
        .admin
        .as_deref()
        .map(|typed| crate::setup::answers::normalize_user_name(typed, &server_name))
        .unwrap_or(defaults.admin_user.clone());
    Ok(Answers {
        host: args.host.clone().unwrap_or_else(|| server_name.clone()),
        server_name,
        wellknown_here: args.wellknown_here,
        tls: TlsChoice::parse(tls).unwrap_or_default(),
        acme_email: args.acme_email.clone().unwrap_or_default(),
        acme_terms: args.accept_terms_of_service,
        acme_staging: args.acme_staging,
        tls_certificate_path: args.tls_certificate_path.clone().unwrap_or_default(),
        tls_private_key_path: args.tls_private_key_path.clone().unwrap_or_default(),
        admin_user,
        admin_password: password,
        registration: RegistrationChoice::parse(&args.registration).unwrap_or_default(),
        turn_enabled: args.turn == "on",
        turn_listen_port: args.turn_listen_port.unwrap_or(defaults.turn_listen_port),
        turn_min_port: args.turn_min_port.unwrap_or(defaults.turn_min_port),
        turn_max_port: args.turn_max_port.unwrap_or(defaults.turn_max_port),
        turn_external_ip: args.turn_external_ip.clone().unwrap_or_default(),
        element: match args.element.as_deref() {
            Some(choice) => ElementChoice::parse(choice).unwrap_or_default(),
            // Not proposed when there is nothing to serve, as in the browser.
            None if element_installed => ElementChoice::Host,
            None => ElementChoice::Off,
        },
        element_host: args.element_host.clone().unwrap_or_default(),
        federation: args.federation == "on",
        password_policy: defaults.password_policy,
    })
}

fn redact_secrets(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            let key = line.split(':').next().unwrap_or_default();
            if key.ends_with("_secret") {
                format!("{key}: <generated>")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
