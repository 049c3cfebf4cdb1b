//! `appliance cert status` and `appliance cert renew [--force]`: what the TLS listeners serve and
//! what the renewal task last did; a renewal request is handed to the running server (which
//! answers the CA's challenges) through the data directory.

use std::{process::ExitCode, time::Duration};

use anyhow::bail;
use clap::Subcommand;

use crate::{
    acme::{self, status},
    config::Config,
    net::{
        certificates::{self, Source},
        tls::CertificateInfo,
    },
};

/// How long the running server gets to pick a request up, and then to finish the renewal.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(15);
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Subcommand)]
pub enum CertCommand {
    /// Show the certificate in use (names, issuer, expiry) and the last renewal attempt.
    Status,
    /// Ask the running server to renew the ACME certificate now, if it is due (or always, with
    /// --force), and wait for the result.
    Renew {
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(config: Config, command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Status => status(&config),
        CertCommand::Renew { force } => renew(&config, force).await,
    }
}

fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let source = Source::of(config);
    println!("source:      {}", source.describe());
    let path = match &source {
        Source::Acme => acme::certificate_path(&config.data_dir),
        Source::Files { chain, .. } => chain.clone(),
        Source::SelfSigned => certificates::self_signed_path(&config.data_dir),
    };
    println!("file:        {}", path.display());
    let mut code = ExitCode::SUCCESS;
    match std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|pem| CertificateInfo::of_pem(&pem))
    {
        Ok(info) => {
            println!("names:       {}", info.names.join(", "));
            println!("issuer:      {}", info.issuer);
            println!("valid from:  {}", time(info.not_before));
            let left = (info.not_after - status::now()) / 86400;
            println!("expires:     {} ({left} days left)", time(info.not_after));
            if info.not_after < status::now() {
                code = ExitCode::FAILURE;
            }
        }
        Err(e) => {
            println!("certificate: none yet ({e:#})");
            code = ExitCode::FAILURE;
        }
    }
    if source == Source::Acme {
        println!("directory:   {}", config.acme.url);
        println!("wanted:      {}", acme::names(config).join(", "));
        let status = status::read(&config.data_dir);
        match (status.last_attempt_at, &status.last_error) {
            (None, _) => println!("last attempt: none"),
            (Some(at), None) => println!("last attempt: {} succeeded", time(at)),
            (Some(at), Some(error)) => {
                println!("last attempt: {} FAILED: {error}", time(at));
                code = ExitCode::FAILURE;
            }
        }
        match status.renewal_window {
            Some((start, end)) => println!(
                "renewal window (from the CA, ARI): {} to {}",
                time(start),
                time(end)
            ),
            None => println!("renewal window: none from the CA; renewing by lifetime"),
        }
        if let Some(next) = status.next_attempt_at {
            println!("next attempt: {}", time(next));
        }
    }
    Ok(code)
}

async fn renew(config: &Config, force: bool) -> anyhow::Result<ExitCode> {
    let source = Source::of(config);
    if source != Source::Acme {
        bail!(
            "the certificate comes from {} (acme.enabled is off): nothing to renew",
            source.describe()
        );
    }
    let requested_at = now_millis();
    let request = status::RenewRequest {
        requested_at,
        force,
    };
    let path = status::request_path(&config.data_dir);
    std::fs::create_dir_all(acme::directory(&config.data_dir))?;
    crate::config::write::write_atomically(&path, &serde_json::to_vec(&request)?, 0o600)?;
    if !wait(PICKUP_TIMEOUT, || !path.exists()).await {
        let _ = std::fs::remove_file(&path);
        bail!(
            "no running server picked the request up: is `appliance serve` running with this config?"
        );
    }
    eprintln!("the server is renewing the certificate…");
    let handled = wait(RENEWAL_TIMEOUT, || {
        status::read(&config.data_dir).handled_request_at >= Some(requested_at)
    })
    .await;
    if !handled {
        bail!("the renewal did not finish within {RENEWAL_TIMEOUT:?}; see `appliance cert status`");
    }
    let status = status::read(&config.data_dir);
    let attempted = status.last_attempt_request_at == Some(requested_at);
    if !attempted {
        println!(
            "not due yet; the next renewal is planned for {} (--force renews now)",
            status.next_attempt_at.map(time).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(error) = status.last_error {
        eprintln!("renewal failed: {error}");
        return Ok(ExitCode::FAILURE);
    }
    println!("renewed");
    self::status(config)
}

async fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn time(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
