//! The media files on disk: content stored once per SHA-256 under `content/`, thumbnails beside
//! it under `thumbnails/`, uploads streamed into `tmp/` first. Nothing here knows media IDs.
//!
//! An upload is hashed while it is written, fsynced, and only then renamed to its content path
//! (see [`MediaStore::commit`]), so a file under `content/` is always complete.
//!
//! Content lives at `content/ab/cd/<sha256>`; thumbnails under `thumbnails/ab/cd/<sha256>/`, named
//! by size, method and type, with no rows: a cache, made again if lost. An upload goes to `tmp/`
//! through a 256 KiB buffer and is cut off with `M_TOO_LARGE` past its limit (`max_upload_size`;
//! the router already refused a too-large `Content-Length`); leftovers there (a crash mid-upload)
//! are removed when the store is opened, once an hour old (the admin CLI opens the store too,
//! beside a running server's uploads).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// Files in `tmp/` untouched for this long are left-overs of a crash (an upload in progress
/// writes at least every `client_body_timeout`, and one waiting for its commit is seconds old).
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Writes to disk in pieces of this size: large enough for throughput, small enough that an
/// upload never holds much in memory.
const WRITE_BUFFER: usize = 256 * 1024;

pub struct MediaStore {
    root: PathBuf,
}

/// An upload received into `tmp/`, not yet part of the store. Dropping it deletes the file.
pub struct Received {
    temp: Option<PathBuf>,
    pub sha256: String,
    pub size: u64,
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

impl MediaStore {
    /// Creates the folders; left-over partial uploads of a previous run are deleted. Only old
    /// ones: the admin CLI opens the store too, beside a running server whose uploads in
    /// progress are in `tmp/`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let store = Self {
            root: root.to_owned(),
        };
        for dir in ["content", "thumbnails", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        for entry in fs::read_dir(root.join("tmp"))?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > LEFTOVER_AGE));
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(store)
    }

    pub fn content_path(&self, sha256: &str) -> PathBuf {
        self.root.join("content").join(fan_out(sha256))
    }

    /// The folder of every thumbnail of one content.
    fn thumbnail_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("thumbnails").join(fan_out(sha256))
    }

    /// Where the thumbnail `name` (its size, method and type) of a content is cached.
    pub fn thumbnail_path(&self, sha256: &str, name: &str) -> PathBuf {
        self.thumbnail_dir(sha256).join(name)
    }

    /// Streams a body into `tmp/`, hashing it on the way; refuses it with `M_TOO_LARGE` as soon
    /// as it passes `limit` bytes.
    pub async fn receive<S, E>(&self, mut body: S, limit: u64) -> Result<Received>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::error::Error + 'static,
    {
        let temp = self.root.join("tmp").join(format!(
            "upload-{}",
            hex::encode(rand::random::<[u8; 12]>())
        ));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| Error::io(format_args!("cannot create {}", temp.display()), &e))?;
        // From here on, dropping `received` deletes the temp file, whatever goes wrong.
        let mut received = Received {
            temp: Some(temp),
            sha256: String::new(),
            size: 0,
        };
        let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::body_unreadable("Upload interrupted", &e))?;
            received.size += chunk.len() as u64;
            if received.size > limit {
                return Err(Error::too_large(
                    "The upload is larger than max_upload_size",
                ));
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).await.map_err(write_error)?;
        }
        writer.flush().await.map_err(write_error)?;
        writer.into_inner().sync_all().await.map_err(write_error)?;
        received.sha256 = hex::encode(hasher.finalize());
        Ok(received)
    }

    /// Moves a received upload to its content path, unless that content is stored already (then
    /// the copy is dropped: identical uploads share one file). Blocking; the caller runs it
    /// inside the database write transaction, so that it cannot interleave with a deletion of
    /// the same content.
    pub fn commit(&self, mut received: Received) -> io::Result<()> {
        let Some(temp) = received.temp.take() else {
            return Ok(());
        };
        let path = self.content_path(&received.sha256);
        if path.exists() {
            let _ = fs::remove_file(&temp);
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        fs::File::open(dir)?.sync_all()
    }

    /// Deletes a content and its thumbnails (blocking).
    pub fn remove_content(&self, sha256: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.thumbnail_dir(sha256)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::remove_file(self.content_path(sha256)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Caches a thumbnail (blocking). It can always be made again, so a lost one costs nothing;
    /// the rename still keeps a half-written one from ever being served.
    pub fn put_thumbnail(&self, sha256: &str, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.thumbnail_path(sha256, name);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir)?;
        let temp = self
            .root
            .join("tmp")
            .join(format!("thumb-{}", hex::encode(rand::random::<[u8; 12]>())));
        fs::write(&temp, bytes)?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(path)
    }
}

/// `ab/cd/abcdef…`: at most 65536 folders of few files each, instead of one huge folder.
/// Under `content/` (backups use the same layout).
pub fn fan_out(sha256: &str) -> PathBuf {
    let prefix = |range: std::ops::Range<usize>| sha256.get(range).unwrap_or("__");
    Path::new(prefix(0..2)).join(prefix(2..4)).join(sha256)
}

fn write_error(e: io::Error) -> Error {
    Error::io("cannot write an upload", &e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn identical_content_is_stored_once_and_removed_with_its_thumbnails() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::open(dir.path()).unwrap();
        let body = || {
            futures_util::stream::iter([
                Ok::<_, std::io::Error>(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ])
        };
        let first = store.receive(body(), 100).await.unwrap();
        let second = store.receive(body(), 100).await.unwrap();
        assert_eq!(first.sha256, second.sha256);
        assert_eq!(first.size, 11);
        let sha = first.sha256.clone();
        store.commit(first).unwrap();
        store.commit(second).unwrap();
        assert_eq!(fs::read(store.content_path(&sha)).unwrap(), b"hello world");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        store.put_thumbnail(&sha, "32x32-crop", b"png").unwrap();
        store.remove_content(&sha).unwrap();
        assert!(!store.content_path(&sha).exists());
        assert!(!store.thumbnail_path(&sha, "32x32-crop").exists());
    }

    #[test]
    fn opening_the_store_deletes_only_old_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        MediaStore::open(dir.path()).unwrap();
        let (old, fresh) = (
            dir.path().join("tmp/upload-old"),
            dir.path().join("tmp/upload-new"),
        );
        fs::write(&old, b"crashed").unwrap();
        fs::write(&fresh, b"in progress").unwrap();
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - 2 * LEFTOVER_AGE)
            .unwrap();
        MediaStore::open(dir.path()).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists(), "an upload of the running server is kept");
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::open(dir.path()).unwrap();
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 20]))]);
        let error = store.receive(body, 10).await.err().unwrap();
        assert!(error.to_string().contains("M_TOO_LARGE"), "{error}");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
