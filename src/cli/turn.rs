//! `appliance turn status`: what the running relay wrote to its status file (addresses,
//! allocations, bytes relayed, the last public-IP check and change).

use std::{process::ExitCode, time::Duration};

use clap::Subcommand;

use crate::{config::Config, turn::status};

/// A status older than this means the server is not running (it rewrites the file every 2 s).
const STALE_AFTER: Duration = Duration::from_secs(15);

#[derive(Subcommand)]
pub enum TurnCommand {
    /// Show the relay's addresses, allocations, traffic and public-IP checks.
    Status {
        /// Print the status file as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, command: TurnCommand) -> anyhow::Result<ExitCode> {
    let TurnCommand::Status { json } = command;
    if !config.turn_relay_enabled {
        println!("the built-in TURN relay is off (`turn_relay_enabled: false`)");
        if !config.turn_uris.is_empty() {
            println!(
                "TURN URIs handed to clients: {}",
                config.turn_uris.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = match status::read(&config.data_dir) {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "the TURN relay has not run yet (no {})",
                status::path(&config.data_dir).display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => anyhow::bail!(
            "cannot read {}: {e}",
            status::path(&config.data_dir).display()
        ),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = status::now();
    let running = status.running && now.saturating_sub(status.updated_at) < STALE_AFTER.as_secs();
    println!(
        "relay: {}",
        if running {
            format!("running (pid {})", status.pid)
        } else {
            format!("not running (last status {})", ago(now, status.updated_at))
        }
    );
    println!("listeners: {}", status.listeners.join(", "));
    println!("relay ports: {}", status.relay_ports);
    let source = status
        .source
        .map(|s| {
            format!(
                " (from {})",
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    println!(
        "public IPv4: {}{source}",
        status.public_ipv4.as_deref().unwrap_or("unknown")
    );
    println!(
        "public IPv6: {}",
        status.public_ipv6.as_deref().unwrap_or("none")
    );
    match &status.last_check {
        Some(check) => println!(
            "last check: {} {}: {}",
            ago(now, check.at),
            if check.ok { "ok" } else { "failed" },
            check.result
        ),
        None => println!("last check: none (the address is fixed by `turn_external_ip`)"),
    }
    if let Some(change) = &status.last_change {
        println!(
            "last change: {}: public IP changed from {} to {} ({} allocations ended)",
            ago(now, change.at),
            change.from,
            change.to,
            change.ended_allocations
        );
    }
    println!("allocations: {}", status.allocations.len());
    for a in &status.allocations {
        println!(
            "  {} from {} relayed at {} for {}s",
            a.user, a.client, a.relay, a.age_secs
        );
    }
    println!(
        "relayed: {} bytes in {} packets ({} dropped by caps or the peer filter)",
        status.bytes_relayed, status.packets_relayed, status.packets_dropped
    );
    Ok(ExitCode::SUCCESS)
}

fn ago(now: u64, at: u64) -> String {
    format!("{}s ago", now.saturating_sub(at))
}
