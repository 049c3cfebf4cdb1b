//! One certificate order with instant-acme: the account (its key kept in the data directory),
//! the order for every name, the challenge answers, the CSR (rcgen, a fresh P-256 key) and the
//! issued chain.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::challenges::{Http01Answers, tls_alpn_certificate};
use crate::{
    config::{AcmeChallenge, AcmeConfig},
    net::tls::LiveCertificate,
};

/// How long the CA gets to validate the challenges, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The account credentials and the directory they belong to: a new directory URL means a new
/// account.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// An issued certificate: its chain (leaf first) and private key, both PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

pub struct Responders<'a> {
    pub http01: &'a Http01Answers,
    pub live: &'a LiveCertificate,
}

/// Orders a certificate for `names`; `replaces` is the chain of the certificate it succeeds,
/// named in the order (RFC 9773 §5) when the CA offers renewal information.
pub async fn issue(
    config: &AcmeConfig,
    names: &[String],
    data_dir: &Path,
    responders: Responders<'_>,
    replaces: Option<&str>,
) -> anyhow::Result<Issued> {
    let account = account(config, data_dir).await?;
    let replaces = replaces.and_then(|chain| certificate_id(chain).ok());
    let result = order(config, &account, names, &responders, replaces).await;
    responders.http01.clear();
    responders.live.clear_challenges();
    result
}

/// The CA's suggested renewal window for a certificate (RFC 9773 §4.2).
pub struct RenewalWindow {
    pub start: i64,
    pub end: i64,
    pub explanation_url: Option<String>,
    /// When the CA wants to be asked again (its `Retry-After`).
    pub ask_again_in: Duration,
}

/// Asks the CA when `chain_pem`'s certificate should be renewed; `None` when the CA does not
/// offer renewal information.
pub async fn renewal_window(
    config: &AcmeConfig,
    data_dir: &Path,
    chain_pem: &str,
) -> anyhow::Result<Option<RenewalWindow>> {
    let account = account(config, data_dir).await?;
    let id = certificate_id(chain_pem)?;
    match account.renewal_info(&id).await {
        Ok((info, ask_again_in)) => Ok(Some(RenewalWindow {
            start: info.suggested_window.start.unix_timestamp(),
            end: info.suggested_window.end.unix_timestamp(),
            explanation_url: info.explanation_url,
            ask_again_in,
        })),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("cannot get the CA's renewal information")),
    }
}

/// The ARI identifier (authority key id and serial) of the leaf of `chain_pem`.
fn certificate_id(chain_pem: &str) -> anyhow::Result<CertificateIdentifier<'static>> {
    let chain = crate::net::tls::parse_chain(chain_pem)?;
    let leaf = chain.first().context("no certificate in the chain")?;
    CertificateIdentifier::try_from(leaf)
        .map(CertificateIdentifier::into_owned)
        .map_err(|e| anyhow::anyhow!(e))
}

async fn account(config: &AcmeConfig, data_dir: &Path) -> anyhow::Result<Account> {
    let path = super::directory(data_dir).join("account.json");
    let builder = || -> anyhow::Result<_> {
        Ok(match &config.directory_ca_path {
            Some(ca) => Account::builder_with_root(ca)
                .with_context(|| format!("cannot use {} as the directory's CA", ca.display()))?,
            None => Account::builder()?,
        })
    };
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(stored) = serde_json::from_slice::<StoredAccount>(&bytes)
        && stored.directory == config.url
    {
        return builder()?
            .from_credentials(stored.credentials)
            .await
            .context("cannot reach the ACME directory");
    }
    let contact = config
        .contact_email
        .as_ref()
        .map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: config.accept_terms_of_service,
                only_return_existing: false,
            },
            config.url.clone(),
            None,
        )
        .await
        .context("cannot create an ACME account")?;
    let stored = StoredAccount {
        directory: config.url.clone(),
        credentials,
    };
    crate::config::write::write_atomically(&path, &serde_json::to_vec(&stored)?, 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(directory = %config.url, "made an ACME account");
    Ok(account)
}

async fn order(
    config: &AcmeConfig,
    account: &Account,
    names: &[String],
    responders: &Responders<'_>,
    replaces: Option<CertificateIdentifier<'static>>,
) -> anyhow::Result<Issued> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let plain = NewOrder::new(&identifiers);
    let order = match replaces {
        Some(id) => match account
            .new_order(&NewOrder::new(&identifiers).replaces(id))
            .await
        {
            Ok(order) => {
                tracing::info!("the order names the certificate it replaces (ARI)");
                Ok(order)
            }
            // A CA without ARI, or one that will not let this certificate be replaced (already
            // replaced by an earlier, failed order): an order without `replaces` is still right.
            Err(e) => {
                if !matches!(e, instant_acme::Error::Unsupported(_)) {
                    tracing::info!(error = %e, "the CA refused an order naming the certificate it replaces; ordering without");
                }
                account.new_order(&plain).await
            }
        },
        None => account.new_order(&plain).await,
    };
    let mut order = order.context("the CA refused the order")?;
    let kind = match config.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => bail!("authorization is {status:?}"),
        }
        let mut challenge = authorization
            .challenge(kind.clone())
            .with_context(|| format!("the CA does not offer {kind:?}"))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::TlsAlpn01 => {
                let name = challenge.identifier().to_string();
                let certificate = tls_alpn_certificate(&name, key_authorization.digest().as_ref())?;
                responders.live.set_challenge(&name, certificate);
            }
            _ => responders.http01.insert(
                challenge.token.clone(),
                key_authorization.as_str().to_owned(),
            ),
        }
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(VALIDATION_TIMEOUT);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        bail!(
            "the order is {status:?}: {}",
            validation_errors(&mut order).await
        );
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The CA's reasons, from each failed challenge.
async fn validation_errors(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(error) = &challenge.error {
                reasons.push(format!("{}: {error}", authorization.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "no reason given".to_owned()
    } else {
        reasons.join("; ")
    }
}
