//! `appliance admin media …`: list a user's uploads, delete one, purge old local media or
//! cached remote media.

use clap::Subcommand;
use ruma::MxcUri;

use super::admin::{AdminError, format_time};
use crate::{config::Duration, error::Error, services::Services};

#[derive(Subcommand)]
pub enum MediaCommand {
    /// List the media a user uploaded (or reserved with /create), oldest first.
    List {
        /// Localpart or full user ID.
        user: String,
    },
    /// Delete a media ID (`mxc://server/id`); its file goes once no other ID shares the content.
    Delete { mxc: String },
    /// Delete cached copies of other servers' media not used for a while (they are fetched
    /// again when needed). Defaults to `media_retention.remote_media_lifetime`.
    PurgeRemote {
        /// e.g. `30d`.
        #[arg(long, value_parser = Duration::parse)]
        older_than: Option<Duration>,
    },
    /// Delete this server's media not served (or, never served, not uploaded) for a while,
    /// except users' and rooms' avatars. Defaults to `media_retention.local_media_lifetime`.
    PurgeLocal {
        /// e.g. `90d`.
        #[arg(long, value_parser = Duration::parse)]
        older_than: Option<Duration>,
    },
}

pub async fn run(services: &Services, command: MediaCommand) -> Result<(), AdminError> {
    match command {
        MediaCommand::List { user } => {
            let user_id = services.users.parse_local_user(&user)?;
            println!(
                "{:<60} {:>12} {:<24} {:<20} NAME",
                "MXC", "SIZE", "TYPE", "UPLOADED"
            );
            for row in services.media.list(&user_id).await? {
                let size = row.size.map_or("pending".to_owned(), |s| s.to_string());
                println!(
                    "{:<60} {:>12} {:<24} {:<20} {}",
                    format!("mxc://{}/{}", row.origin, row.media_id),
                    size,
                    row.content_type.as_deref().unwrap_or("-"),
                    format_time(row.uploaded_ts.or(Some(row.created_ts))),
                    row.filename.as_deref().unwrap_or("-"),
                );
            }
        }
        MediaCommand::Delete { mxc } => {
            let uri = <&MxcUri>::from(mxc.as_str());
            let (server_name, media_id) = uri
                .parts()
                .map_err(|_| Error::invalid_param(format!("`{mxc}` is not an mxc:// URI")))?;
            services.media.delete(server_name, media_id).await?;
            println!("deleted {mxc}");
        }
        MediaCommand::PurgeRemote { older_than } => {
            let age = age_or_config(
                older_than,
                services.config.media_retention.remote_media_lifetime,
                "remote_media_lifetime",
            )?;
            let purged = services.media.purge_remote(age.0).await?;
            println!("deleted {purged} cached remote media not used for {age}");
        }
        MediaCommand::PurgeLocal { older_than } => {
            let age = age_or_config(
                older_than,
                services.config.media_retention.local_media_lifetime,
                "local_media_lifetime",
            )?;
            let purged = services.media.purge_local(age.0).await?;
            println!("deleted {purged} local media not used for {age}");
        }
    }
    Ok(())
}

/// `--older-than`, else the configured `media_retention.<key>`.
fn age_or_config(
    given: Option<Duration>,
    configured: Option<Duration>,
    key: &str,
) -> Result<Duration, AdminError> {
    given.or(configured).ok_or_else(|| {
        Error::invalid_param(format!("give --older-than (or set media_retention.{key})")).into()
    })
}
