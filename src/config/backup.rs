//! `backup_schedule`: nightly backups made by the running server (not a Synapse key; Synapse
//! leaves backups to the operator). What a backup holds is in `services/backup.rs`.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::Config;

/// The folder under `data_dir` that scheduled backups go to when `directory` is unset.
pub const DEFAULT_BACKUP_DIR: &str = "backups";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSchedule {
    /// Make a backup every day while the server runs (the same as `appliance admin backup`).
    /// Off by default.
    pub enabled: bool,
    /// When, in the box's local time: `HH:MM` on a 24-hour clock (`HH:MM:SS` works too).
    pub time: TimeOfDay,
    /// Where the backups go, one folder each named `backup-<UTC date and time>`;
    /// `<data_dir>/backups` when unset. A folder on another disk survives the loss of this one
    /// (with the packaged service, allow it with a `ReadWritePaths=` drop-in).
    pub directory: Option<PathBuf>,
    /// Scheduled backups older than this many days are deleted after each new one (only the
    /// folders the schedule made; the newest is always kept).
    pub keep_days: u32,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        Self {
            enabled: false,
            time: TimeOfDay {
                hour: 3,
                minute: 30,
                second: 0,
            },
            directory: None,
            keep_days: 7,
        }
    }
}

impl Config {
    /// Where scheduled backups go.
    pub fn backup_directory(&self) -> PathBuf {
        self.backup_schedule
            .directory
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_BACKUP_DIR))
    }
}

/// A time of day on a 24-hour clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl TimeOfDay {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not a time of day (`HH:MM`, e.g. `03:30`)");
        let parts = text
            .trim()
            .split(':')
            .map(|p| {
                (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse::<u8>().ok())
                    .flatten()
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(invalid)?;
        let (hour, minute, second) = match parts[..] {
            [hour, minute] => (hour, minute, 0),
            [hour, minute, second] => (hour, minute, second),
            _ => return Err(invalid()),
        };
        if hour > 23 || minute > 59 || second > 59 {
            return Err(invalid());
        }
        Ok(Self {
            hour,
            minute,
            second,
        })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)?;
        if self.second != 0 {
            write!(f, ":{:02}", self.second)?;
        }
        Ok(())
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(de::Error::custom)
    }
}

pub(super) fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    if config.backup_schedule.keep_days == 0 {
        return Err((
            "backup_schedule.keep_days",
            "must be at least 1 (the newest backup is always kept)".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day() {
        let t = TimeOfDay::parse("03:30").unwrap();
        assert_eq!((t.hour, t.minute, t.second), (3, 30, 0));
        assert_eq!(t.to_string(), "03:30");
        let t = TimeOfDay::parse("23:59:58").unwrap();
        assert_eq!(t.to_string(), "23:59:58");
        for bad in [
            "24:00",
            "3:30",
            "03:60",
            "03",
            "03:30:60",
            "",
            "ab:cd",
            "03:30:00:00",
        ] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schedule_is_off_by_default_and_checked() {
        let config = Config::parse("", "c.yaml".as_ref()).unwrap();
        assert!(!config.backup_schedule.enabled);
        assert_eq!(config.backup_directory(), config.data_dir.join("backups"));
        let config = Config::parse(
            "backup_schedule: {enabled: true, time: \"04:15\", directory: /mnt/b, keep_days: 3}",
            "c.yaml".as_ref(),
        )
        .unwrap();
        assert_eq!(config.backup_schedule.time.to_string(), "04:15");
        assert_eq!(config.backup_directory(), PathBuf::from("/mnt/b"));
        let error = Config::parse("backup_schedule: {time: \"4:15\"}", "c.yaml".as_ref())
            .unwrap_err()
            .to_string();
        assert!(error.contains("backup_schedule.time"), "{error}");
        let error = Config::parse("backup_schedule: {keep_days: 0}", "c.yaml".as_ref())
            .unwrap_err()
            .to_string();
        assert!(error.contains("keep_days"), "{error}");
    }
}
