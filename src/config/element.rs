//! Element Web, hosted by the appliance from an Element release directory, with its
//! `config.json` generated from this config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElementConfig {
    /// Serve Element Web (when a release is installed at `path`).
    pub enabled: bool,
    /// The Element release directory (the unpacked tarball). Unset means
    /// `<data_dir>/element`, where `appliance element install` puts it.
    pub path: Option<PathBuf>,
    /// Serve Element on this host name of its own (recommended: it keeps files people upload
    /// off Element's origin). Unset means under `path_prefix` of the homeserver's host.
    pub host: Option<String>,
    /// Where Element lives on the homeserver's host when `host` is unset.
    pub path_prefix: String,
    /// `brand` in Element's config.json.
    pub brand: String,
    /// `disable_custom_urls` in Element's config.json: hide the homeserver choice at login.
    pub disable_custom_urls: bool,
    /// `room_directory.servers` in Element's config.json. Empty means this server only.
    pub room_directory_servers: Vec<String>,
}

impl Default for ElementConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: None,
            host: None,
            path_prefix: "/element".to_owned(),
            brand: "Element".to_owned(),
            disable_custom_urls: false,
            room_directory_servers: Vec::new(),
        }
    }
}

/// Where the Debian package puts the Element release it ships (when it was built with one).
pub const PACKAGED_ELEMENT_DIR: &str = "/usr/share/matrix-appliance/element";

impl super::Config {
    /// Where `appliance element install` puts a release: `element.path`, or
    /// `<data_dir>/element`.
    pub fn element_install_dir(&self) -> PathBuf {
        self.element
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("element"))
    }

    /// The release that is served: `element.path` when set; otherwise one installed with
    /// `appliance element install`, else the one the package shipped, else (none installed)
    /// the install directory.
    pub fn element_release_dir(&self) -> PathBuf {
        let installed = self.element_install_dir();
        if self.element.path.is_some() || installed.join("index.html").is_file() {
            return installed;
        }
        let packaged = PathBuf::from(PACKAGED_ELEMENT_DIR);
        if packaged.join("index.html").is_file() {
            packaged
        } else {
            installed
        }
    }

    /// Whether an Element release is there to be served.
    pub fn element_installed(&self) -> bool {
        self.element_release_dir().join("index.html").is_file()
    }
}
