//! The one-time setup token: only someone who can read the box's data directory (or its log)
//! gets past the wizard's first page.
//!
//! A guess is compared with the token first, in constant time, and the right token is let in
//! at once whatever happened before: nobody can keep the owner out by guessing. Wrong guesses
//! are throttled per client address (IPv6 per /64, what one household or server gets): each
//! one from an address is answered later than the one before, the wait doubling with every
//! failure, and one that would wait longer than `MAX_DELAY` (8 s) is refused at once (`429`). So an
//! address gets at most one answer per `MAX_DELAY` once it has failed a few times, and holds at
//! most a handful of waiting requests. (With 128 random bits, guessing is hopeless anyway;
//! the throttle keeps guessers from costing the box anything.)

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use subtle::ConstantTimeEq;

/// The token's file in the data directory.
pub const TOKEN_FILE: &str = "setup-token";

/// Longest wait before a wrong guess is answered; a guess that would wait longer behind the
/// address's earlier ones is refused at once.
const MAX_DELAY: Duration = Duration::from_secs(8);

/// An address's failures are forgotten this long after its last answer.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Most addresses remembered; past that, new addresses share one entry.
const MAX_ADDRESSES: usize = 4096;

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Makes a new token (128 random bits, hex) and writes it to the data directory, mode 0600.
pub fn create(data_dir: &Path) -> io::Result<String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(data_dir)?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    crate::config::write::write_atomically(
        &path(data_dir),
        format!("{token}\n").as_bytes(),
        0o600,
    )?;
    Ok(token)
}

pub fn read(data_dir: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(data_dir))?.trim().to_owned())
}

/// Voids the token once setup is applied.
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}

/// What a guess gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Right,
    /// Wrong, answered after the address's delay.
    Wrong,
    /// Wrong, refused at once: the address's earlier wrong guesses are still being answered.
    Refused {
        retry_after: Duration,
    },
}

/// Checks guesses against the token.
pub struct TokenGuard {
    token: String,
    /// Wrong guesses per address (`None`: every address past `MAX_ADDRESSES`). Held only to
    /// read and update an entry, never while waiting.
    failures: Mutex<HashMap<Option<IpAddr>, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the address's latest wrong guess is answered.
    busy_until: Instant,
}

impl TokenGuard {
    pub fn new(token: String) -> Self {
        Self {
            token,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `guess` from `client`. The right token answers at once. A wrong one is answered
    /// after the address's earlier wrong guesses, 250 ms * 2^(n-1) (at most 8 s) after the
    /// previous one when the address failed n times; the first is answered at once.
    pub async fn check(&self, client: IpAddr, guess: &str) -> Verdict {
        let right: bool = guess.trim().as_bytes().ct_eq(self.token.as_bytes()).into();
        if right {
            return Verdict::Right;
        }
        match self.schedule_wrong(client, Instant::now()) {
            Ok(answer_at) => {
                tokio::time::sleep_until(answer_at.into()).await;
                Verdict::Wrong
            }
            Err(retry_after) => Verdict::Refused { retry_after },
        }
    }

    /// When a wrong guess from `client` at `now` is answered, or how long until the address
    /// may guess again if it must be refused.
    fn schedule_wrong(&self, client: IpAddr, now: Instant) -> Result<Instant, Duration> {
        let mut table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = Some(address_key(client));
        if !table.contains_key(&key) && table.len() >= MAX_ADDRESSES {
            table.retain(|_, f| now < f.busy_until + FORGET_AFTER);
            if table.len() >= MAX_ADDRESSES {
                key = None;
            }
        }
        let entry = table.entry(key).or_insert(Failures {
            count: 0,
            busy_until: now,
        });
        if now >= entry.busy_until + FORGET_AFTER {
            entry.count = 0;
        }
        let start = entry.busy_until.max(now);
        let answer_at = start + delay_after(entry.count);
        if answer_at - now > MAX_DELAY {
            return Err(start - now);
        }
        entry.count = entry.count.saturating_add(1);
        entry.busy_until = answer_at;
        Ok(answer_at)
    }
}

/// What guesses are counted under: the address, or for IPv6 its /64.
fn address_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The wait between two answers to an address that failed `failures` times.
fn delay_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(250)
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(MAX_DELAY)
}

/// The wizard's client: the TCP peer (setup mode believes no proxy headers).
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::web::client_ip::ClientIp::from_parts(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_delay_grows_and_is_bounded() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(1), Duration::from_millis(250));
        assert_eq!(delay_after(3), Duration::from_secs(1));
        assert_eq!(delay_after(100), MAX_DELAY);
    }

    #[tokio::test]
    async fn only_the_token_passes() {
        let guard = TokenGuard::new("abc".into());
        let client = ip("192.0.2.1");
        assert_eq!(guard.check(client, "abd").await, Verdict::Wrong);
        assert_eq!(guard.check(client, "").await, Verdict::Wrong);
        assert_eq!(guard.check(client, "abc\n").await, Verdict::Right);
    }

    #[test]
    fn wrong_guesses_queue_per_address_and_the_queue_is_bounded() {
        let guard = TokenGuard::new("abc".into());
        let now = Instant::now();
        let client = ip("192.0.2.1");
        // Twelve at once: answered at 0, 0.25, 0.75, 1.75, 3.75 and 7.75 s; the rest would wait
        // longer than 8 s and are refused until the queue has moved on.
        let answers: Vec<_> = (0..12).map(|_| guard.schedule_wrong(client, now)).collect();
        let waits: Vec<_> = answers
            .iter()
            .filter_map(|a| a.ok().map(|at| at - now))
            .collect();
        let millis = |ms| Duration::from_millis(ms);
        assert_eq!(
            waits,
            [
                millis(0),
                millis(250),
                millis(750),
                millis(1750),
                millis(3750),
                millis(7750)
            ]
        );
        assert!(
            answers[6..]
                .iter()
                .all(|a| *a == Err(Duration::from_millis(7750)))
        );
        // Another address, or another /64, is not affected; the same /64 is.
        assert_eq!(guard.schedule_wrong(ip("192.0.2.2"), now), Ok(now));
        assert_eq!(guard.schedule_wrong(ip("2001:db8:0:1::1"), now), Ok(now));
        assert_eq!(
            guard.schedule_wrong(ip("2001:db8:0:1::2"), now),
            Ok(now + millis(250))
        );
        // Failures are forgotten after a while.
        let later = now + MAX_DELAY + FORGET_AFTER;
        assert_eq!(guard.schedule_wrong(client, later), Ok(later));
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let guard = TokenGuard::new("abc".into());
        let now = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 100) {
            let _ = guard.schedule_wrong(IpAddr::from(n.to_be_bytes()), now);
        }
        let table = guard.failures.lock().unwrap();
        assert_eq!(table.len(), MAX_ADDRESSES + 1, "the rest share one entry");
        assert!(table[&None].count > 1);
    }

    #[tokio::test]
    async fn the_right_token_passes_at_once_whatever_the_failures() {
        let guard = TokenGuard::new("abc".into());
        let client = ip("192.0.2.1");
        for _ in 0..20 {
            let _ = guard.schedule_wrong(client, Instant::now());
        }
        let started = Instant::now();
        assert_eq!(guard.check(client, "abc").await, Verdict::Right);
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(
            guard.check(client, "abd").await,
            Verdict::Refused { .. }
        ));
    }
}
