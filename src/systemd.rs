//! Talks to systemd when it runs the appliance as a `Type=notify` service: READY once every
//! listener is bound (so `systemctl start` returns when the server answers), RELOADING around a
//! SIGHUP, STOPPING at shutdown, and watchdog pings that only go out while the runtime and the
//! database still answer, so that a wedged process is restarted. Outside systemd (no
//! `NOTIFY_SOCKET`) every call does nothing.

use std::{sync::Arc, time::Duration};

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use crate::services::Services;

/// How long a health check may take before the watchdog ping is skipped.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    // systemd wants the monotonic time with RELOADING=1 (sd_notify(3)) to tell reloads apart.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pings systemd's watchdog at half its interval while the server is healthy: while a database
/// read completes when `services` is given (the homeserver), while the runtime runs otherwise
/// (the setup wizard, which has no database yet). Nothing when the unit has no `WatchdogSec`.
pub fn spawn_watchdog(services: Option<Arc<Services>>) -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = interval / 2;
    tracing::debug!(?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(services) = &services else {
                notify(&[NotifyState::Watchdog]);
                continue;
            };
            match tokio::time::timeout(HEALTH_TIMEOUT, services.check_health()).await {
                Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
                Ok(Err(e)) => tracing::error!(error = %e, "health check failed; no watchdog ping"),
                Err(_) => tracing::error!("health check timed out; no watchdog ping"),
            }
        }
    }))
}
