//! Who may register and how: Synapse's `enable_registration`, `registration_requires_token` and
//! registration tokens.

use rand::{RngExt, distr::Alphanumeric};
use ruma::api::client::uiaa::{AuthFlow, AuthType};

use crate::{
    config::Config,
    error::{Error, Result},
    storage::{
        Database, now_ms, registration_tokens as store, registration_tokens::RegistrationTokenRow,
    },
};

pub struct Registration {
    db: Database,
    enabled: bool,
    requires_token: bool,
}

impl Registration {
    pub fn new(db: Database, config: &Config) -> Self {
        Self {
            db,
            enabled: config.enable_registration,
            requires_token: config.registration_requires_token,
        }
    }

    pub fn is_open(&self) -> bool {
        self.enabled
    }

    pub fn requires_token(&self) -> bool {
        self.requires_token
    }

    /// The UIA flows of `/register`.
    pub fn flows(&self) -> Vec<AuthFlow> {
        if self.requires_token {
            vec![AuthFlow::new(vec![AuthType::RegistrationToken])]
        } else {
            vec![AuthFlow::new(vec![AuthType::Dummy])]
        }
    }

    pub async fn token_is_valid(&self, token: &str) -> Result<bool> {
        let token = token.to_owned();
        let row = self
            .db
            .read(move |c| store::get(c, &token).map_err(Error::from))
            .await?;
        Ok(row.is_some_and(|row| row.is_usable(now_ms())))
    }

    /// Makes a token: the given text, or 16 random letters and digits.
    pub async fn create_token(
        &self,
        token: Option<String>,
        uses_allowed: Option<i64>,
        expiry_time: Option<i64>,
    ) -> Result<RegistrationTokenRow> {
        let token = token.unwrap_or_else(|| {
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(16)
                .map(char::from)
                .collect()
        });
        if token.is_empty()
            || token.len() > 64
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        {
            return Err(Error::invalid_param(
                "A registration token has 1 to 64 characters of A-Z a-z 0-9 . _ ~ -",
            ));
        }
        if uses_allowed.is_some_and(|n| n < 0) {
            return Err(Error::invalid_param("uses_allowed must not be negative"));
        }
        self.db
            .write(move |tx| {
                if !store::insert(tx, &token, uses_allowed, expiry_time)? {
                    return Err(Error::invalid_param(format!(
                        "Registration token `{token}` already exists"
                    )));
                }
                store::get(tx, &token)?
                    .ok_or_else(|| Error::internal("token vanished after insert"))
            })
            .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<RegistrationTokenRow>> {
        self.db.read(|c| store::list(c).map_err(Error::from)).await
    }

    pub async fn delete_token(&self, token: &str) -> Result<()> {
        let token = token.to_owned();
        self.db
            .write(move |tx| match store::delete(tx, &token)? {
                true => Ok(()),
                false => Err(Error::not_found(format!("No registration token `{token}`"))),
            })
            .await
    }
}

/// Spends one use of a token inside the transaction that creates the account.
pub fn consume_token(tx: &rusqlite::Transaction<'_>, token: &str) -> Result<()> {
    if store::consume(tx, token)? {
        Ok(())
    } else {
        Err(Error::forbidden(
            "The registration token was used up or expired meanwhile",
        ))
    }
}
