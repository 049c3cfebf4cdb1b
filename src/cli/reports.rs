//! `appliance admin reports …`: the abuse reports users sent (`POST /rooms/{id}/report…`,
//! `POST /users/{id}/report`).

use clap::Subcommand;

use super::admin::{AdminError, format_time};
use crate::services::Services;

#[derive(Subcommand)]
pub enum ReportsCommand {
    /// List the reports not yet resolved, oldest first.
    List {
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
    },
    /// Show one report in full.
    Show { id: i64 },
    /// Mark a report handled.
    Resolve {
        id: i64,
        /// Who handled it (shown by `show`).
        #[arg(long, default_value = "admin")]
        by: String,
    },
}

pub async fn run(services: &Services, command: ReportsCommand) -> Result<(), AdminError> {
    let reports = &services.reports;
    match command {
        ReportsCommand::List { all } => {
            println!(
                "{:<6} {:<20} {:<32} {:<44} {:<10} REASON",
                "ID", "RECEIVED", "REPORTER", "ROOM / EVENT / USER", "RESOLVED"
            );
            for row in reports.list(all).await? {
                println!(
                    "{:<6} {:<20} {:<32} {:<44} {:<10} {}",
                    row.id,
                    format_time(Some(row.received_ts)),
                    row.reporter,
                    row.event_id
                        .as_deref()
                        .or(row.room_id.as_deref())
                        .or(row.reported_user.as_deref())
                        .unwrap_or("-"),
                    if row.resolved_ts.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    one_line(row.reason.as_deref().unwrap_or("-")),
                );
            }
        }
        ReportsCommand::Show { id } => {
            let row = reports.get(id).await?;
            println!("report:    {}", row.id);
            println!("received:  {}", format_time(Some(row.received_ts)));
            println!("reporter:  {}", row.reporter);
            if let Some(room_id) = &row.room_id {
                println!("room:      {room_id}");
            }
            if let Some(user) = &row.reported_user {
                println!("user:      {user}");
            }
            if let Some(event_id) = &row.event_id {
                println!("event:     {event_id}");
                println!("sender:    {}", row.event_sender.as_deref().unwrap_or("-"));
            }
            println!(
                "reason:    {}",
                printable(row.reason.as_deref().unwrap_or("-"))
            );
            match row.resolved_ts {
                Some(ts) => println!(
                    "resolved:  {} by {}",
                    format_time(Some(ts)),
                    row.resolved_by.as_deref().unwrap_or("-")
                ),
                None => println!("resolved:  no"),
            }
        }
        ReportsCommand::Resolve { id, by } => {
            reports.resolve(id, by).await?;
            println!("report {id} resolved");
        }
    }
    Ok(())
}

/// A reason with its line breaks but without the other control characters: it is a
/// stranger's text, printed on an admin's terminal (no escape sequences).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// A reason as one line of at most 60 characters: it is the reporter's free text, and a list
/// is easier to read when every report stays on its line.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > 60 {
        format!("{}…", flat.chars().take(59).collect::<String>())
    } else {
        flat
    }
}
