//! `appliance element install <tarball|dir> [--sha256 HEX]` and `appliance element status`.
//!
//! A release is unpacked beside the live one, checked (checksum, `index.html`), and swapped in
//! by renaming a symlink over the release path, so the server (which follows the link per
//! request) never serves half a release; a failure at any step leaves the old release in place.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use clap::Subcommand;
use sha2::{Digest, Sha256};

use crate::{config::Config, web::element};

#[derive(Subcommand)]
pub enum ElementCommand {
    /// Install or upgrade Element Web from a release tarball (.tar.gz) or an unpacked directory.
    Install {
        /// The release tarball or directory.
        source: PathBuf,
        /// The expected SHA-256 of the tarball, in hex; the install is refused if it differs.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Show the installed Element version and where it is served.
    Status,
}

pub fn run(config: &Config, command: ElementCommand) -> anyhow::Result<ExitCode> {
    match command {
        ElementCommand::Install { source, sha256 } => {
            let version = install(&config.element_install_dir(), &source, sha256.as_deref())?;
            println!("installed Element {version}");
            if !config.element.enabled {
                println!("note: `element.enabled` is off in the config, so it is not served yet");
            }
            Ok(ExitCode::SUCCESS)
        }
        ElementCommand::Status => status(config),
    }
}

fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let dir = element::release_dir(config);
    println!("path:    {}", dir.display());
    println!(
        "enabled: {}",
        if config.element.enabled { "yes" } else { "no" }
    );
    match &config.element.host {
        Some(host) => println!("served:  https://{host}/"),
        None => println!(
            "served:  under {}/ of the homeserver",
            config.element.path_prefix.trim_end_matches('/')
        ),
    }
    match element::installed_version(&dir) {
        Some(version) => {
            println!("version: {version}");
            Ok(ExitCode::SUCCESS)
        }
        None if dir.join("index.html").exists() => {
            println!("version: unknown (no `version` file)");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("version: not installed");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Installs `source` at `target` (a symlink into `<target>.releases/`); returns the version.
fn install(target: &Path, source: &Path, sha256: Option<&str>) -> anyhow::Result<String> {
    let releases = sibling(target, "releases");
    fs::create_dir_all(&releases)
        .with_context(|| format!("cannot create {}", releases.display()))?;
    let stage = releases.join(format!(".incoming-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let result = (|| {
        unpack(source, sha256, &stage)?;
        let root = release_root(&stage)?;
        let version = element::installed_version(&root).unwrap_or_else(|| "unknown".to_owned());
        let name: String = version
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let destination = releases.join(format!("{name}-{}", crate::acme::status::now()));
        fs::rename(&root, &destination)?;
        swap_in(target, &destination, &releases)?;
        Ok(version)
    })();
    let _ = fs::remove_dir_all(&stage);
    result
}

fn unpack(source: &Path, sha256: Option<&str>, stage: &Path) -> anyhow::Result<()> {
    let metadata =
        fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if metadata.is_dir() {
        if sha256.is_some() {
            bail!(
                "--sha256 checks a tarball; {} is a directory",
                source.display()
            );
        }
        return copy_dir(source, stage);
    }
    let bytes = fs::read(source)?;
    if let Some(expected) = sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            bail!(
                "checksum mismatch for {}: expected {expected}, got {actual}; nothing was changed",
                source.display()
            );
        }
    }
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(bytes.as_slice()))
    } else {
        Box::new(bytes.as_slice())
    };
    fs::create_dir_all(stage)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    // `unpack` refuses entries that would land outside `stage` (`..`, absolute paths).
    archive
        .unpack(stage)
        .with_context(|| format!("cannot unpack {}", source.display()))?;
    Ok(())
}

/// The directory with `index.html`: the stage itself, or its one top-level directory (release
/// tarballs hold `element-vX.Y.Z/`).
fn release_root(stage: &Path) -> anyhow::Result<PathBuf> {
    if stage.join("index.html").is_file() {
        return Ok(stage.to_owned());
    }
    let entries: Vec<_> = fs::read_dir(stage)?.collect::<Result<_, _>>()?;
    if let [only] = entries.as_slice()
        && only.file_type()?.is_dir()
        && only.path().join("index.html").is_file()
    {
        return Ok(only.path());
    }
    bail!("this is not an Element release: no index.html at its top")
}

/// Points `target` at `release` atomically, then removes releases older than the previous one.
fn swap_in(target: &Path, release: &Path, releases: &Path) -> anyhow::Result<()> {
    let release = &fs::canonicalize(release)?;
    let previous = fs::read_link(target).ok();
    if let Ok(metadata) = fs::symlink_metadata(target)
        && metadata.is_dir()
    {
        // A directory the operator unpacked by hand: kept as the previous release.
        let kept = releases.join(format!("previous-{}", crate::acme::status::now()));
        fs::rename(target, &kept)?;
    }
    let link = sibling(target, "new-link");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(release, &link)?;
    fs::rename(&link, target).with_context(|| format!("cannot replace {}", target.display()))?;
    for entry in fs::read_dir(releases)?.flatten() {
        let path = fs::canonicalize(entry.path()).unwrap_or_else(|_| entry.path());
        let keep = &path == release
            || previous.as_deref() == Some(path.as_path())
            || entry.file_name().to_string_lossy().starts_with('.');
        if !keep {
            let _ = fs::remove_dir_all(&path);
        }
    }
    Ok(())
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    target.with_file_name(name)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let destination = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &destination)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &destination)?;
        }
    }
    Ok(())
}
