//! Certificates from an ACME CA (Let's Encrypt by default): the renewal task that keeps the
//! live certificate fresh. It orders one certificate for every name the box serves, renews at a
//! random point of the CA's suggested renewal window when the CA offers ACME Renewal Information
//! (RFC 9773, asked again when the CA's `Retry-After` says; the new order names the certificate
//! it `replaces`), otherwise when a third of the lifetime is left (or
//! `acme.reprovision_threshold` before expiry), retries
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
/// Bounds on how often the CA's renewal information is fetched, whatever its `Retry-After`
/// says (RFC 9773 §4.3.2 suggests hours; a broken header must not make a busy loop).
const ARI_MIN_POLL: Duration = Duration::from_secs(60);
const ARI_MAX_POLL: Duration = Duration::from_secs(24 * 3600);

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
        Some((CertificateInfo::of_pem(&pem).ok()?, pem))
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
        ari: None,
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
    /// The ACME certificate served now (and its PEM), if one was issued.
    current: Option<(CertificateInfo, String)>,
    /// The CA's renewal information for it, when the CA offers it.
    ari: Option<Ari>,
    status: Status,
}

/// The CA's suggested window (RFC 9773) and the point in it this box picked.
struct Ari {
    window: (i64, i64),
    renew_at: i64,
    ask_again_at: i64,
}

/// A uniformly random second of `[start, end]` (RFC 9773 §4.2: spreads the CA's load).
fn point_in(start: i64, end: i64) -> i64 {
    let span = end.saturating_sub(start).max(0) as u64;
    start + (rand::random::<u64>() % (span + 1)) as i64
}

impl Renewal {
    async fn run(mut self) {
        let mut failures = 0u32;
        let mut next_attempt = self.due_at();
        loop {
            if self.refresh_renewal_info().await && failures == 0 {
                next_attempt = self.due_at();
                self.status.next_attempt_at = Some(next_attempt);
                status::write(&self.config.data_dir, &self.status);
            }
            let wake_at = match &self.ari {
                Some(ari) => next_attempt.min(ari.ask_again_at),
                None => next_attempt,
            };
            let request = self.wait_until(wake_at).await;
            if request.is_none() && status::now() < next_attempt {
                // Woke to ask the CA again about the window.
                continue;
            }
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
                Ok(issued) => {
                    let info = &issued.0;
                    tracing::info!(names = ?info.names, issuer = %info.issuer, "new certificate in use");
                    self.current = Some(issued);
                    self.ari = None;
                    self.status.renewal_window = None;
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

    /// Asks the CA for the current certificate's renewal window when none is known or the CA's
    /// `Retry-After` has passed. Returns whether the schedule may have changed. Failing to ask
    /// is not an error: the lifetime rule still holds.
    async fn refresh_renewal_info(&mut self) -> bool {
        let Some((_, pem)) = &self.current else {
            return false;
        };
        if self
            .ari
            .as_ref()
            .is_some_and(|ari| status::now() < ari.ask_again_at)
        {
            return false;
        }
        match order::renewal_window(&self.config.acme, &self.config.data_dir, pem).await {
            Ok(Some(window)) => {
                let same = self
                    .ari
                    .as_ref()
                    .filter(|ari| ari.window == (window.start, window.end));
                // A window that did not change keeps its point; a new one gets a new point.
                let renew_at = match same {
                    Some(ari) => ari.renew_at,
                    None => point_in(window.start, window.end),
                };
                let ask_again = window.ask_again_in.clamp(ARI_MIN_POLL, ARI_MAX_POLL);
                if same.is_none() {
                    tracing::info!(
                        window_start = window.start,
                        window_end = window.end,
                        renew_at,
                        explanation = window.explanation_url.as_deref().unwrap_or(""),
                        "the CA's renewal information (ARI) sets the renewal time"
                    );
                }
                self.ari = Some(Ari {
                    window: (window.start, window.end),
                    renew_at,
                    ask_again_at: status::now() + ask_again.as_secs() as i64,
                });
                self.status.renewal_window = Some((window.start, window.end));
                true
            }
            Ok(None) => {
                tracing::debug!("the CA offers no renewal information; renewing by lifetime");
                // Not asked again until the next certificate.
                self.ari = Some(Ari {
                    window: (0, 0),
                    renew_at: i64::MAX,
                    ask_again_at: i64::MAX,
                });
                self.status.renewal_window = None;
                true
            }
            Err(e) => {
                tracing::warn!("{e:#}; renewing by lifetime until the CA answers");
                let keep = self.ari.take().filter(|ari| ari.renew_at != i64::MAX);
                self.ari = Some(Ari {
                    ask_again_at: status::now() + ARI_MIN_POLL.as_secs() as i64,
                    ..keep.unwrap_or(Ari {
                        window: (0, 0),
                        renew_at: i64::MAX,
                        ask_again_at: 0,
                    })
                });
                false
            }
        }
    }

    /// When the current certificate should be renewed (now when there is none or its names
    /// are not the configured ones): at the point picked in the CA's window, or else when a
    /// third of the lifetime (or `reprovision_threshold`) is left.
    fn due_at(&self) -> i64 {
        let Some((current, _)) = &self.current else {
            return 0;
        };
        let mut have = current.names.clone();
        let mut want = self.names.clone();
        have.sort();
        want.sort();
        if have != want {
            return 0;
        }
        let by_lifetime = match self.config.acme.reprovision_threshold {
            Some(threshold) => current.not_after - threshold.0.as_secs() as i64,
            None => current.not_after - (current.not_after - current.not_before) / 3,
        };
        match &self.ari {
            Some(ari) if ari.renew_at != i64::MAX => ari.renew_at,
            _ => by_lifetime,
        }
    }

    async fn attempt(&self) -> anyhow::Result<(CertificateInfo, String)> {
        let issued = order::issue(
            &self.config.acme,
            &self.names,
            &self.config.data_dir,
            order::Responders {
                http01: &self.http01,
                live: &self.live,
            },
            self.current.as_ref().map(|(_, pem)| pem.as_str()),
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
        Ok((info, pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewal_of(not_before: i64, not_after: i64, ari: Option<Ari>) -> Renewal {
        let info = CertificateInfo {
            names: vec!["example.test".to_owned()],
            issuer: "CA".to_owned(),
            not_before,
            not_after,
        };
        let mut config = Config::default();
        config.acme.domains = vec!["example.test".to_owned()];
        Renewal {
            names: names(&config),
            config,
            live: LiveCertificate::new(),
            http01: Http01Answers::default(),
            current: Some((info, String::new())),
            ari,
            status: Status::default(),
        }
    }

    #[test]
    fn the_point_is_inside_the_window() {
        for _ in 0..1000 {
            let at = point_in(1000, 1010);
            assert!((1000..=1010).contains(&at), "{at}");
        }
        assert_eq!(point_in(5, 5), 5);
        assert_eq!(
            point_in(9, 5),
            9,
            "a window that ends before it starts: its start"
        );
    }

    #[test]
    fn the_cas_window_wins_over_the_lifetime_rule() {
        let without = renewal_of(0, 90 * 86400, None);
        assert_eq!(without.due_at(), 60 * 86400, "a third of the lifetime left");
        let window = Ari {
            window: (10 * 86400, 11 * 86400),
            renew_at: 10 * 86400 + 5,
            ask_again_at: 0,
        };
        let with = renewal_of(0, 90 * 86400, Some(window));
        assert_eq!(with.due_at(), 10 * 86400 + 5);
        let no_ari = Ari {
            window: (0, 0),
            renew_at: i64::MAX,
            ask_again_at: i64::MAX,
        };
        let none_offered = renewal_of(0, 90 * 86400, Some(no_ari));
        assert_eq!(none_offered.due_at(), 60 * 86400);
    }
}
