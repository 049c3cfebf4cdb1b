//! `appliance admin …`: accounts, registration tokens, media and abuse reports, through the
//! same services as the API, on the same database, so a running server sees each change at
//! once; and backups (`cli/backup.rs`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::password::read_new_password;
use crate::{
    config::{Config, Duration},
    error::Error,
    services::Services,
    storage::now_ms,
};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an account.
    AddUser {
        /// The user name (localpart), e.g. `alice` for @alice:your.server, or the full user ID.
        localpart: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password and sign out every device of the user.
    ResetPassword {
        /// Localpart or full user ID.
        user: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every account.
    ListUsers,
    /// Deactivate an account: signs it out and frees nothing (the ID stays reserved).
    Deactivate { user: String },
    /// Grant or revoke server admin.
    SetAdmin {
        user: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
    /// Registration tokens (for `registration_requires_token`).
    #[command(subcommand)]
    RegistrationToken(TokenCommand),
    /// The media repository: list, delete, purge cached remote media.
    #[command(subcommand)]
    Media(super::media::MediaCommand),
    /// Abuse reports users sent about events, rooms and users: list, show, resolve.
    #[command(subcommand)]
    Reports(super::reports::ReportsCommand),
    /// Federation with other servers: `check` finds a server and verifies its keys.
    #[command(subcommand)]
    Federation(super::federation::FederationCommand),
    /// Application services (bridges): `list` shows them with their state.
    #[command(subcommand)]
    Appservice(super::appservice::AppserviceCommand),
    /// Back up the database, media, keys and config into a new folder, while the server runs.
    Backup(super::backup::BackupArgs),
    /// Check a backup's files against its manifest.
    VerifyBackup(super::backup::VerifyArgs),
    /// Restore a backup onto a stopped or new box (refuses while the server runs).
    Restore(super::backup::RestoreArgs),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it.
    Create {
        /// The token text; random when omitted.
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows; unlimited when omitted.
        #[arg(long)]
        uses_allowed: Option<i64>,
        /// How long it stays valid, e.g. `7d`; forever when omitted.
        #[arg(long, value_parser = Duration::parse)]
        expires_in: Option<Duration>,
    },
    /// List tokens with their use counts.
    List,
    /// Delete a token.
    Delete { token: String },
}

pub async fn run(config: Config, command: AdminCommand) -> anyhow::Result<ExitCode> {
    // These read the data directory as files: opening the services would run migrations on
    // the live database and clear the media store's unfinished uploads.
    let command = match command {
        AdminCommand::Backup(args) => return super::backup::backup(&config, args),
        AdminCommand::VerifyBackup(args) => return super::backup::verify(args),
        // Only the network: no database needed.
        AdminCommand::Federation(command) => return super::federation::run(&config, command).await,
        AdminCommand::Appservice(command) => return super::appservice::run(&config, command),
        AdminCommand::Restore(_) => {
            unreachable!("restore is dispatched before a config is required")
        }
        command => command,
    };
    let services = Services::open(config)?;
    let result = execute(&services, command).await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(AdminError::Matrix(Error::Matrix { message, .. })) => {
            eprintln!("error: {message}");
            Ok(ExitCode::FAILURE)
        }
        Err(AdminError::Matrix(other)) => Err(anyhow::anyhow!("{other}")),
        Err(AdminError::Other(e)) => Err(e),
    }
}

pub(super) enum AdminError {
    Matrix(Error),
    Other(anyhow::Error),
}

impl From<Error> for AdminError {
    fn from(e: Error) -> Self {
        Self::Matrix(e)
    }
}

impl From<anyhow::Error> for AdminError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

async fn execute(services: &Services, command: AdminCommand) -> Result<(), AdminError> {
    let users = &services.users;
    match command {
        AdminCommand::AddUser {
            localpart,
            admin,
            password_stdin,
        } => {
            // A full user ID of this server is accepted too; names are lowercased as at
            // registration.
            let user_id = users.new_user_id(&crate::services::users::typed_user_name(
                &localpart,
                &services.server_name,
            ))?;
            if users.exists(&user_id).await? {
                return Err(Error::invalid_param(format!("{user_id} already exists")).into());
            }
            let password = read_new_password(password_stdin)?;
            users
                .create(&user_id, Some(password), admin, |_| Ok(()))
                .await?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
        }
        AdminCommand::ResetPassword {
            user,
            password_stdin,
        } => {
            let user_id = users.parse_local_user(&user)?;
            users.get_existing(&user_id).await?;
            let password = read_new_password(password_stdin)?;
            users.set_password(&user_id, password, true, None).await?;
            println!("password of {user_id} reset; every device signed out");
        }
        AdminCommand::ListUsers => {
            let rows = users.list().await?;
            println!(
                "{:<40} {:<6} {:<12} {:<20} {:<20}",
                "USER", "ADMIN", "DEACTIVATED", "CREATED", "LAST SEEN"
            );
            for row in rows {
                println!(
                    "{:<40} {:<6} {:<12} {:<20} {:<20}",
                    row.user_id,
                    yes_no(row.is_admin),
                    yes_no(row.deactivated),
                    format_time(Some(row.created_ts)),
                    format_time(row.last_seen_ts),
                );
            }
        }
        AdminCommand::Deactivate { user } => {
            let user_id = users.parse_local_user(&user)?;
            users.deactivate(&user_id).await?;
            println!("deactivated {user_id}");
        }
        AdminCommand::SetAdmin { user, admin } => {
            let user_id = users.parse_local_user(&user)?;
            users.set_admin(&user_id, admin).await?;
            println!(
                "{user_id} is {}an admin",
                if admin { "now " } else { "no longer " }
            );
        }
        AdminCommand::RegistrationToken(command) => registration_token(services, command).await?,
        AdminCommand::Media(command) => super::media::run(services, command).await?,
        AdminCommand::Reports(command) => super::reports::run(services, command).await?,
        AdminCommand::Backup(_)
        | AdminCommand::VerifyBackup(_)
        | AdminCommand::Restore(_)
        | AdminCommand::Federation(_)
        | AdminCommand::Appservice(_) => {
            unreachable!("handled in `run`")
        }
    }
    Ok(())
}

async fn registration_token(services: &Services, command: TokenCommand) -> Result<(), AdminError> {
    let registration = &services.registration;
    match command {
        TokenCommand::Create {
            token,
            uses_allowed,
            expires_in,
        } => {
            let expiry = expires_in
                .map(|d| i64::try_from(d.0.as_millis()).map(|ms| now_ms() + ms))
                .transpose()
                .context("expiry too far away")?;
            let row = registration
                .create_token(token, uses_allowed, expiry)
                .await?;
            println!("{}", row.token);
        }
        TokenCommand::List => {
            println!(
                "{:<24} {:<8} {:<10} {:<20} {:<20}",
                "TOKEN", "USES", "COMPLETED", "CREATED", "EXPIRES"
            );
            for row in registration.list_tokens().await? {
                let uses = row.uses_allowed.map_or("-".to_owned(), |n| n.to_string());
                println!(
                    "{:<24} {:<8} {:<10} {:<20} {:<20}",
                    row.token,
                    uses,
                    row.completed,
                    format_time(Some(row.created_ts)),
                    format_time(row.expiry_time)
                );
            }
        }
        TokenCommand::Delete { token } => {
            registration.delete_token(&token).await?;
            println!("deleted {token}");
        }
    }
    Ok(())
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

pub(super) fn format_time(ms: Option<i64>) -> String {
    let Some(ms) = ms.and_then(|ms| u64::try_from(ms).ok()) else {
        return "-".to_owned();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}
