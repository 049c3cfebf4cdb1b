//! `appliance admin federation …`: checks of federation from this box.

use std::process::ExitCode;

use clap::Subcommand;
use ruma::OwnedServerName;

use crate::{
    config::Config,
    services::federation::{check_server_keys, client::FederationClient},
    storage::now_ms,
};

#[derive(Subcommand)]
pub enum FederationCommand {
    /// Find a server as another server would (well-known, SRV, port 8448), fetch its signing
    /// keys and check their self-signature and validity. Without a name: this server, through
    /// its public name (a self-test of what other servers see).
    Check {
        /// The server name, e.g. `matrix.org` or `example.com:8448`.
        server_name: Option<String>,
    },
}

pub async fn run(config: &Config, command: FederationCommand) -> anyhow::Result<ExitCode> {
    let FederationCommand::Check { server_name } = command;
    let name = server_name.unwrap_or_else(|| config.server_name.clone());
    let Ok(server_name) = OwnedServerName::try_from(name.as_str()) else {
        eprintln!("error: `{name}` is not a server name");
        return Ok(ExitCode::FAILURE);
    };
    let client = FederationClient::new(config, None)?;
    let now = u64::try_from(now_ms()).unwrap_or(0);
    match check_server_keys(&client, &server_name, now).await {
        Ok(check) => {
            let destination = &check.response.destination;
            println!("{server_name}:");
            for step in &destination.steps {
                println!("  {step}");
            }
            println!(
                "  connected to {} (Host: {}, TLS name: {})",
                check.response.address, destination.host_header, destination.tls_name
            );
            println!(
                "  keys valid until {}, self-signature verified:",
                super::admin::format_time(i64::try_from(check.valid_until_ts).ok())
            );
            for (key_id, key) in &check.keys {
                println!("    {key_id} {key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: federation check of {server_name} failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
