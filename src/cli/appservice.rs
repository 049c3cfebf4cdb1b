//! `appliance admin appservice …`: the registered application services (bridges).

use std::process::ExitCode;

use clap::Subcommand;
use ruma::OwnedServerName;

use crate::{config::Config, services::appservice::AppServices, storage::appservice as store};

#[derive(Subcommand)]
pub enum AppserviceCommand {
    /// Every registration of `app_service_config_files` with its state: last transaction
    /// delivered, events not yet examined or waiting in a transaction, failing since when
    /// (read from the database the server uses).
    List,
}

pub fn run(config: &Config, command: AppserviceCommand) -> anyhow::Result<ExitCode> {
    let AppserviceCommand::List = command;
    let server_name = OwnedServerName::try_from(config.server_name.as_str())?;
    let services = AppServices::load(&config.app_service_config_files, &server_name)?;
    if services.all().is_empty() {
        println!("no application services (app_service_config_files is empty)");
        return Ok(ExitCode::SUCCESS);
    }
    let path = config.data_dir.join(crate::services::DATABASE_FILE);
    let db = if path.exists() {
        Some(crate::storage::Database::open(&path)?)
    } else {
        None
    };
    let time = |ms: Option<i64>| super::admin::format_time(ms);
    for service in services.all() {
        let registration = &service.registration;
        println!("{} ({})", registration.id, service.file.display());
        println!(
            "  url: {}, sender: {}",
            registration
                .url
                .as_deref()
                .unwrap_or("(none: nothing is pushed)"),
            service.sender
        );
        let id = registration.id.clone();
        let state = match &db {
            Some(db) => db.read_now::<_, rusqlite::Error>(move |c| {
                let Some(row) = store::get(c, &id)? else {
                    return Ok(None);
                };
                let unexamined = store::events_count_after(c, row.position)?;
                Ok(Some((row, unexamined)))
            })?,
            None => None,
        };
        let Some((row, unexamined)) = state else {
            println!("  nothing pushed yet");
            continue;
        };
        println!("  last transaction: {}", time(row.last_txn_ts));
        let waiting = row
            .pending
            .as_ref()
            .map(|(txn, body, _)| {
                let count = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|b| b["events"].as_array().map(Vec::len))
                    .unwrap_or(0);
                format!("transaction {txn} with {count} events, then ")
            })
            .unwrap_or_default();
        println!("  backlog: {waiting}{unexamined} stored events to examine");
        match row.failing_since {
            Some(since) => println!(
                "  failing since {}, next attempt {}",
                time(Some(since)),
                time(row.retry_at)
            ),
            None => println!("  up"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
