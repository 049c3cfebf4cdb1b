//! `appliance admin backup|verify-backup|restore`: thin wrappers around `services::backup`.

use std::{path::PathBuf, process::ExitCode, sync::atomic::AtomicBool};

use clap::Args;

use crate::{config::Config, services::backup};

#[derive(Args)]
pub struct BackupArgs {
    /// The folder to write the backup into; it must not exist yet (or be empty).
    dest: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// A backup folder (the one holding `manifest.json`).
    source: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A backup folder (the one holding `manifest.json`).
    source: PathBuf,
    /// Replace an existing database, and keys or a config that differ from the backup's (each
    /// is kept beside as `<name>.before-restore`).
    #[arg(long)]
    force: bool,
}

/// Works beside the running server: the database is copied as one transaction sees it.
pub fn backup(config: &Config, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let made = backup::create(config, &args.dest, &AtomicBool::new(false))?;
    for sha256 in &made.missing_media {
        eprintln!(
            "warning: media {sha256} was deleted while the backup ran (or is lost); it is not \
             in the backup"
        );
    }
    println!(
        "backup written to {}: {} files, {} bytes (database schema {}, {} media files)",
        made.path.display(),
        made.files,
        made.bytes,
        made.schema_version,
        made.media
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let manifest = backup::verify(&args.source)?;
    println!(
        "{}: good: {} files of {} made {} by matrix-appliance {} (database schema {})",
        args.source.display(),
        manifest.files.len(),
        manifest.server_name,
        manifest.created,
        manifest.appliance_version,
        manifest.schema_version
    );
    Ok(ExitCode::SUCCESS)
}

/// `config_path`: where the config file goes; `data_dir`: `--data-dir` when given;
/// `existing`: the config in place, if there is one.
pub fn restore(
    args: RestoreArgs,
    config_path: PathBuf,
    data_dir: Option<PathBuf>,
    existing: Option<&Config>,
) -> anyhow::Result<ExitCode> {
    let restored = backup::restore(&backup::RestoreRequest {
        source: &args.source,
        config_path: &config_path,
        data_dir,
        existing,
        force: args.force,
    })?;
    let manifest = &restored.manifest;
    println!(
        "restored the backup of {} made {} into {} ({} files, {} media)",
        manifest.server_name,
        manifest.created,
        restored.data_dir.display(),
        manifest.files.len(),
        restored.media
    );
    if let Some(path) = &restored.config_written {
        println!("config written to {}", path.display());
    }
    if let Some(path) = &restored.previous_database {
        println!("the database it replaced is kept as {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
