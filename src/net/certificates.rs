//! Where the live certificate comes from: PEM files the operator manages (re-read when they
//! change, or on SIGHUP), ACME (`crate::acme`), or a self-signed certificate made at first start
//! so that a box on a LAN serves TLS before anything else is set up.
//!
//! The names the box serves (`served_names`) are what an ACME order and the self-signed
//! certificate cover.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context;

use super::tls::LiveCertificate;
use crate::config::Config;

/// How often the PEM files are checked for changes (SIGHUP re-reads them at once).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Acme,
    Files { chain: PathBuf, key: PathBuf },
    SelfSigned,
}

impl Source {
    pub fn of(config: &Config) -> Self {
        if config.acme.enabled {
            Self::Acme
        } else if let (Some(chain), Some(key)) =
            (&config.tls_certificate_path, &config.tls_private_key_path)
        {
            Self::Files {
                chain: chain.clone(),
                key: key.clone(),
            }
        } else {
            Self::SelfSigned
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Self::Acme => "ACME",
            Self::Files { .. } => "PEM files",
            Self::SelfSigned => "self-signed",
        }
    }
}

/// The self-signed certificate and its key, in one PEM file (key first).
pub fn self_signed_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("self-signed.pem")
}

/// Every host name this box answers for: the host of `public_baseurl`, Element's host, and the
/// server name when this box serves its `/.well-known/matrix/server`.
pub fn served_names(config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    };
    if let Some(url) = &config.public_baseurl {
        add(&host_of_url(url));
    } else {
        add(host_without_port(&config.server_name));
    }
    if let Some(host) = &config.element.host {
        add(host);
    }
    if config.serve_server_wellknown {
        add(host_without_port(&config.server_name));
    }
    names
}

/// The host of an `http(s)://host[:port]/...` URL.
pub fn host_of_url(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    host_without_port(authority).to_owned()
}

/// `example.org:8448` → `example.org`, `[::1]:8448` → `::1`.
pub fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Loads (or makes, the first time) the self-signed certificate and serves it.
pub fn use_self_signed(config: &Config, live: &LiveCertificate) -> anyhow::Result<()> {
    let path = self_signed_path(&config.data_dir);
    if let Ok(pem) = std::fs::read_to_string(&path)
        && live.set_pem(&pem, &pem).is_ok()
    {
        return Ok(());
    }
    let mut names = served_names(config);
    if !names.iter().any(|n| n == "localhost") {
        names.push("localhost".to_owned());
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "matrix-appliance self-signed");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let certificate = params.self_signed(&key)?;
    let pem = format!("{}{}", key.serialize_pem(), certificate.pem());
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    crate::config::write::write_atomically(&path, pem.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    live.set_pem(&pem, &pem)?;
    tracing::info!(path = %path.display(), "made a self-signed certificate");
    Ok(())
}

/// Loads the operator's PEM files (a failure here stops the start: the operator asked for them),
/// then re-reads them whenever they change or SIGHUP arrives. A broken new pair is logged and
/// the working one kept.
pub fn use_files(chain: PathBuf, key: PathBuf, live: &LiveCertificate) -> anyhow::Result<()> {
    load_files(&chain, &key, live)?;
    let live = live.clone();
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        let mut seen = modified(&chain, &key);
        loop {
            let signalled = tokio::select! {
                _ = tokio::time::sleep(FILE_CHECK_INTERVAL) => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            let now = modified(&chain, &key);
            if !signalled && now == seen {
                continue;
            }
            seen = now;
            match load_files(&chain, &key, &live) {
                Ok(()) => {
                    tracing::info!(certificate = %chain.display(), "reloaded the TLS certificate")
                }
                Err(e) => tracing::error!(
                    certificate = %chain.display(),
                    "cannot reload the TLS certificate; still serving the previous one: {e:#}"
                ),
            }
        }
    });
    Ok(())
}

fn load_files(chain: &Path, key: &Path, live: &LiveCertificate) -> anyhow::Result<()> {
    let chain_pem = std::fs::read_to_string(chain)
        .with_context(|| format!("cannot read {}", chain.display()))?;
    let key_pem =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    live.set_pem(&chain_pem, &key_pem)
        .with_context(|| format!("{} and {}", chain.display(), key.display()))
}

fn modified(chain: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (time(chain), time(key))
}
