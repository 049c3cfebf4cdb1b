//! The one-time setup token: only someone who can read the box's data directory (or its log)
//! gets past the wizard's first page. Wrong guesses wait longer and longer, one at a time.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

/// The token's file in the data directory.
pub const TOKEN_FILE: &str = "setup-token";

/// Longest wait before a guess is answered.
const MAX_DELAY: Duration = Duration::from_secs(8);

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

/// Checks guesses against the token.
pub struct TokenGuard {
    token: String,
    /// Wrong guesses so far; held while a guess is checked, so guesses queue instead of running
    /// in parallel.
    failures: Mutex<u32>,
}

impl TokenGuard {
    pub fn new(token: String) -> Self {
        Self {
            token,
            failures: Mutex::new(0),
        }
    }

    /// Whether `guess` is the token. After n wrong guesses, every guess waits 250 ms * 2^(n-1)
    /// (at most 8 s) before it is answered.
    pub async fn check(&self, guess: &str) -> bool {
        let mut failures = self.failures.lock().await;
        if *failures > 0 {
            tokio::time::sleep(delay_after(*failures)).await;
        }
        let right: bool = guess.trim().as_bytes().ct_eq(self.token.as_bytes()).into();
        if right {
            *failures = 0;
        } else {
            *failures = failures.saturating_add(1);
        }
        right
    }
}

fn delay_after(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_and_is_bounded() {
        assert_eq!(delay_after(1), Duration::from_millis(250));
        assert_eq!(delay_after(3), Duration::from_secs(1));
        assert_eq!(delay_after(100), MAX_DELAY);
    }

    #[tokio::test]
    async fn only_the_token_passes() {
        let guard = TokenGuard::new("abc".into());
        assert!(!guard.check("abd").await);
        assert!(!guard.check("").await);
        assert!(guard.check("abc\n").await);
    }
}
