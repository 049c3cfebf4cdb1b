//! One process per data directory. The server (and setup mode, which becomes the server) holds
//! an exclusive `flock` on `<data_dir>/appliance.lock` for its whole life, with its PID written
//! in the file, so a second `appliance serve` on the same directory refuses to start instead of
//! serving the same database beside the first (two stream positions in memory, two TURN relays,
//! each deleting the other's unfinished uploads). The kernel drops the lock when the process
//! ends, however it ends (`kill -9` included), so a stale file never blocks a start.
//!
//! The admin CLI does not take it: its commands work beside the running server. `admin restore`
//! does, so that no server starts while the data is being replaced.

use std::{
    fs::OpenOptions,
    io::{Read, Seek, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{FlockArg, flock},
};

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "appliance.lock";

/// Held while alive; the lock goes with the file descriptor.
pub struct DataDirLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data directory {} is in use by another appliance process ({}); stop it first \
         (`systemctl stop matrix-appliance` on an installed box)",
        dir.display(),
        pid.map_or_else(|| "PID unknown".to_owned(), |pid| format!("PID {pid}"))
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock the data directory: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Takes the lock without waiting (creating the data directory if needed), or says which
    /// process holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        super::create_private_dir(data_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io)?;
        match flock(file.as_raw_fd(), FlockArg::LockExclusiveNonblock) {
            Ok(()) => {}
            Err(Errno::EWOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: data_dir.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(errno) => return Err(io(errno.into())),
        }
        // The PID is for the message above: the lock itself is what counts.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = DataDirLock::acquire(&data_dir).unwrap();
        let pid = std::fs::read_to_string(data_dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock belongs to the open file, so a second open in the same process conflicts too.
        match DataDirLock::acquire(&data_dir) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {:?}", other.err()),
        }
        drop(first);
        DataDirLock::acquire(&data_dir).unwrap();
    }
}
