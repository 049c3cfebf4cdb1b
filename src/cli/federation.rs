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
    /// The outbound queues, per other server: last success, failures and backoff, PDUs and
    /// EDUs waiting, whether it is catching up (read from the database the server uses).
    Status,
}

pub async fn run(config: &Config, command: FederationCommand) -> anyhow::Result<ExitCode> {
    let server_name = match command {
        FederationCommand::Check { server_name } => server_name,
        FederationCommand::Status => return status(config),
    };
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

/// `admin federation status`.
fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let path = config.data_dir.join(crate::services::DATABASE_FILE);
    if !path.exists() {
        println!("no database yet: nothing was sent to other servers");
        return Ok(ExitCode::SUCCESS);
    }
    let db = crate::storage::Database::open(&path)?;
    let destinations = db.read_now(crate::storage::federation_queue::all_status)?;
    if destinations.is_empty() {
        println!("nothing was sent to other servers yet");
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_ms();
    let time = |ms: Option<i64>| super::admin::format_time(ms);
    for destination in destinations {
        let state = &destination.state;
        println!("{}", state.destination);
        if state.retry_interval > 0 {
            let until = state.retry_last_ts + state.retry_interval;
            println!(
                "  backing off until {} (failing since {}, retry interval {}s{})",
                time(Some(until)),
                time(state.failure_ts),
                state.retry_interval / 1000,
                if until <= now { ", retry due" } else { "" }
            );
        } else {
            println!("  up");
        }
        println!("  last success: {}", time(state.last_success_ts));
        println!(
            "  queued: {} PDUs, {} EDUs",
            destination.queued_pdus, destination.queued_edus
        );
        if state.catching_up {
            println!(
                "  catching up: the newest event of {} rooms to send",
                destination.catch_up_rooms
            );
        }
        if let Some(txn) = &state.txn {
            println!("  transaction in flight: {}", txn.txn_id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
