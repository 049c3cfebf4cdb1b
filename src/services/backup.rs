//! Backups that restore: `appliance admin backup DEST` (also run nightly by the server with
//! `backup_schedule`), `admin verify-backup` and `admin restore`.
//!
//! A backup is a folder:
//!
//! ```text
//! manifest.json                    what is in it: SHA-256 and size of every file, the version of
//!                                  the binary that made it, the database's schema version
//! config.yaml                      the config file
//! data/appliance.db                the database (one self-contained SQLite file)
//! data/signing.key, data/turn_shared_secret, data/acme/…, data/tls/…   keys (those that exist)
//! media/content/ab/cd/<sha256>     every media file the database points at
//! ```
//!
//! It is consistent without stopping the server: the database is copied first, as one read
//! transaction saw it (SQLite's online backup API, `storage::backup`), then the media files its
//! rows name. Media files are immutable and named by their content, so each is either the one
//! the copy means or gone (deleted after the copy was made: the manifest lists it as missing).
//! Thumbnails are a cache and are left out. The folder is written under a temporary name and
//! renamed into place last, so a folder with the final name is always complete.
//!
//! A restore checks every file against the manifest before anything is replaced, holds the data
//! directory's lock (so no server runs meanwhile), refuses to replace a database or a different
//! key or config without `--force`, and puts each file in place with a rename (the database
//! last; what it replaces is kept beside as `<name>.before-restore`).

use std::{
    collections::BTreeSet,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{DATABASE_FILE, data_dir_lock::DataDirLock, media::store::fan_out};
use crate::{
    config::{Config, backup::TimeOfDay, write::write_atomically},
    shutdown::BackgroundTasks,
};

pub const MANIFEST_FILE: &str = "manifest.json";
const FORMAT: &str = "matrix-appliance-backup";
const FORMAT_VERSION: u32 = 1;

/// The names of the files inside a backup.
const CONFIG_ENTRY: &str = "config.yaml";
const DATA_PREFIX: &str = "data/";
const MEDIA_PREFIX: &str = "media/";

/// The files of the data directory a backup keeps besides the database: the server's signing
/// key (its identity for other servers), the generated TURN secret, the ACME account and
/// certificate (so a restore does not need a new one), the self-signed certificate (whose
/// fingerprint clients may have accepted). Whatever else is there is made again at start.
const DATA_FILES: [&str; 5] = [
    super::server_key::SIGNING_KEY_FILE,
    super::voip::SECRET_FILE,
    "acme/account.json",
    "acme/certificate.pem",
    "tls/self-signed.pem",
];

/// Reads and writes go through a buffer of this size.
const COPY_BUFFER: usize = 256 * 1024;
/// A key or config file larger than this in a manifest is a damaged manifest.
const SMALL_FILE_LIMIT: u64 = 16 * 1024 * 1024;

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `matrix-appliance-backup`.
    pub format: String,
    pub format_version: u32,
    /// When the database was copied (RFC 3339, UTC) and the same in ms since the epoch.
    pub created: String,
    pub created_ms: i64,
    /// The version of the `appliance` binary that made the backup.
    pub appliance_version: String,
    /// The database's schema version (migrations applied).
    pub schema_version: i64,
    pub server_name: String,
    pub files: Vec<FileEntry>,
    /// Media the database points at whose file was not there to copy (deleted after the
    /// database was copied, or lost before): hex SHA-256.
    #[serde(default)]
    pub missing_media: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup folder, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// What a file of a backup is, from its path in the manifest. Anything else is refused, so a
/// manifest can never make a restore write outside the places below.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Database,
    Config,
    /// One of [`DATA_FILES`].
    DataFile(&'static str),
    /// A media content, by its SHA-256.
    Media(String),
}

impl Item {
    fn of(path: &str) -> Option<Self> {
        if path == CONFIG_ENTRY {
            return Some(Self::Config);
        }
        if let Some(name) = path.strip_prefix(DATA_PREFIX) {
            if name == DATABASE_FILE {
                return Some(Self::Database);
            }
            return DATA_FILES
                .iter()
                .find(|f| **f == name)
                .map(|f| Self::DataFile(f));
        }
        let sha256 = path.strip_prefix(MEDIA_PREFIX)?.rsplit('/').next()?;
        (is_sha256(sha256) && path == media_entry(sha256)).then(|| Self::Media(sha256.to_owned()))
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn media_entry(sha256: &str) -> String {
    let relative = Path::new("content").join(fan_out(sha256));
    format!("{MEDIA_PREFIX}{}", relative.to_string_lossy())
}

/// What [`create`] made.
pub struct Made {
    pub path: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub media: usize,
    pub missing_media: Vec<String>,
    pub schema_version: i64,
}

/// Writes a backup of the running (or stopped) server into `dest`, a folder that must not
/// exist yet (or be empty). `stop` set meanwhile abandons it, leaving nothing behind.
pub fn create(config: &Config, dest: &Path, stop: &AtomicBool) -> anyhow::Result<Made> {
    let name = dest
        .file_name()
        .with_context(|| format!("{} is not a folder name", dest.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some()) || dest.is_file() {
        bail!(
            "{} exists and is not empty: a backup goes into a new folder",
            dest.display()
        );
    }
    let database = config.data_dir.join(DATABASE_FILE);
    if !database.is_file() {
        bail!("no database at {}: nothing to back up", database.display());
    }
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let temp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if temp.exists() {
        fs::remove_dir_all(&temp)
            .with_context(|| format!("cannot remove the leftover {}", temp.display()))?;
    }
    let mut writer = BackupWriter::new(temp.clone())?;
    let made = writer.fill(config, stop);
    let made = made.and_then(|(manifest, media)| {
        writer.sync_dirs()?;
        fs::rename(&temp, dest)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), dest.display()))?;
        File::open(&parent)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", parent.display()))?;
        Ok(Made {
            path: dest.to_owned(),
            files: manifest.files.len(),
            bytes: manifest.files.iter().map(|f| f.size).sum(),
            media,
            missing_media: manifest.missing_media,
            schema_version: manifest.schema_version,
        })
    });
    if made.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    made
}

/// Fills a backup folder (under its temporary name), noting what it writes.
struct BackupWriter {
    root: PathBuf,
    files: Vec<FileEntry>,
    dirs: BTreeSet<PathBuf>,
}

impl BackupWriter {
    fn new(root: PathBuf) -> anyhow::Result<Self> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Self {
            root: root.clone(),
            files: Vec::new(),
            dirs: BTreeSet::from([root]),
        })
    }

    fn fill(&mut self, config: &Config, stop: &AtomicBool) -> anyhow::Result<(Manifest, usize)> {
        let created = SystemTime::now();
        // First the database: the media copied next are those its rows point at.
        let db_copy = self.prepare(&format!("{DATA_PREFIX}{DATABASE_FILE}"))?;
        let snapshot =
            crate::storage::backup::snapshot(&config.data_dir.join(DATABASE_FILE), &db_copy)
                .context("cannot copy the database")?;
        let (size, sha256) = hash_file(&db_copy, true)
            .with_context(|| format!("cannot read {}", db_copy.display()))?;
        self.files.push(FileEntry {
            path: format!("{DATA_PREFIX}{DATABASE_FILE}"),
            size,
            sha256,
        });
        for name in DATA_FILES {
            self.copy_if_present(&format!("{DATA_PREFIX}{name}"), &config.data_dir.join(name))?;
        }
        if let Some(path) = &config.config_file {
            self.copy_if_present(CONFIG_ENTRY, path)?;
        }
        let store = config.media_store_path().join("content");
        let mut missing_media = Vec::new();
        let mut media = 0;
        for sha256 in &snapshot.media_sha256 {
            if stop.load(Ordering::Relaxed) {
                bail!("stopped");
            }
            if !is_sha256(sha256) {
                continue;
            }
            let entry = media_entry(sha256);
            let dest = self.prepare(&entry)?;
            match copy_hashing(&store.join(fan_out(sha256)), &dest) {
                Ok((size, found)) if found == *sha256 => {
                    media += 1;
                    self.files.push(FileEntry {
                        path: entry,
                        size,
                        sha256: found,
                    });
                }
                Ok((_, found)) => {
                    tracing::warn!(
                        %sha256,
                        %found,
                        "a media file does not match its name; left out of the backup"
                    );
                    let _ = fs::remove_file(&dest);
                    missing_media.push(sha256.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing_media.push(sha256.clone());
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot copy media {sha256}"));
                }
            }
        }
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            created: humantime::format_rfc3339_seconds(created).to_string(),
            created_ms: millis(created),
            appliance_version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version: snapshot.schema_version,
            server_name: config.server_name.clone(),
            files: std::mem::take(&mut self.files),
            missing_media,
        };
        let path = self.root.join(MANIFEST_FILE);
        let mut file = new_file(&path)?;
        serde_json::to_writer_pretty(&mut file, &manifest)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        Ok((manifest, media))
    }

    /// The path of `entry` in the backup, with its folders made.
    fn prepare(&mut self, entry: &str) -> anyhow::Result<PathBuf> {
        let path = self.root.join(entry);
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir {
            if self.dirs.contains(d) {
                break;
            }
            missing.push(d.to_owned());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            match fs::DirBuilder::new().mode(0o700).create(&d) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(e).with_context(|| format!("cannot create {}", d.display()));
                }
                _ => {}
            }
            self.dirs.insert(d);
        }
        Ok(path)
    }

    fn copy_if_present(&mut self, entry: &str, source: &Path) -> anyhow::Result<()> {
        if !source.exists() {
            return Ok(());
        }
        let dest = self.prepare(entry)?;
        let (size, sha256) = copy_hashing(source, &dest)
            .with_context(|| format!("cannot copy {}", source.display()))?;
        self.files.push(FileEntry {
            path: entry.to_owned(),
            size,
            sha256,
        });
        Ok(())
    }

    /// Makes the folders' entries durable (the files were synced as they were written).
    fn sync_dirs(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync {}", dir.display()))?;
        }
        Ok(())
    }
}

/// A new file, 0600: backups hold keys and secrets.
fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Copies `source` to the new file `dest` (synced), returning its size and hex SHA-256.
fn copy_hashing(source: &Path, dest: &Path) -> io::Result<(u64, String)> {
    let mut input = File::open(source)?;
    let mut output = new_file(dest)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; COPY_BUFFER];
    let mut size = 0;
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        output.write_all(&buffer[..n])?;
        size += n as u64;
    }
    output.sync_all()?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// The size and hex SHA-256 of a file; `sync` also makes it durable.
fn hash_file(path: &Path, sync: bool) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    if sync {
        file.sync_all()?;
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; COPY_BUFFER];
    let mut size = 0;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads `manifest.json` and sorts its files by what they are; refuses anything it does not
/// know, and a manifest without a database.
fn read_manifest(source: &Path) -> anyhow::Result<(Manifest, Vec<(Item, FileEntry)>)> {
    let path = source.join(MANIFEST_FILE);
    let text = fs::read(&path).with_context(|| {
        format!(
            "cannot read {}: is {} a backup folder?",
            path.display(),
            source.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        bail!(
            "{}: a backup format this binary does not know ({} version {})",
            path.display(),
            manifest.format,
            manifest.format_version
        );
    }
    let mut seen = BTreeSet::new();
    let mut items = Vec::with_capacity(manifest.files.len());
    for entry in &manifest.files {
        let item = Item::of(&entry.path)
            .with_context(|| format!("{}: unexpected file `{}`", path.display(), entry.path))?;
        if !seen.insert(entry.path.clone()) || !is_sha256(&entry.sha256) {
            bail!("{}: damaged entry for `{}`", path.display(), entry.path);
        }
        items.push((item, entry.clone()));
    }
    if !items.iter().any(|(item, _)| *item == Item::Database) {
        bail!("{}: the backup holds no database", path.display());
    }
    Ok((manifest, items))
}

fn mismatch(source: &Path, entry: &FileEntry, size: u64, sha256: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: damaged: the manifest says {} bytes with SHA-256 {}, the file has {size} bytes with \
         SHA-256 {sha256}",
        source.join(&entry.path).display(),
        entry.size,
        entry.sha256,
    )
}

/// Checks every file of a backup against its manifest.
pub fn verify(source: &Path) -> anyhow::Result<Manifest> {
    let (manifest, items) = read_manifest(source)?;
    for (_, entry) in &items {
        let path = source.join(&entry.path);
        let (size, sha256) =
            hash_file(&path, false).with_context(|| format!("cannot read {}", path.display()))?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(mismatch(source, entry, size, &sha256));
        }
    }
    Ok(manifest)
}

/// Where and how to restore.
pub struct RestoreRequest<'a> {
    pub source: &'a Path,
    /// Where the config file goes.
    pub config_path: &'a Path,
    /// `--data-dir`, when given; otherwise the backed-up config's `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// The config in place now, if any (used when the backup holds none).
    pub existing: Option<&'a Config>,
    /// Replace an existing database, keys and config.
    pub force: bool,
}

/// What [`restore`] did.
pub struct Restored {
    pub manifest: Manifest,
    pub data_dir: PathBuf,
    pub config_written: Option<PathBuf>,
    /// Where the database that was replaced is kept.
    pub previous_database: Option<PathBuf>,
    pub media: usize,
}

/// Restores a backup onto a stopped or new box.
pub fn restore(request: &RestoreRequest<'_>) -> anyhow::Result<Restored> {
    let source = request.source;
    let (manifest, items) = read_manifest(source)?;
    if manifest.schema_version > crate::storage::SCHEMA_VERSION {
        bail!(
            "the backup's database has schema version {}, newer than this binary understands \
             ({}): restore it with matrix-appliance {} or newer",
            manifest.schema_version,
            crate::storage::SCHEMA_VERSION,
            manifest.appliance_version
        );
    }
    // The small files first, checked in memory: the config says where everything goes.
    let mut small = Vec::new();
    for (item, entry) in &items {
        if matches!(item, Item::Config | Item::DataFile(_)) {
            small.push((item.clone(), read_verified(source, entry)?));
        }
    }
    let config_bytes = small
        .iter()
        .find(|(item, _)| *item == Item::Config)
        .map(|(_, bytes)| bytes.clone());
    let mut target = match &config_bytes {
        Some(bytes) => Config::parse(&String::from_utf8_lossy(bytes), request.config_path)
            .context("the backed-up config is not valid for this binary")?,
        None => request.existing.cloned().unwrap_or_default(),
    };
    if let Some(dir) = &request.data_dir {
        target.data_dir = dir.clone();
    }
    let data_dir = target.data_dir.clone();
    let media_root = target.media_store_path();

    let lock = DataDirLock::acquire(&data_dir).context("cannot restore now")?;
    let owner = Owner::of(&data_dir);

    let database = data_dir.join(DATABASE_FILE);
    let mut conflicts = Vec::new();
    if database.exists() {
        conflicts.push(database.display().to_string());
    }
    for (item, bytes) in &small {
        let path = match item {
            Item::Config => request.config_path.to_owned(),
            Item::DataFile(name) => data_dir.join(name),
            _ => continue,
        };
        if fs::read(&path).is_ok_and(|current| current != *bytes) {
            conflicts.push(path.display().to_string());
        }
    }
    if !conflicts.is_empty() && !request.force {
        bail!(
            "refusing to replace {} without --force (what is replaced is kept beside, \
             as <name>.before-restore)",
            conflicts.join(", ")
        );
    }

    // Stage the large files beside their final places (same file system, so a rename puts
    // them there), checking each against the manifest on the way. Nothing visible changes
    // until all of them are staged and good.
    let staged_db = data_dir.join(format!(".{DATABASE_FILE}.restoring"));
    let staging_media = media_root
        .join("tmp")
        .join(format!("restore-{}", std::process::id()));
    let staged = stage(source, &items, &staged_db, &staging_media, &owner);
    let media = match staged {
        Ok(media) => media,
        Err(e) => {
            let _ = fs::remove_file(&staged_db);
            let _ = fs::remove_dir_all(&staging_media);
            return Err(e.context("nothing was changed"));
        }
    };

    // Commit: media (named by content, so extra files are harmless), keys, config, then the
    // database, which makes the rest count.
    let committed = (|| -> anyhow::Result<(Option<PathBuf>, Option<PathBuf>)> {
        let content = media_root.join("content");
        for sha256 in &media {
            let dest = content.join(fan_out(sha256));
            let staged = staging_media.join(sha256);
            if dest.exists() {
                fs::remove_file(&staged)?;
                continue;
            }
            let dir = dest.parent().unwrap_or(&content);
            create_dirs(dir, &owner)?;
            fs::rename(&staged, &dest)
                .with_context(|| format!("cannot move media into {}", dest.display()))?;
            File::open(dir)?.sync_all()?;
        }
        let _ = fs::remove_dir(&staging_media);
        let mut config_written = None;
        for (item, bytes) in &small {
            let path = match item {
                Item::Config => request.config_path.to_owned(),
                Item::DataFile(name) => data_dir.join(name),
                _ => continue,
            };
            match fs::read(&path) {
                Ok(current) if current == *bytes => continue,
                Ok(current) => {
                    // A key or config replaced (with --force) is kept beside, as the database.
                    let kept = before_restore(&path);
                    write_atomically(&kept, &current, 0o600)
                        .with_context(|| format!("cannot write {}", kept.display()))?;
                    owner.apply(&kept)?;
                }
                Err(_) => {}
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_dirs(dir, &owner)?;
            }
            write_atomically(&path, bytes, 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            owner.apply(&path)?;
            if *item == Item::Config {
                config_written = Some(path);
            }
        }
        let previous = replace_database(&database, &staged_db)?;
        Ok((config_written, previous))
    })();
    drop(lock);
    let (config_written, previous_database) = committed
        .context("the restore stopped half-way; run it again with --force to finish it")?;
    Ok(Restored {
        manifest,
        data_dir,
        config_written,
        previous_database,
        media: media.len(),
    })
}

/// `<path>.before-restore`: where a restore keeps what it replaced.
fn before_restore(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".before-restore");
    PathBuf::from(name)
}

/// Reads a small file of a backup and checks it against its entry.
fn read_verified(source: &Path, entry: &FileEntry) -> anyhow::Result<Vec<u8>> {
    let path = source.join(&entry.path);
    if entry.size > SMALL_FILE_LIMIT {
        bail!("{}: damaged entry (too large)", path.display());
    }
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != entry.size || sha256 != entry.sha256 {
        return Err(mismatch(source, entry, bytes.len() as u64, &sha256));
    }
    Ok(bytes)
}

/// Copies the database and the media of a backup next to where they go, checking each.
/// Returns the media contents staged.
fn stage(
    source: &Path,
    items: &[(Item, FileEntry)],
    staged_db: &Path,
    staging_media: &Path,
    owner: &Owner,
) -> anyhow::Result<Vec<String>> {
    let copy_checked = |entry: &FileEntry, dest: &Path| -> anyhow::Result<()> {
        let from = source.join(&entry.path);
        let (size, sha256) = copy_hashing(&from, dest)
            .with_context(|| format!("cannot copy {} to {}", from.display(), dest.display()))?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(mismatch(source, entry, size, &sha256));
        }
        owner.apply(dest)
    };
    let _ = fs::remove_file(staged_db);
    let mut media = Vec::new();
    for (item, entry) in items {
        match item {
            Item::Database => copy_checked(entry, staged_db)?,
            Item::Media(sha256) => {
                if media.is_empty() {
                    let _ = fs::remove_dir_all(staging_media);
                    // As root, the media store's folders made here must be the service's.
                    create_dirs(staging_media, owner)?;
                }
                // The file's name is its content's SHA-256, and so must its checksum be.
                if entry.sha256 != *sha256 {
                    bail!(
                        "{}: damaged entry (checksum differs from the name)",
                        source.join(&entry.path).display()
                    );
                }
                copy_checked(entry, &staging_media.join(sha256))?;
                media.push(sha256.clone());
            }
            Item::Config | Item::DataFile(_) => {}
        }
    }
    Ok(media)
}

/// Puts the staged database in place. The one it replaces is kept, with its write-ahead log,
/// as `appliance.db.before-restore` (SQLite finds `<name>-wal` beside `<name>`); a log left
/// beside the new database would be replayed into it.
fn replace_database(database: &Path, staged: &Path) -> anyhow::Result<Option<PathBuf>> {
    let dir = database.parent().unwrap_or(Path::new("."));
    let side = |suffix: &str| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let kept = before_restore(database);
    let mut previous = None;
    if database.exists() {
        for old in [kept.clone(), side(".before-restore-wal")] {
            match fs::remove_file(&old) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", old.display()));
                }
                _ => {}
            }
        }
        if side("-wal").exists() {
            fs::rename(side("-wal"), side(".before-restore-wal"))?;
        }
        fs::rename(database, &kept)?;
        previous = Some(kept);
    }
    for leftover in [side("-wal"), side("-shm"), side("-journal")] {
        match fs::remove_file(&leftover) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", leftover.display()));
            }
            _ => {}
        }
    }
    fs::rename(staged, database)
        .with_context(|| format!("cannot move the database into {}", database.display()))?;
    File::open(dir)?.sync_all()?;
    Ok(previous)
}

/// When a restore runs as root, what it writes gets the owner of the data directory (the
/// service's user), or the server could not open it.
struct Owner(Option<(u32, u32)>);

impl Owner {
    fn of(data_dir: &Path) -> Self {
        if !nix::unistd::geteuid().is_root() {
            return Self(None);
        }
        let owner = fs::metadata(data_dir)
            .ok()
            .map(|m| (m.uid(), m.gid()))
            .filter(|(uid, _)| *uid != 0);
        let this = Self(owner);
        // The lock file was just made by this process.
        let _ = this.apply(&data_dir.join(super::data_dir_lock::LOCK_FILE));
        this
    }

    fn apply(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.0 {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
        }
        Ok(())
    }
}

/// `create_dir_all`, each folder made getting the owner.
fn create_dirs(dir: &Path, owner: &Owner) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(d) = current.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_owned());
        current = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o750).create(&d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("cannot create {}", d.display()));
            }
            _ => owner.apply(&d)?,
        }
    }
    Ok(())
}

// The nightly schedule.

/// Folders the schedule makes are named `backup-<UTC time>`; pruning touches only these.
const SCHEDULED_PREFIX: &str = "backup-";
/// The longest sleep between two looks at the clock, so that a clock set anew (or a box woken
/// from suspend) is noticed.
const CLOCK_CHECK: Duration = Duration::from_secs(600);

/// Starts the nightly backups of `backup_schedule`, when enabled. The task stops with the
/// server; a backup under way is then abandoned (its partial folder removed) before the server
/// exits.
pub fn spawn_schedule(services: &Arc<super::Services>, tasks: &BackgroundTasks) {
    let config = services.config.clone();
    if !config.backup_schedule.enabled {
        return;
    }
    tasks.spawn(|shutdown| async move {
        // What the blocking backup code looks at between files.
        let stop = Arc::new(AtomicBool::new(false));
        loop {
            let at = next_run(unix_now(), config.backup_schedule.time);
            tracing::info!(
                "next scheduled backup at {} into {}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at as u64)),
                config.backup_directory().display()
            );
            loop {
                let now = unix_now();
                if now >= at {
                    break;
                }
                let wait = Duration::from_secs((at - now) as u64).min(CLOCK_CHECK);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.stopping() => return,
                }
            }
            let job = {
                let config = config.clone();
                let stop = stop.clone();
                tokio::task::spawn_blocking(move || run_scheduled(&config, &stop))
            };
            tokio::pin!(job);
            let result = tokio::select! {
                result = &mut job => result,
                () = shutdown.stopping() => {
                    stop.store(true, Ordering::Relaxed);
                    let _ = job.await;
                    return;
                }
            };
            match result {
                Ok(Ok(made)) => tracing::info!(
                    path = %made.path.display(),
                    files = made.files,
                    bytes = made.bytes,
                    missing_media = made.missing_media.len(),
                    "scheduled backup made"
                ),
                Ok(Err(e)) => tracing::error!("scheduled backup failed: {e:#}"),
                Err(e) => tracing::error!("scheduled backup failed: {e}"),
            }
        }
    });
}

/// One scheduled backup, then the old ones go.
fn run_scheduled(config: &Config, stop: &AtomicBool) -> anyhow::Result<Made> {
    let directory = config.backup_directory();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    // A backup cut short (a crash, a stop) leaves its partial folder.
    for entry in fs::read_dir(&directory)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{SCHEDULED_PREFIX}")) && name.contains(".partial-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let now = SystemTime::now();
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let made = create(
        config,
        &directory.join(format!("{SCHEDULED_PREFIX}{stamp}")),
        stop,
    )?;
    let keep_ms = i64::from(config.backup_schedule.keep_days) * 24 * 3600 * 1000;
    prune(&directory, millis(now) - keep_ms, &made.path);
    Ok(made)
}

/// Deletes the scheduled backups made before `cutoff_ms`, never `newest`. A folder is only
/// deleted when its manifest says it is a backup: nothing else in the folder is touched.
fn prune(directory: &Path, cutoff_ms: i64, newest: &Path) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(SCHEDULED_PREFIX) || path == newest || !path.is_dir() {
            continue;
        }
        let manifest = fs::read(path.join(MANIFEST_FILE))
            .ok()
            .and_then(|text| serde_json::from_slice::<Manifest>(&text).ok());
        if let Some(manifest) = manifest
            && manifest.format == FORMAT
            && manifest.created_ms < cutoff_ms
        {
            match fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "deleted an old backup"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot delete an old backup: {e}")
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    millis(SystemTime::now()) / 1000
}

/// The next moment after `now` (Unix seconds) when the box's local clock shows `time`.
/// `mktime` works out the time zone and its daylight-saving rules; a time skipped by a
/// daylight-saving change runs an hour later that day.
fn next_run(now: i64, time: TimeOfDay) -> i64 {
    let at_day = |day_offset: i32| -> i64 {
        // SAFETY: `localtime_r` and `mktime` read and write only the `tm` passed to them
        // (`tm` is plain data, valid when zeroed).
        unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            let t = now as libc::time_t;
            if libc::localtime_r(&t, &mut tm).is_null() {
                return now + 24 * 3600;
            }
            tm.tm_mday += day_offset;
            tm.tm_hour = i32::from(time.hour);
            tm.tm_min = i32::from(time.minute);
            tm.tm_sec = i32::from(time.second);
            tm.tm_isdst = -1;
            // `time_t` is 32 bits on some of the boxes this runs on.
            #[allow(clippy::useless_conversion)]
            i64::from(libc::mktime(&mut tm))
        }
    };
    let today = at_day(0);
    if today > now { today } else { at_day(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_are_only_the_known_places() {
        let sha = "ab".repeat(32);
        assert_eq!(Item::of("data/appliance.db"), Some(Item::Database));
        assert_eq!(Item::of("config.yaml"), Some(Item::Config));
        assert_eq!(
            Item::of("data/signing.key"),
            Some(Item::DataFile("signing.key"))
        );
        assert_eq!(
            Item::of(&format!("media/content/ab/ab/{sha}")),
            Some(Item::Media(sha.clone()))
        );
        for bad in [
            "../etc/passwd".to_owned(),
            "data/../../x".to_owned(),
            "data/other".to_owned(),
            "/etc/shadow".to_owned(),
            format!("media/content/cd/ab/{sha}"),
            format!("media/content/ab/ab/../{sha}"),
            "media/content/ab/ab/ABAB".to_owned(),
            "manifest.json".to_owned(),
        ] {
            assert_eq!(Item::of(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_next_run_is_within_a_day_at_the_time_asked() {
        let now = unix_now();
        for (hour, minute) in [(0, 0), (3, 30), (12, 1), (23, 59)] {
            let time = TimeOfDay {
                hour,
                minute,
                second: 0,
            };
            let at = next_run(now, time);
            assert!(
                at > now && at <= now + 25 * 3600,
                "{hour}:{minute}: {at} vs {now}"
            );
            // Asking again from that moment gives the next day's.
            let after = next_run(at, time);
            assert!(after > at + 22 * 3600 && after <= at + 26 * 3600);
        }
    }

    fn manifest_at(dir: &Path, created_ms: i64) {
        fs::create_dir_all(dir).unwrap();
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            created: String::new(),
            created_ms,
            appliance_version: String::new(),
            schema_version: 1,
            server_name: "x".to_owned(),
            files: Vec::new(),
            missing_media: Vec::new(),
        };
        fs::write(
            dir.join(MANIFEST_FILE),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn pruning_deletes_only_old_scheduled_backups() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        manifest_at(&root.join("backup-old"), 1_000);
        manifest_at(&root.join("backup-new"), 5_000);
        manifest_at(&root.join("newest"), 1_000);
        manifest_at(&root.join("backup-newest"), 1_000);
        fs::create_dir_all(root.join("backup-not-a-backup")).unwrap();
        fs::write(root.join("backup-not-a-backup/notes"), "mine").unwrap();
        prune(root, 2_000, &root.join("backup-newest"));
        assert!(!root.join("backup-old").exists());
        for kept in [
            "backup-new",
            "newest",
            "backup-newest",
            "backup-not-a-backup",
        ] {
            assert!(root.join(kept).exists(), "{kept}");
        }
    }
}
