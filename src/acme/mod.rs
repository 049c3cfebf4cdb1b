//! Certificates from an ACME CA (Let's Encrypt by default): the renewal task that keeps the
//! live certificate fresh. It orders one certificate for every name the box serves, renews when
//! a third of the lifetime is left (or `acme.reprovision_threshold` before expiry), retries
//! failures with a growing delay, and never replaces a working certificate with nothing: a
//! failed attempt only shows in the log and in `appliance cert status`.
//!
//! Files, all in `<data_dir>/acme/`: `account.json` (the account key), `certificate.pem` (key
//! and chain, one atomic file), `status.json` (the last attempt), `renew-request.json` (left by
//! `appliance cert renew` for the running server).

pub mod challenges;
mod order;
pub mod status;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;

use crate::{
    config::Config,
    net::{
        certificates,
        tls::{CertificateInfo, LiveCertificate},
    },
};
use challenges::Http01Answers;
use status::Status;

/// The first retry after a failure comes after this, then twice as long each time, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// How often the task looks for a `cert renew` request.
const REQUEST_POLL: Duration = Duration::from_secs(1);

pub fn directory(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

pub fn certificate_path(data_dir: &Path) -> PathBuf {
    directory(data_dir).join("certificate.pem")
}

/// The names on the ACME certificate: `acme.domains`, or every name the box serves.
pub fn names(config: &Config) -> Vec<String> {
    if config.acme.domains.is_empty() {
        certificates::served_names(config)
    } else {
        config.acme.domains.clone()
    }
}

/// Serves the stored ACME certificate (or the self-signed one until the first is issued) and
/// starts the renewal task.
pub fn start(config: &Config, live: &LiveCertificate, http01: Http01Answers) -> anyhow::Result<()> {
    let dir = directory(&config.data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stored = std::fs::read_to_string(certificate_path(&config.data_dir)).ok();
    let current = stored.and_then(|pem| {
        live.set_pem(&pem, &pem).ok()?;
        CertificateInfo::of_pem(&pem).ok()
    });
    if current.is_none() {
        certificates::use_self_signed(config, live)?;
    }
    let task = Renewal {
        config: config.clone(),
        names: names(config),
        live: live.clone(),
        http01,
        current,
        status: status::read(&config.data_dir),
    };
    tokio::spawn(task.run());
    Ok(())
}

struct Renewal {
    config: Config,
    names: Vec<String>,
    live: LiveCertificate,
    http01: Http01Answers,
    /// The ACME certificate served now, if one was issued.
    current: Option<CertificateInfo>,
    status: Status,
}

impl Renewal {
    async fn run(mut self) {
        let mut failures = 0u32;
        let mut next_attempt = self.due_at();
        loop {
            let request = self.wait_until(next_attempt).await;
            if let Some(request) = &request {
                self.status.handled_request_at = Some(request.requested_at);
                if !request.force && status::now() < self.due_at() {
                    tracing::info!("certificate renewal requested, but none is due yet");
                    self.status.next_attempt_at = Some(next_attempt);
                    status::write(&self.config.data_dir, &self.status);
                    continue;
                }
            }
            tracing::info!(names = ?self.names, directory = %self.config.acme.url, "requesting a certificate");
            let result = self.attempt().await;
            self.status.last_attempt_at = Some(status::now());
            self.status.last_attempt_request_at = request.map(|r| r.requested_at);
            match result {
                Ok(info) => {
                    tracing::info!(names = ?info.names, issuer = %info.issuer, "new certificate in use");
                    self.current = Some(info);
                    self.status.last_error = None;
                    failures = 0;
                    next_attempt = self.due_at();
                }
                Err(e) => {
                    failures += 1;
                    let delay = FIRST_BACKOFF
                        .saturating_mul(2u32.saturating_pow(failures - 1))
                        .min(MAX_BACKOFF);
                    let message = format!("{e:#}");
                    tracing::error!(
                        retry_in = %humantime::format_duration(delay),
                        "getting a certificate failed; still serving the previous one: {message}"
                    );
                    self.status.last_error = Some(message);
                    next_attempt = status::now() + delay.as_secs() as i64;
                }
            }
            self.status.next_attempt_at = Some(next_attempt);
            status::write(&self.config.data_dir, &self.status);
        }
    }

    /// Sleeps until `deadline` (Unix seconds) or a `cert renew` request, which it returns.
    async fn wait_until(&self, deadline: i64) -> Option<status::RenewRequest> {
        let request_path = status::request_path(&self.config.data_dir);
        loop {
            if let Ok(bytes) = std::fs::read(&request_path) {
                let _ = std::fs::remove_file(&request_path);
                if let Ok(request) = serde_json::from_slice(&bytes) {
                    return Some(request);
                }
            }
            let left = deadline - status::now();
            if left <= 0 {
                return None;
            }
            tokio::time::sleep(REQUEST_POLL.min(Duration::from_secs(left as u64))).await;
        }
    }

    /// When the current certificate should be renewed (now when there is none or its names
    /// are not the configured ones).
    fn due_at(&self) -> i64 {
        let Some(current) = &self.current else {
            return 0;
        };
        let mut have = current.names.clone();
        let mut want = self.names.clone();
        have.sort();
        want.sort();
        if have != want {
            return 0;
        }
        match self.config.acme.reprovision_threshold {
            Some(threshold) => current.not_after - threshold.0.as_secs() as i64,
            None => current.not_after - (current.not_after - current.not_before) / 3,
        }
    }

    async fn attempt(&self) -> anyhow::Result<CertificateInfo> {
        let issued = order::issue(
            &self.config.acme,
            &self.names,
            &self.config.data_dir,
            order::Responders {
                http01: &self.http01,
                live: &self.live,
            },
        )
        .await?;
        let pem = format!("{}{}", issued.key_pem, issued.chain_pem);
        let info = CertificateInfo::of_pem(&issued.chain_pem)?;
        // Checked before anything is replaced: a pair that does not load is an error, not a swap.
        crate::net::tls::certified_key(&issued.chain_pem, &issued.key_pem)?;
        let path = certificate_path(&self.config.data_dir);
        crate::config::write::write_atomically(&path, pem.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.live.set_pem(&issued.chain_pem, &issued.key_pem)?;
        Ok(info)
    }
}
