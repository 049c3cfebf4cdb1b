//! The Matrix logic of the appliance. Services know nothing of HTTP: handlers and the admin CLI
//! call the same methods, so a change made from the command line behaves exactly like one made
//! through the client API.

pub mod account_data;
pub mod appservice;
pub mod backup;
pub mod data_dir_lock;
pub mod delayed_events;
pub mod directory;
pub mod e2ee;
pub mod federation;
pub mod filter;
pub mod guests;
pub mod ignored;
pub mod json_depth;
pub mod legacy;
pub mod media;
pub mod passwords;
pub mod presence;
pub mod push;
pub mod pushers;
pub mod rate_limit;
pub mod registration;
pub mod reports;
pub mod rooms;
pub mod send;
pub mod sent_members;
pub mod server_auth;
pub mod server_key;
pub mod sessions;
pub mod shared_secret;
pub mod sync;
pub mod tags;
pub mod thirdparty;
pub mod typing;
pub mod uiaa;
pub mod users;
pub mod voip;

use std::{net::IpAddr, path::Path, sync::Arc};

use ruma::{OwnedServerName, RoomVersionId};

use crate::{config::Config, storage::Database};

/// Everything a request handler or a CLI command may use, built once from the config.
pub struct Services {
    pub config: Config,
    /// The database handle (cheap to clone), for the services written as functions over
    /// `&Services` (e2ee, pushers, tags, push rules, sync); service structs hold their own.
    pub db: Database,
    pub server_name: OwnedServerName,
    pub users: users::Users,
    /// Registered application services (bridges): `app_service_config_files`.
    pub appservices: Arc<appservice::AppServices>,
    pub sessions: sessions::Sessions,
    pub uiaa: uiaa::Uiaa,
    pub registration: registration::Registration,
    pub shared_secret: shared_secret::SharedSecretRegistration,
    pub server_key: Arc<server_key::ServerKey>,
    /// Requests to other servers, signed as this one (the federation sender and joins use it).
    pub federation: Arc<federation::client::FederationClient>,
    /// The outbound transaction queues (`services/federation/sender`).
    pub federation_sender: Arc<federation::sender::Sender>,
    /// Other servers' signing keys (fetched, cached, checked) and signature checks with them.
    pub server_keys: Arc<federation::keys::ServerKeys>,
    pub rooms: rooms::Rooms,
    /// Room data served to other servers (`/state`, `/backfill`, …).
    pub federation_serve: federation::serve::Serve,
    /// Inbound transactions already answered (a retry gets the same answer).
    pub federation_inbound: federation::inbound::InboundTransactions,
    /// History fetched from other servers for `/messages` (what brought nothing older).
    pub federation_backfill: federation::backfill::Backfill,
    pub typing: typing::Typing,
    pub account_data: account_data::AccountData,
    pub presence: presence::Presence,
    pub directory: directory::Directory,
    /// Abuse reports for the admins (`appliance admin reports`).
    pub reports: reports::Reports,
    pub media: media::Media,
    pub login_limits: LoginLimits,
    /// Registrations per client address (`rc_registration`).
    pub registration_limit: rate_limit::RateLimiter<IpAddr>,
    /// What accounts do in rooms and the media repository (`rc_message`, `rc_joins`, …).
    pub limits: Arc<rate_limit::AccountLimits>,
    /// TURN credentials for `/voip/turnServer` (and the built-in relay's secret).
    pub voip: voip::Voip,
    /// Push actions already worked out, for /sync's notification counts.
    pub evaluated_actions: Arc<push::EvaluatedActions>,
    /// Member events each device was sent, for lazy-loading syncs without redundant members.
    pub sent_members: Arc<sent_members::SentMembers>,
    /// Sliding sync connections: what each was already sent (memory only).
    pub sliding_sync: Arc<sync::connections::Connections>,
    /// Events scheduled to be sent later (MSC4140).
    pub delayed_events: delayed_events::DelayedEvents,
}

pub struct LoginLimits {
    pub per_address: rate_limit::RateLimiter<IpAddr>,
    pub per_account: rate_limit::RateLimiter<String>,
    pub failed_attempts: rate_limit::RateLimiter<String>,
}

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "appliance.db";

impl Services {
    /// Opens the data directory (creating it, the database and the signing key if needed).
    pub fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        let data_dir = config.data_dir.clone();
        create_private_dir(&data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display())
        })?;
        let db = Database::open(&data_dir.join(DATABASE_FILE))?;
        let server_name: OwnedServerName = config.server_name.as_str().try_into()?;
        let server_key = Arc::new(
            server_key::ServerKey::load_or_create(&data_dir, &server_name)?
                .with_old_keys(config.old_signing_keys.clone()),
        );
        let position =
            db.read_now::<_, rusqlite::Error>(crate::storage::rooms::current_stream_position)?;
        let default_room_version = RoomVersionId::try_from(config.default_room_version.as_str())?;
        let federation = Arc::new(federation::client::FederationClient::new(
            &config,
            Some(server_key.clone()),
        )?);
        let appservices = Arc::new(
            appservice::AppServices::load(&config.app_service_config_files, &server_name)?
                .with_client(federation.clone()),
        );
        let limits = Arc::new(
            rate_limit::AccountLimits::new(db.clone(), &config)
                .with_appservices(appservices.clone()),
        );
        let rooms = rooms::Rooms::new(
            db.clone(),
            server_name.clone(),
            server_key.clone(),
            default_room_version,
            position,
            limits.clone(),
        );
        let voip = voip::Voip::new(&config, &data_dir)?;
        let federation_sender = federation::sender::Sender::new(
            db.clone(),
            server_name.clone(),
            &config.federation,
            Arc::new(federation::sender::ClientTransport(federation.clone())),
        )?;
        let server_keys = Arc::new(federation::keys::ServerKeys::new(
            db.clone(),
            federation.clone(),
            server_key.clone(),
            &config,
        ));
        Ok(Arc::new(Self {
            delayed_events: delayed_events::DelayedEvents::new(db.clone(), &config, limits.clone()),
            federation_sender,
            appservices,
            voip,
            evaluated_actions: Arc::default(),
            sent_members: Arc::default(),
            sliding_sync: Arc::default(),
            users: users::Users::new(
                db.clone(),
                server_name.clone(),
                rooms.stream_sender(),
                config.password_config.policy.clone(),
                federation.clone(),
                config.federation_enabled(),
            ),
            sessions: sessions::Sessions::new(db.clone(), rooms.stream_sender()),
            uiaa: uiaa::Uiaa::default(),
            registration: registration::Registration::new(db.clone(), &config),
            shared_secret: shared_secret::SharedSecretRegistration::new(
                config.registration_shared_secret.clone(),
                config.rc_registration,
            ),
            login_limits: LoginLimits {
                per_address: rate_limit::RateLimiter::new(config.rc_login.address),
                per_account: rate_limit::RateLimiter::new(config.rc_login.account),
                failed_attempts: rate_limit::RateLimiter::new(config.rc_login.failed_attempts),
            },
            registration_limit: rate_limit::RateLimiter::new(config.rc_registration),
            limits,
            typing: typing::Typing::default(),
            account_data: account_data::AccountData::new(db.clone()),
            presence: presence::Presence::new(
                db.clone(),
                server_name.clone(),
                config.presence.enabled,
            ),
            directory: directory::Directory::new(
                db.clone(),
                server_name.clone(),
                &config.user_directory,
                federation.clone(),
            ),
            reports: reports::Reports::new(db.clone()),
            media: media::Media::open(db.clone(), &config, federation.clone())?,
            federation_serve: federation::serve::Serve::new(db.clone()),
            federation_inbound: federation::inbound::InboundTransactions::new(db.clone()),
            federation_backfill: federation::backfill::Backfill::new(),
            rooms,
            server_key,
            federation,
            server_keys,
            server_name,
            config,
            db,
        }))
    }

    /// Whether the server can still do its work: a read on the database's blocking pool
    /// completes. The systemd watchdog pings only while this succeeds.
    pub async fn check_health(&self) -> Result<(), rusqlite::Error> {
        self.db.read(crate::storage::ping).await
    }
}

/// Creates the data directory (0750) and its parents when missing.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    Ok(())
}
