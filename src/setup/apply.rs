//! Applying the wizard's answers: secrets generated, the config checked and written atomically
//! (mode 0600), the first admin made and the first registration token created, all inside one
//! database transaction, so that a failure at any point leaves neither a config nor an account.

use std::{path::PathBuf, sync::Arc};

use super::answers::{Answers, RegistrationChoice};
use crate::{
    config::{Config, Listener, write::write_atomically},
    services::Services,
};

/// How many accounts the wizard's first registration token makes: enough for a family or a few
/// friends, few enough that a token that leaks cannot fill the server.
pub const FIRST_TOKEN_USES: i64 = 5;
/// How long the first registration token lasts: a week to hand it out. More tokens come from
/// `appliance admin registration-token create`.
pub const FIRST_TOKEN_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// Where the wizard writes and what it starts from.
#[derive(Clone)]
pub struct Target {
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// The current config on reconfigure; the defaults on a new box.
    pub base: Config,
    /// Reconfiguring an installed box: the server name is fixed and the admin step optional.
    pub reconfigure: bool,
    /// The development server writes one plain-HTTP listener instead of the installed box's.
    pub plain_listener: Option<Listener>,
    /// The homeserver takes over the wizard's sockets after apply (development, `--listen`);
    /// set by `setup::run`. The wizard then also starts the TURN relay itself.
    pub in_place: bool,
}

/// What apply did.
pub struct Applied {
    /// The config as written to the file.
    pub config: Config,
    /// The services opened on it (with the serving address override, if any).
    pub services: Arc<Services>,
    pub registration_token: Option<String>,
    /// When the first registration token expires (Unix milliseconds).
    pub registration_token_expiry: i64,
    /// The TURN relay started for a homeserver that serves in place (see `Target::in_place`).
    pub turn_relay: Option<crate::turn::Relay>,
}

/// Why apply failed, in words that say what to fix.
#[derive(Debug)]
pub struct ApplyError(pub String);

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The config file the answers produce, checked with `Config::parse`.
pub fn build_config(answers: &Answers, target: &Target) -> Result<(Config, String), ApplyError> {
    let mut config = answers.to_config(&target.base, target.plain_listener.clone());
    config.data_dir = absolute(&target.data_dir);
    if config.registration_shared_secret.is_none() {
        config.registration_shared_secret = Some(secret());
    }
    if config.turn_relay_enabled && config.turn_shared_secret.is_none() {
        config.turn_shared_secret = Some(secret());
    }
    let yaml = render_yaml(&config)?;
    let parsed = Config::parse(&yaml, &target.config_path)
        .map_err(|e| ApplyError(format!("the generated config is invalid: {e}")))?;
    Ok((parsed, yaml))
}

/// Applies `answers`; `serve_with` adjusts the config the returned services run with (e.g. the
/// `--listen` override) without changing the file.
pub async fn apply(
    answers: &Answers,
    target: &Target,
    serve_with: impl FnOnce(&mut Config),
) -> Result<Applied, ApplyError> {
    let errors = answers.check_all(target.reconfigure);
    if let Some((field, key)) = errors.first() {
        let reason = answers.error_text(super::i18n::Catalogue::english(), key);
        return Err(ApplyError(format!("`{field}`: {reason}")));
    }
    let (config, yaml) = build_config(answers, target)?;
    let mut running = config.clone();
    serve_with(&mut running);
    let services = Services::open(running)
        .map_err(|e| ApplyError(format!("cannot open the data directory: {e:#}")))?;

    let registration_token = (answers.registration == RegistrationChoice::Token
        && !target.reconfigure)
        .then(|| hex::encode(rand::random::<[u8; 8]>()));
    let first_token_expiry = crate::storage::now_ms() + FIRST_TOKEN_LIFETIME_MS;
    let config_path = target.config_path.clone();
    let existed_before = config_path.exists();
    let yaml_for_file = yaml.clone();
    let write_config = {
        let config_path = config_path.clone();
        let token = registration_token.clone();
        move |tx: &rusqlite::Transaction<'_>| -> crate::error::Result<()> {
            if let Some(token) = &token {
                crate::storage::registration_tokens::insert(
                    tx,
                    token,
                    Some(FIRST_TOKEN_USES),
                    Some(first_token_expiry),
                )?;
            }
            // Last: once the file is in place, only the commit remains.
            write_atomically(&config_path, yaml.as_bytes(), 0o600).map_err(|e| {
                crate::error::Error::internal(format!(
                    "cannot write {}: {e}; make its directory writable by the appliance's user \
                     and apply again",
                    config_path.display()
                ))
            })
        }
    };

    let result = if answers.admin_user.is_empty() {
        // Reconfiguring without a new admin: no token is made, so the file is all there is.
        write_atomically(&config_path, yaml_for_file.as_bytes(), 0o600).map_err(|e| {
            crate::error::Error::internal(format!("cannot write {}: {e}", config_path.display()))
        })
    } else {
        match services.users.new_user_id(&answers.admin_user) {
            Ok(user_id) => {
                services
                    .users
                    .create(
                        &user_id,
                        Some(answers.admin_password.clone()),
                        true,
                        write_config,
                    )
                    .await
            }
            Err(e) => Err(e),
        }
    };
    if let Err(e) = result {
        // The rename happened but the commit did not: take the file back out.
        if !existed_before && config_path.exists() {
            let _ = std::fs::remove_file(&config_path);
        }
        return Err(ApplyError(match e {
            crate::error::Error::Matrix { message, .. } => message.into_owned(),
            crate::error::Error::Internal(message) => message,
            other => other.to_string(),
        }));
    }
    super::token::remove(&target.data_dir);
    tracing::info!(config = %config_path.display(), "setup applied");
    Ok(Applied {
        config,
        services,
        registration_token,
        registration_token_expiry: first_token_expiry,
        turn_relay: None,
    })
}

/// "It makes up to 5 accounts and expires on … (in 7 days)", in the page's language.
pub fn first_token_note(tr: &super::i18n::Catalogue, expiry_ms: i64) -> String {
    let expiry = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(expiry_ms).unwrap_or_default());
    tr.tf("finish.token_limits", "uses", &FIRST_TOKEN_USES.to_string())
        .replace(
            "{expiry}",
            &humantime::format_rfc3339_seconds(expiry).to_string(),
        )
        .replace(
            "{days}",
            &(FIRST_TOKEN_LIFETIME_MS / (24 * 3600 * 1000)).to_string(),
        )
}

/// A random secret for shared-secret registration and TURN credentials.
fn secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The config as YAML: the keys that differ from the defaults, plus every key the wizard asks
/// about, so the file shows the choices made and nothing else.
fn render_yaml(config: &Config) -> Result<String, ApplyError> {
    const ALWAYS: [&str; 8] = [
        "server_name",
        "public_baseurl",
        "listeners",
        "enable_registration",
        "registration_requires_token",
        "serve_server_wellknown",
        "turn_relay_enabled",
        "element",
    ];
    let to_value = |c: &Config| {
        serde_yaml::to_value(c).map_err(|e| ApplyError(format!("cannot render the config: {e}")))
    };
    let (serde_yaml::Value::Mapping(full), serde_yaml::Value::Mapping(defaults)) =
        (to_value(config)?, to_value(&Config::default())?)
    else {
        return Err(ApplyError("the config is not a mapping".into()));
    };
    let mut kept = serde_yaml::Mapping::new();
    for (key, value) in full {
        let always = key.as_str().is_some_and(|k| ALWAYS.contains(&k));
        if always || defaults.get(&key) != Some(&value) {
            kept.insert(key, value);
        }
    }
    let body = serde_yaml::to_string(&kept)
        .map_err(|e| ApplyError(format!("cannot render the config: {e}")))?;
    Ok(format!(
        "# Written by the matrix-appliance setup wizard. Keys not listed have their defaults;\n\
         # `appliance config check` prints them all. `appliance setup --reconfigure` reopens the wizard.\n\
         {body}"
    ))
}
