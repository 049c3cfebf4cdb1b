//! The appliance's one configuration file.
//!
//! Every key has a default and a doc comment, so a partial (or empty) file is valid. Where
//! Synapse's `homeserver.yaml` has the same setting, the key and its meaning are Synapse's, so that
//! people who follow the Synapse guides feel at home. Unknown keys are refused with their line.
//!
//! Validation (`validate.rs`) names the key and its line and suggests the closest known key for a
//! misspelt one; `Config::check_files` adds the checks of the files the config names for `appliance
//! config check`. Sizes and durations are read as Synapse writes them (`units.rs`); files are
//! written atomically (`write.rs`).

pub mod backup;
mod element;
pub mod federation;
pub mod federation_backoff;
pub mod media;
mod password;
mod tls;
mod units;
mod validate;
pub mod write;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use element::ElementConfig;
pub use password::{PasswordConfig, PasswordPolicy};
pub use tls::AcmeChallenge;
pub use tls::AcmeConfig;
pub use units::{ByteSize, Duration};

/// Where the installed appliance keeps its configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/matrix-appliance/config.yaml";
/// Where the installed appliance keeps its database, keys and media.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/matrix-appliance";
/// Where the development server keeps its data when no config exists.
pub const DEVELOPMENT_DATA_DIR: &str = "./appliance-data";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain in user IDs (`@alice:example.org`) and room aliases. It may carry a port
    /// (`localhost:8448`). It can never change once users exist.
    pub server_name: String,

    /// The public URL clients use to reach this server, e.g. `https://matrix.example.org/`.
    /// Defaults to `https://<server_name>/`, or to the first listener for a development server.
    pub public_baseurl: Option<String>,

    /// Directory for the database, the signing key and media. `--data-dir` overrides it.
    pub data_dir: PathBuf,
    /// Nightly backups made by the server (`appliance admin backup` by hand); off by default.
    /// Not a Synapse key.
    pub backup_schedule: backup::BackupSchedule,
    /// The file this config was read from (not a key): backups copy it.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// Where the server listens (Synapse's form). `serve --listen` replaces them all with one
    /// plain-HTTP listener, for development and tests.
    pub listeners: Vec<Listener>,
    /// How long an HTTP/1.1 client gets to send a request's headers, counted from the first
    /// byte the server waits for: a keep-alive connection that sends no next request is closed
    /// after it too (nginx's `client_header_timeout` and `keepalive_timeout` in one; not a
    /// Synapse key).
    pub client_header_timeout: Duration,
    /// Longest pause between two pieces of a request body; a client that stops sending gets a
    /// `408` (or the connection closed) instead of holding it (nginx's `client_body_timeout`;
    /// not a Synapse key).
    pub client_body_timeout: Duration,
    /// Longest time a whole request body may take, however steadily it arrives; past it the
    /// client gets a `408` and the connection is closed (against clients that send one byte
    /// just before each `client_body_timeout`; not a Synapse key). Media uploads have
    /// `client_upload_deadline` instead.
    pub client_body_deadline: Duration,
    /// Longest time a media upload's body may take in all (not a Synapse key). The default
    /// lets a 50 MiB file come in over a link of about 250 kbit/s.
    pub client_upload_deadline: Duration,
    /// Most connections open at once, over every listener; more are closed as they are
    /// accepted (not a Synapse key). New connections are also closed while fewer than 128 file
    /// descriptors are left, so that the database and media files keep working.
    pub client_max_connections: u32,
    /// Most connections open at once from one client address (IPv6: one /64); a listener's
    /// `trusted_proxies` are exempt, since they carry many clients (not a Synapse key).
    pub client_max_connections_per_address: u32,

    /// Minimum level of log lines: `error`, `warn`, `info`, `debug` or `trace`. `RUST_LOG`
    /// overrides it with a full filter.
    pub log_level: String,

    /// Allow anyone to register an account through the client API.
    pub enable_registration: bool,

    /// Synapse refuses open registration without e-mail or another verification unless this is
    /// set, as a guard against spam; so does the appliance.
    pub enable_registration_without_verification: bool,

    /// Require a registration token (`appliance admin registration-token create`) to register.
    pub registration_requires_token: bool,

    /// Shared secret for `/_synapse/admin/v1/register` (Synapse's `register_new_matrix_user`).
    /// Registration through it is disabled while this is unset.
    pub registration_shared_secret: Option<String>,

    /// Synapse's `password_config`: password login on or off, and the policy new passwords
    /// must meet (`policy: {enabled, minimum_length, require_digit, require_symbol,
    /// require_lowercase, require_uppercase}`).
    pub password_config: PasswordConfig,

    /// Guest accounts (`POST /register?kind=guest`), as Synapse's key: off by default. Guests
    /// get a token without a password and may call only what the spec allows them
    /// (`web::ruma::guest_may_call`); they join only rooms whose `m.room.guest_access` is
    /// `can_join`, and may upgrade to a full account while registration is open.
    pub allow_guest_access: bool,

    /// Rate limits on `/login`, per client address, per account, and on failed attempts per
    /// account.
    pub rc_login: LoginRateLimits,

    /// Rate limit on `/register`, per client address. Nonces of `/_synapse/admin/v1/register`
    /// (shared-secret registration) are limited per address with the same values.
    pub rc_registration: RateLimit,

    /// Events a user sends, per account (Synapse's `rc_message`): messages, state events,
    /// redactions and membership changes each count one; creating or upgrading a room and a
    /// profile change count one in all. Server admins are exempt.
    pub rc_message: RateLimit,

    /// When set, redactions of other users' events (by room moderators) use this limit instead
    /// of `rc_message` (Synapse's `rc_admin_redaction`), so moderators can clean up spam fast.
    pub rc_admin_redaction: Option<RateLimit>,

    /// Room joins per account (Synapse's `rc_joins`); rejoining a room one is in is free.
    pub rc_joins: JoinRateLimits,

    /// Invites per room, per invited user and per inviter (Synapse's `rc_invites`).
    pub rc_invites: InviteRateLimits,

    /// Rooms created or upgraded per account (Synapse's `rc_room_creation`).
    pub rc_room_creation: RateLimit,

    /// `POST /_matrix/media/v1/create` per account (Synapse's `rc_media_create`).
    pub rc_media_create: RateLimit,

    /// Managing delayed events (MSC4140: listing, cancelling, restarting, sending them now),
    /// per account, or per client address for requests without a token (Synapse's key).
    pub rc_delayed_event_mgmt: RateLimit,

    /// The longest delay a client may schedule an event with (MSC4140 delayed events, which
    /// Element Call uses to leave a call when a client vanishes), e.g. `24h` (Synapse's key).
    /// Unset, as in Synapse, turns delayed events off: scheduling one is refused.
    pub max_event_delay_duration: Option<Duration>,

    /// The version of rooms created without one, as Synapse's `default_room_version`.
    pub default_room_version: String,

    /// Largest media upload, e.g. `50M` (JSON request bodies have a fixed cap of 256 KiB, 4 MiB
    /// for the bulk end-to-end-encryption requests).
    pub max_upload_size: ByteSize,

    /// TURN server URIs handed to clients by `/voip/turnServer`.
    pub turn_uris: Vec<String>,

    /// Secret shared with the TURN server for time-limited credentials.
    pub turn_shared_secret: Option<String>,

    /// How long TURN credentials stay valid.
    pub turn_user_lifetime: Duration,

    /// Hand TURN credentials to guests too.
    pub turn_allow_guests: bool,

    /// The user directory (`/user_directory/search`), as Synapse's `user_directory`.
    pub user_directory: UserDirectoryConfig,

    /// Presence (online / unavailable / offline and a status message), as Synapse's `presence`.
    pub presence: PresenceConfig,

    /// PEM certificate chain of the TLS listeners, from a file the operator manages (Synapse's
    /// key). Re-read when it changes. Unset (and `acme` off) means a self-signed certificate
    /// made at first start, for a box that only serves a LAN.
    pub tls_certificate_path: Option<PathBuf>,

    /// PEM private key that goes with `tls_certificate_path` (Synapse's key).
    pub tls_private_key_path: Option<PathBuf>,

    /// Certificates from an ACME CA such as Let's Encrypt, renewed automatically.
    pub acme: AcmeConfig,

    /// Serve `/.well-known/matrix/server`, pointing other servers at `public_baseurl`'s host on
    /// port 443 (Synapse's key). Turn it on when the web traffic of `server_name` reaches this box.
    pub serve_server_wellknown: bool,

    /// Extra keys merged into `/.well-known/matrix/client` (Synapse's key).
    pub extra_well_known_client_content: serde_json::Map<String, serde_json::Value>,

    /// How to reach the administrator, e.g. `mailto:admin@example.org` (Synapse's key); shown
    /// in `/.well-known/matrix/support`.
    pub admin_contact: Option<String>,

    /// Element Web hosting.
    pub element: ElementConfig,

    /// Run the built-in TURN relay for voice and video calls. `turn_uris` and
    /// `turn_shared_secret` then default to this relay and a generated secret.
    pub turn_relay_enabled: bool,

    /// UDP and TCP port of the built-in relay (TURN's standard 3478).
    pub turn_listen_port: u16,

    /// TLS port of the built-in relay (`turns:`, standard 5349), with the front door's
    /// certificate. Unset turns TURN over TLS off.
    pub turn_tls_port: Option<u16>,

    /// Addresses the built-in relay binds; `::` and `0.0.0.0` mean every interface.
    pub turn_bind_addresses: Vec<String>,

    /// Lowest UDP port handed out for relayed traffic.
    pub turn_min_port: u16,

    /// Highest UDP port handed out for relayed traffic.
    pub turn_max_port: u16,

    /// The public address the relay advertises, fixed. Unset means detected (STUN, then DNS)
    /// and re-checked every `turn_public_ip_check_interval`.
    pub turn_external_ip: Option<IpAddr>,

    /// How often the public address is checked, so that the relay follows an ISP's change.
    pub turn_public_ip_check_interval: Duration,

    /// STUN servers (`host:port`) asked for this box's public address; the majority answer wins.
    pub turn_stun_servers: Vec<String>,

    /// Relay to loopback, private, CGNAT, link-local and unique-local addresses too. Off by
    /// default: a relay open to the LAN lets anyone with an account reach the LAN.
    pub turn_allow_private_peers: bool,

    /// Peer addresses or CIDR ranges (`192.168.1.0/24`) the relay may reach even though they
    /// are private.
    pub turn_allowed_peer_ips: Vec<String>,
    // The media repository, with Synapse's keys (see `media.rs`).
    /// Where uploaded and cached media files are kept; `<data_dir>/media_store` when unset.
    pub media_store_path: Option<PathBuf>,
    /// Images with more pixels than this (width × height, e.g. `32M`) are not thumbnailed: their
    /// header is read, their pixels are never decoded.
    pub max_image_pixels: ByteSize,
    /// Make thumbnails of exactly the requested size. When `false`, a thumbnail request gets the
    /// nearest of `thumbnail_sizes`, as in Synapse.
    pub dynamic_thumbnails: bool,
    /// The thumbnail sizes made (on first request, then kept), as Synapse's list.
    pub thumbnail_sizes: Vec<media::ThumbnailSize>,
    /// Mark media uploaded while this is `true` as served only through the authenticated
    /// `/_matrix/client/v1/media` endpoints (the legacy `/_matrix/media/v3` ones answer 404 for
    /// it), as Synapse's key does. `false` by default so that older clients can show media.
    pub enable_authenticated_media: bool,
    /// URL previews (`/preview_url`): the server fetches the pages users link to and answers
    /// with their OpenGraph data (title, description, a picture stored as media). Off by
    /// default: it makes the server fetch URLs for users.
    pub url_preview_enabled: bool,
    /// IP ranges URL previews never fetch from, checked on every address a host name resolves
    /// to and on every redirect. Loopback, private (RFC 1918, ULA), CGNAT, link-local,
    /// multicast, documentation and unspecified ranges are always refused besides these (the
    /// list Synapse's sample config gives), unless `url_preview_ip_range_whitelist` allows them.
    pub url_preview_ip_range_blacklist: Vec<String>,
    /// IP ranges URL previews may fetch from even though a blacklist names them.
    pub url_preview_ip_range_whitelist: Vec<String>,
    /// URLs never previewed, as Synapse's list: each entry maps URL parts (`scheme`, `netloc`,
    /// `hostname`, `port`, `path`, `query`, `fragment`, `username`, `password`) to a glob
    /// pattern, or a regular expression when it starts with `^`; an entry matches when all its
    /// parts do.
    pub url_preview_url_blacklist: Vec<std::collections::BTreeMap<String, String>>,
    /// The most of a page (or picture) a URL preview downloads (`10M`, as Synapse).
    pub max_spider_size: ByteSize,
    /// `Accept-Language` of URL preview requests, most preferred first (Synapse's list).
    pub url_preview_accept_language: Vec<String>,
    /// IP ranges outbound federation requests never go to, checked on every address a server's
    /// name resolves to. Unset: loopback, private, CGNAT, link-local, multicast, documentation
    /// and reserved ranges (Synapse's default list); a list given replaces it. `0.0.0.0` and `::`
    /// are always refused.
    pub ip_range_blacklist: Option<Vec<String>>,
    /// IP ranges outbound federation may reach even though `ip_range_blacklist` names them.
    pub ip_range_whitelist: Vec<String>,
    /// The only servers federated with (server names); unset: every server.
    pub federation_domain_whitelist: Option<Vec<String>>,
    /// Check the TLS certificates of other servers (`false` only for test setups).
    pub federation_verify_certificates: bool,
    /// PEM files of CAs trusted for other servers' certificates besides the system's.
    pub federation_custom_ca_list: Vec<PathBuf>,
    /// Synapse's `federation` section: the backoff of the outbound sender.
    pub federation: federation_backoff::FederationConfig,
    /// Notaries asked for a server's signing keys when the server itself cannot be reached
    /// (Synapse's key): `[{server_name, verify_keys: {key_id: key}}]`; default matrix.org.
    pub trusted_key_servers: Vec<federation::TrustedKeyServer>,
    /// Keys this server signed with before its current one (Synapse's key): `{key_id: {key,
    /// expired_ts}}`, published as `old_verify_keys` so that old events still verify.
    pub old_signing_keys: std::collections::BTreeMap<String, federation::OldSigningKey>,
    /// Registration files of application services (bridges), in Synapse's YAML form (Synapse's
    /// key). Read at start; adding or removing one takes a restart.
    pub app_service_config_files: Vec<PathBuf>,
    /// Let other servers read this server's public room list
    /// (`/_matrix/federation/v1/publicRooms`);
    /// `false` answers them `403`, as Synapse's default.
    pub allow_public_rooms_over_federation: bool,
    /// How long media is kept, as Synapse's `media_retention`.
    pub media_retention: media::MediaRetention,
    /// The most disk the cached copies of other servers' media may take (`1G`; Synapse has no
    /// such cap). Past it, after each download, the copies used least recently are deleted
    /// (fetched again when asked for); the file just fetched is always kept.
    pub max_remote_media_cache_size: ByteSize,
    /// How many `/create`d media IDs a user may hold without having uploaded them.
    pub max_pending_media_uploads: u32,
    /// How long a media ID from `/create` waits for its upload before it expires.
    pub unused_expiration_time: Duration,

    /// Most relay allocations one user may hold at once (coturn's `user-quota`; 12 as in
    /// Synapse's TURN how-to). A call needs one or two.
    pub turn_max_allocations_per_user: u32,

    /// Longest time one allocation may live, however often it is refreshed; it is then ended.
    pub turn_max_allocation_lifetime: Duration,

    /// Most bytes per second one allocation may relay (both directions together); more is
    /// dropped. `0` means no cap. The default carries an HD video call with room to spare.
    pub turn_max_bandwidth: ByteSize,

    /// Most packets per second one allocation may relay (both directions together); more are
    /// dropped. `0` means no cap.
    pub turn_max_packet_rate: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            public_baseurl: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            backup_schedule: backup::BackupSchedule::default(),
            config_file: None,
            listeners: vec![Listener::default()],
            log_level: "info".to_owned(),
            enable_registration: false,
            enable_registration_without_verification: false,
            registration_requires_token: false,
            registration_shared_secret: None,
            password_config: PasswordConfig::default(),
            allow_guest_access: false,
            rc_login: LoginRateLimits::default(),
            rc_registration: RateLimit {
                per_second: 0.17,
                burst_count: 3.0,
            },
            // Synapse's defaults (synapse/config/ratelimiting.py).
            rc_message: RateLimit {
                per_second: 0.2,
                burst_count: 10.0,
            },
            rc_admin_redaction: None,
            rc_joins: JoinRateLimits::default(),
            rc_invites: InviteRateLimits::default(),
            rc_room_creation: RateLimit {
                per_second: 0.016,
                burst_count: 10.0,
            },
            rc_media_create: RateLimit {
                per_second: 10.0,
                burst_count: 50.0,
            },
            rc_delayed_event_mgmt: RateLimit {
                per_second: 1.0,
                burst_count: 5.0,
            },
            max_event_delay_duration: None,
            default_room_version: "12".to_owned(),
            max_upload_size: ByteSize::mebibytes(50),
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_user_lifetime: Duration::from_secs(3600),
            turn_allow_guests: true,
            user_directory: UserDirectoryConfig::default(),
            presence: PresenceConfig::default(),
            tls_certificate_path: None,
            tls_private_key_path: None,
            acme: AcmeConfig::default(),
            serve_server_wellknown: false,
            extra_well_known_client_content: serde_json::Map::new(),
            admin_contact: None,
            element: ElementConfig::default(),
            client_header_timeout: Duration::from_secs(30),
            client_body_timeout: Duration::from_secs(30),
            client_body_deadline: Duration::from_secs(60),
            client_upload_deadline: Duration::from_secs(30 * 60),
            client_max_connections: 1024,
            client_max_connections_per_address: 64,
            turn_relay_enabled: false,
            turn_listen_port: 3478,
            turn_tls_port: Some(5349),
            turn_bind_addresses: vec!["0.0.0.0".to_owned()],
            turn_min_port: 49153,
            turn_max_port: 49193,
            turn_external_ip: None,
            turn_public_ip_check_interval: Duration::from_secs(300),
            turn_stun_servers: vec![
                "stun.l.google.com:19302".to_owned(),
                "stun.cloudflare.com:3478".to_owned(),
                "stun.nextcloud.com:443".to_owned(),
            ],
            turn_allow_private_peers: false,
            turn_allowed_peer_ips: Vec::new(),
            media_store_path: None,
            max_image_pixels: media::default_max_image_pixels(),
            dynamic_thumbnails: false,
            thumbnail_sizes: media::default_thumbnail_sizes(),
            enable_authenticated_media: false,
            url_preview_enabled: false,
            url_preview_ip_range_blacklist: Vec::new(),
            url_preview_ip_range_whitelist: Vec::new(),
            url_preview_url_blacklist: Vec::new(),
            max_spider_size: ByteSize::mebibytes(10),
            url_preview_accept_language: vec!["en".to_owned()],
            ip_range_blacklist: None,
            ip_range_whitelist: Vec::new(),
            federation_domain_whitelist: None,
            federation_verify_certificates: true,
            federation_custom_ca_list: Vec::new(),
            federation: federation_backoff::FederationConfig::default(),
            trusted_key_servers: federation::default_trusted_key_servers(),
            old_signing_keys: std::collections::BTreeMap::new(),
            app_service_config_files: Vec::new(),
            allow_public_rooms_over_federation: false,
            media_retention: media::MediaRetention::default(),
            max_remote_media_cache_size: ByteSize::mebibytes(1024),
            max_pending_media_uploads: media::DEFAULT_MAX_PENDING_MEDIA_UPLOADS,
            unused_expiration_time: media::DEFAULT_UNUSED_EXPIRATION_TIME,
            turn_max_allocations_per_user: 12,
            turn_max_allocation_lifetime: Duration::from_secs(24 * 3600),
            turn_max_bandwidth: ByteSize::mebibytes(1),
            turn_max_packet_rate: 2000,
        }
    }
}

/// A listener in Synapse's form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listener {
    /// TCP port.
    pub port: u16,
    /// Addresses to bind; `::` and `0.0.0.0` mean every interface.
    pub bind_addresses: Vec<String>,
    /// Only `http` exists.
    #[serde(rename = "type")]
    pub kind: String,
    /// TLS on this listener, with the certificate from `acme`, `tls_certificate_path` or the
    /// self-signed one.
    pub tls: bool,
    /// Take the client's address from `X-Forwarded-For` (or, without it, `Forwarded`) as
    /// Synapse does, for rate limits and logs. Only honoured on connections from
    /// `trusted_proxies`: from any other peer the headers are ignored, so they cannot be spoofed.
    pub x_forwarded: bool,
    /// With `x_forwarded`: the reverse proxies (addresses or CIDR ranges) whose forwarding
    /// headers are believed. Hops in the header that are themselves trusted proxies are skipped,
    /// so the client is the last address not in this list. Default: loopback only
    /// (`127.0.0.0/8`, `::1/128`), the proxy on the same box. Not a Synapse key (Synapse trusts
    /// the header from any peer).
    pub trusted_proxies: Vec<String>,
    /// What the listener serves: `client` (the client API, `/.well-known/matrix/*`, Element),
    /// `federation`, `acme` (ACME HTTP-01 challenge answers) and `redirect` (everything else
    /// gets a 308 to the same URL on https).
    pub resources: Vec<ListenerResource>,
}

impl Default for Listener {
    fn default() -> Self {
        Self {
            port: 8008,
            bind_addresses: vec!["127.0.0.1".to_owned()],
            kind: "http".to_owned(),
            tls: false,
            x_forwarded: false,
            trusted_proxies: default_trusted_proxies(),
            resources: vec![ListenerResource {
                names: vec!["client".to_owned(), "federation".to_owned()],
            }],
        }
    }
}

/// The proxy on the same box.
pub fn default_trusted_proxies() -> Vec<String> {
    vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()]
}

impl Listener {
    pub fn serves(&self, resource: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.names.iter().any(|n| n == resource))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerResource {
    pub names: Vec<String>,
}

impl Default for ListenerResource {
    fn default() -> Self {
        Self {
            names: vec!["client".to_owned()],
        }
    }
}

/// Synapse's `user_directory` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserDirectoryConfig {
    /// Search every local account that is not deactivated. When `false` (the default), a search
    /// only finds users who share a room with the searcher or who are in a public room (one
    /// anyone may join, or whose history is world-readable).
    pub search_all_users: bool,
}

/// Synapse's `presence` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Record presence and show it to users who share a room, and exchange it with the other
    /// servers in those rooms (`m.presence` EDUs). When `false`, the presence endpoints still
    /// answer (everyone is offline) but nothing is recorded, sent in `/sync`, sent to other
    /// servers or taken from them; this saves the work of tracking activity on busy servers.
    pub enabled: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A token bucket: `per_second` requests on average, bursts of up to `burst_count`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginRateLimits {
    /// Login attempts per client address.
    pub address: RateLimit,
    /// Login attempts per account.
    pub account: RateLimit,
    /// Failed login attempts per account.
    pub failed_attempts: RateLimit,
}

impl Default for LoginRateLimits {
    fn default() -> Self {
        // Synapse's defaults.
        Self {
            address: RateLimit {
                per_second: 0.003,
                burst_count: 5.0,
            },
            account: RateLimit {
                per_second: 0.003,
                burst_count: 5.0,
            },
            failed_attempts: RateLimit {
                per_second: 0.17,
                burst_count: 3.0,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JoinRateLimits {
    /// Joins of rooms this server is in.
    pub local: RateLimit,
    /// Joins of rooms on other servers. Read for Synapse's sake: it applies once federation
    /// exists; until then every join is local.
    pub remote: RateLimit,
}

impl Default for JoinRateLimits {
    fn default() -> Self {
        // Synapse's defaults.
        Self {
            local: RateLimit {
                per_second: 0.1,
                burst_count: 10.0,
            },
            remote: RateLimit {
                per_second: 0.01,
                burst_count: 10.0,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InviteRateLimits {
    /// Invites into one room, whoever sends them.
    pub per_room: RateLimit,
    /// Invites one user receives, from anyone into any room.
    pub per_user: RateLimit,
    /// Invites one user sends, into any room.
    pub per_issuer: RateLimit,
}

impl Default for InviteRateLimits {
    fn default() -> Self {
        // Synapse's defaults.
        Self {
            per_room: RateLimit {
                per_second: 0.3,
                burst_count: 10.0,
            },
            per_user: RateLimit {
                per_second: 0.003,
                burst_count: 5.0,
            },
            per_issuer: RateLimit {
                per_second: 0.3,
                burst_count: 10.0,
            },
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

impl Config {
    /// Federation is on when a listener serves the `federation` resource: then other servers
    /// reach this one and it reaches them; off, neither (no federation endpoint is served, no
    /// request goes out, `/.well-known/matrix/server` is not served).
    pub fn federation_enabled(&self) -> bool {
        self.listeners.iter().any(|l| l.serves("federation"))
    }

    /// The port other servers reach this one on, which `/.well-known/matrix/server` and the
    /// setup checklist name: a TLS listener on 443 that serves federation, else the first TLS
    /// listener that does (8448 as the wizard sets it up), else 443, where a reverse proxy in
    /// front terminates TLS.
    pub fn federation_public_port(&self) -> u16 {
        let federation = || {
            self.listeners
                .iter()
                .filter(|l| l.tls && l.serves("federation"))
        };
        if federation().any(|l| l.port == 443) {
            return 443;
        }
        federation().next().map_or(443, |l| l.port)
    }

    /// Reads and validates a config file. A file with only some keys is fine.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // An empty file (or one with only comments) is a valid, all-default config.
        let mut config = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            Config::default()
        } else {
            // serde_path_to_error names the key even for errors serde_yaml reports without one.
            serde_path_to_error::deserialize::<_, Config>(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| {
                    let key = e.path().to_string();
                    let mut message = if key == "." {
                        e.inner().to_string()
                    } else {
                        format!("`{key}`: {}", e.inner())
                    };
                    if let Some(known) = validate::suggest_known_key(&e.inner().to_string()) {
                        message.push_str(&format!(" (did you mean `{known}`?)"));
                    }
                    ConfigError::Parse {
                        path: path.to_owned(),
                        message,
                    }
                })?
        };
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                reason,
            })?;
        config.config_file = Some(path.to_owned());
        Ok(config)
    }

    /// The config of the development server that runs when no config file exists.
    pub fn development() -> Self {
        Self {
            data_dir: PathBuf::from(DEVELOPMENT_DATA_DIR),
            ..Self::default()
        }
    }

    /// The effective config as YAML, with every secret replaced.
    pub fn to_redacted_yaml(&self) -> String {
        let mut shown = self.clone();
        let redact = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some("<redacted>".to_owned());
            }
        };
        redact(&mut shown.registration_shared_secret);
        redact(&mut shown.turn_shared_secret);
        serde_yaml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
