//! What must happen outside the box for it to be reachable, computed from the config: DNS
//! records, router ports, the well-known files of a delegated server name, and where Element is.
//! The wizard's finish page and `appliance setup checklist` show the same list.
//!
//! Also on the list: one `delegation_files` shared by every page that shows the well-known files;
//! for a plain-HTTP development server, just its address; Element only when a release is installed;
//! whether the TURN relay runs; a full or nearly full data disk (statvfs).

use std::net::IpAddr;

use serde_json::json;

use super::{answers::server_name_host, i18n::Catalogue};
use crate::{
    api::well_known::{delegated_server, public_baseurl},
    config::Config,
    net::certificates::host_of_url,
};

pub struct DnsRecord {
    pub name: String,
    /// `A`/`AAAA` or `CNAME`.
    pub kind: &'static str,
    pub value: String,
}

pub struct Port {
    pub protocol: &'static str,
    pub port: String,
    /// Catalogue key of what the port is for.
    pub purpose: &'static str,
}

pub struct WellKnown {
    /// `https://<server name>/.well-known/matrix/server` and `/client`.
    pub url: String,
    pub json: String,
}

pub struct Checklist {
    pub dns: Vec<DnsRecord>,
    pub ports: Vec<Port>,
    /// Empty unless the server name is delegated and its well-known files are served elsewhere.
    pub well_known: Vec<WellKnown>,
    /// Only when an Element release is installed: nothing is served there otherwise.
    pub element_url: Option<String>,
    /// Element is enabled but no release is installed (`appliance element install`).
    pub element_missing: bool,
    pub client_url: String,
    /// A development server (plain HTTP, no TLS listener, no proxy in front): its URL. Nothing
    /// outside the machine is to be set up then, so there are no DNS records or ports.
    pub development: Option<String>,
    /// Whether the TURN relay runs, when that is known (the relay is on and this process started
    /// it, or its status file says so); `None` when it is off or not started yet.
    pub turn_running: Option<bool>,
    /// The relay's ports, for the line that says whether it runs.
    pub turn_ports: String,
    /// The data directory's disk, when it is full or nearly full.
    pub disk: Option<DiskSpace>,
}

/// A data directory whose disk is (nearly) full: the database and media cannot grow.
pub struct DiskSpace {
    pub path: String,
    pub full: bool,
    pub available: u64,
    pub total: u64,
}

/// Less than this left and the disk is full for the server: SQLite's journal, a media upload
/// or a log line may not fit.
const DISK_FULL_BYTES: u64 = 100 * 1024 * 1024;
/// Less than this left (or less than 5 % of the disk) is worth a warning.
const DISK_LOW_BYTES: u64 = 1024 * 1024 * 1024;

impl DiskSpace {
    /// The disk of `dir` (or of its nearest existing parent, before the server made it), when
    /// it is full or nearly full; `None` when there is room or statvfs cannot tell.
    pub fn of(dir: &std::path::Path) -> Option<Self> {
        let dir = std::path::absolute(dir).ok()?;
        let existing = dir.ancestors().find(|p| p.exists())?;
        let (total, available) = statvfs(existing)?;
        Self::assess(&dir.display().to_string(), total, available)
    }

    /// The thresholds: full under 100 MiB, nearly full under 1 GiB or 5 % of the disk (at
    /// most 10 GiB, so a big disk is not "nearly full" with hundreds of gigabytes left).
    pub fn assess(path: &str, total: u64, available: u64) -> Option<Self> {
        let low = DISK_LOW_BYTES.max((total / 20).min(10 * DISK_LOW_BYTES));
        (available < low).then(|| Self {
            path: path.to_owned(),
            full: available < DISK_FULL_BYTES,
            available,
            total,
        })
    }

    pub fn text(&self, tr: &Catalogue) -> String {
        let key = if self.full {
            "checklist.disk_full"
        } else {
            "checklist.disk_low"
        };
        tr.tf(key, "path", &self.path)
            .replace("{free}", &human_size(self.available))
            .replace("{total}", &human_size(self.total))
    }
}

/// `(total, available to unprivileged users)` bytes of the filesystem holding `path`.
// The fields are `u64` here but 32 bits wide on armhf, which the package is built for too.
#[allow(clippy::useless_conversion)]
fn statvfs(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and `stat` is a valid place for the result, which is
    // only read when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    let block = u64::from(stat.f_frsize);
    Some((
        u64::from(stat.f_blocks).saturating_mul(block),
        u64::from(stat.f_bavail).saturating_mul(block),
    ))
}

/// 1.5 GiB, 12 MiB, 300 KiB.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Checklist {
    pub fn new(config: &Config, public_ip: Option<IpAddr>) -> Self {
        let client_url = public_baseurl(config);
        let element_installed = config.element_installed();
        let turn_ports = format!(
            "UDP+TCP {}, UDP {}-{}",
            config.turn_listen_port, config.turn_min_port, config.turn_max_port
        );
        if is_development(config) {
            let element_url = (config.element.enabled && element_installed).then(|| {
                format!(
                    "{}{}/",
                    client_url.trim_end_matches('/'),
                    config.element.path_prefix.trim_end_matches('/')
                )
            });
            return Self {
                dns: Vec::new(),
                ports: Vec::new(),
                well_known: Vec::new(),
                element_url,
                element_missing: config.element.enabled && !element_installed,
                development: Some(client_url.clone()),
                client_url,
                turn_running: None,
                turn_ports,
                disk: DiskSpace::of(&config.data_dir),
            };
        }
        let host = host_of_url(&client_url);
        let address = public_ip.or(config.turn_external_ip);
        let (kind, value) = match address {
            Some(IpAddr::V6(ip)) => ("AAAA", ip.to_string()),
            Some(IpAddr::V4(ip)) => ("A", ip.to_string()),
            None => ("A", "<public IP>".to_owned()),
        };
        let mut dns = vec![DnsRecord {
            name: host.clone(),
            kind,
            value: value.clone(),
        }];
        let mut element_url = None;
        if config.element.enabled {
            match &config.element.host {
                Some(element_host) => {
                    dns.push(DnsRecord {
                        name: element_host.clone(),
                        kind: "CNAME",
                        value: host.clone(),
                    });
                    element_url = Some(format!("https://{element_host}/"));
                }
                None => {
                    element_url = Some(format!(
                        "https://{host}{}/",
                        config.element.path_prefix.trim_end_matches('/')
                    ))
                }
            }
        }
        let server_host = server_name_host(&config.server_name).to_owned();
        let delegated = server_host != host;
        if delegated && config.serve_server_wellknown {
            dns.push(DnsRecord {
                name: server_host.clone(),
                kind,
                value,
            });
        }

        let federation = config.listeners.iter().any(|l| l.serves("federation"));
        let federation_port = config.federation_public_port();
        let mut ports = vec![
            Port {
                protocol: "TCP",
                port: "80".into(),
                purpose: "checklist.port_http",
            },
            Port {
                protocol: "TCP",
                port: "443".into(),
                purpose: "checklist.port_https",
            },
        ];
        if federation && federation_port != 443 {
            ports.push(Port {
                protocol: "TCP",
                port: federation_port.to_string(),
                purpose: "checklist.port_federation",
            });
        }
        if config.turn_relay_enabled {
            ports.push(Port {
                protocol: "UDP+TCP",
                port: config.turn_listen_port.to_string(),
                purpose: "checklist.port_turn",
            });
            if let Some(tls_port) = config.turn_tls_port {
                ports.push(Port {
                    protocol: "TCP",
                    port: tls_port.to_string(),
                    purpose: "checklist.port_turns",
                });
            }
            ports.push(Port {
                protocol: "UDP",
                port: format!("{}-{}", config.turn_min_port, config.turn_max_port),
                purpose: "checklist.port_relay",
            });
        }

        let well_known = if config.serve_server_wellknown {
            Vec::new()
        } else {
            delegation_files(config)
        };
        Self {
            dns,
            ports,
            well_known,
            element_url: element_url.filter(|_| element_installed),
            element_missing: config.element.enabled && !element_installed,
            client_url,
            development: None,
            turn_running: None,
            turn_ports,
            disk: DiskSpace::of(&config.data_dir),
        }
    }

    /// Records whether the relay runs (only meaningful when `turn_relay_enabled`).
    pub fn set_turn_running(&mut self, running: bool) {
        self.turn_running = Some(running);
    }

    /// For `appliance setup checklist`: whether the server's relay runs, from its status file
    /// (written by the running relay, `running: false` once it stopped) and its process.
    pub fn read_turn_status(&mut self, config: &Config) {
        if !config.turn_relay_enabled {
            return;
        }
        let running = crate::turn::status::read(&config.data_dir).is_ok_and(|status| {
            status.running && std::path::Path::new(&format!("/proc/{}", status.pid)).exists()
        });
        self.turn_running = Some(running);
    }

    /// The checklist as plain text, for the terminal.
    pub fn to_text(&self, tr: &Catalogue) -> String {
        let mut out = String::new();
        if let Some(url) = &self.development {
            out.push_str(&format!("{}\n", tr.tf("checklist.development", "url", url)));
            self.push_services(&mut out, tr);
            return out;
        }
        out.push_str(&format!("{}\n", tr.t("checklist.dns")));
        for record in &self.dns {
            out.push_str(&format!(
                "  {:<32} {:<6} {}\n",
                record.name, record.kind, record.value
            ));
        }
        out.push_str(&format!("\n{}\n", tr.t("checklist.ports")));
        for port in &self.ports {
            out.push_str(&format!(
                "  {:<8} {:<12} {}\n",
                port.protocol,
                port.port,
                tr.t(port.purpose)
            ));
        }
        if !self.well_known.is_empty() {
            out.push_str(&format!("\n{}\n", tr.t("checklist.well_known")));
            for file in &self.well_known {
                out.push_str(&format!("  {}\n    {}\n", file.url, file.json));
            }
        }
        self.push_services(&mut out, tr);
        out
    }

    /// What is served: the client URL, Element (or how to install it), the relay's state.
    fn push_services(&self, out: &mut String, tr: &Catalogue) {
        if let Some(disk) = &self.disk {
            out.push_str(&format!("\n{}\n", disk.text(tr)));
        }
        out.push_str(&format!(
            "\n{} {}\n",
            tr.t("checklist.client_url"),
            self.client_url
        ));
        if let Some(url) = &self.element_url {
            out.push_str(&format!("{} {url}\n", tr.t("checklist.element")));
        }
        if self.element_missing {
            out.push_str(&format!("{}\n", tr.t("checklist.element_missing")));
        }
        if let Some(line) = self.turn_line(tr) {
            out.push_str(&format!("{line}\n"));
        }
    }

    /// "TURN relay: running on …" or "not running", when known.
    pub fn turn_line(&self, tr: &Catalogue) -> Option<String> {
        self.turn_running.map(|running| {
            if running {
                tr.tf("checklist.turn_running", "ports", &self.turn_ports)
            } else {
                tr.t("checklist.turn_not_running")
            }
        })
    }
}

/// The two well-known files a delegated server name's web site must serve, as the wizard's names
/// page, its finish page and `appliance setup checklist` all show them (one source, so the
/// advice never differs); empty when the server name is not delegated or on a development
/// server.
pub fn delegation_files(config: &Config) -> Vec<WellKnown> {
    let client_url = public_baseurl(config);
    let server_host = server_name_host(&config.server_name);
    if server_host == host_of_url(&client_url) || is_development(config) {
        return Vec::new();
    }
    vec![
        WellKnown {
            url: format!("https://{server_host}/.well-known/matrix/server"),
            json: json!({"m.server": delegated_server(config)}).to_string(),
        },
        WellKnown {
            url: format!("https://{server_host}/.well-known/matrix/client"),
            json: json!({"m.homeserver": {"base_url": client_url}}).to_string(),
        },
    ]
}

/// Plain HTTP only, with no TLS listener and no reverse proxy in front: the development server
/// `cargo run` sets up, reachable from this machine only.
pub fn is_development(config: &Config) -> bool {
    public_baseurl(config).starts_with("http://")
        && !config.listeners.iter().any(|l| l.tls || l.x_forwarded)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn checklist(listeners: &str) -> Checklist {
        let yaml = format!(
            "server_name: example.org\n\
             public_baseurl: https://matrix.example.org/\n\
             tls_certificate_path: /etc/ssl/chain.pem\n\
             tls_private_key_path: /etc/ssl/key.pem\n\
             listeners:\n{listeners}"
        );
        let config = Config::parse(&yaml, Path::new("config.yaml")).unwrap();
        Checklist::new(&config, Some("203.0.113.7".parse().unwrap()))
    }

    fn delegation(checklist: &Checklist) -> serde_json::Value {
        let file = checklist
            .well_known
            .iter()
            .find(|f| f.url == "https://example.org/.well-known/matrix/server")
            .expect("the server well-known file of a delegated name");
        serde_json::from_str(&file.json).unwrap()
    }

    fn forwarded_ports(checklist: &Checklist) -> Vec<&str> {
        checklist.ports.iter().map(|p| p.port.as_str()).collect()
    }

    #[test]
    fn federation_on_its_own_port_is_delegated_to_it_and_forwarded() {
        // The wizard's listeners with federation on.
        let list = checklist(
            "  - {port: 80, bind_addresses: ['::'], resources: [{names: [acme, redirect]}]}\n\
             \x20 - {port: 443, tls: true, bind_addresses: ['::'], resources: [{names: [client]}]}\n\
             \x20 - {port: 8448, tls: true, bind_addresses: ['::'], resources: [{names: [federation]}]}\n",
        );
        assert_eq!(
            delegation(&list),
            json!({"m.server": "matrix.example.org:8448"})
        );
        assert_eq!(forwarded_ports(&list), ["80", "443", "8448"]);
    }

    #[test]
    fn federation_beside_the_clients_on_443_needs_no_other_port() {
        let list = checklist(
            "  - {port: 443, tls: true, bind_addresses: ['::'], resources: [{names: [client, federation]}]}\n\
             \x20 - {port: 8448, tls: true, bind_addresses: ['::'], resources: [{names: [federation]}]}\n",
        );
        assert_eq!(
            delegation(&list),
            json!({"m.server": "matrix.example.org:443"})
        );
        assert!(!forwarded_ports(&list).contains(&"8448"));
    }

    #[test]
    fn behind_a_reverse_proxy_federation_comes_in_on_443() {
        let list = checklist(
            "  - {port: 8008, x_forwarded: true, resources: [{names: [client, federation]}]}\n",
        );
        assert_eq!(
            delegation(&list),
            json!({"m.server": "matrix.example.org:443"})
        );
        assert!(!forwarded_ports(&list).contains(&"8448"));
    }

    #[test]
    fn a_full_or_nearly_full_disk_is_reported() {
        const GIB: u64 = 1024 * 1024 * 1024;
        assert!(DiskSpace::assess("/d", 100 * GIB, 50 * GIB).is_none());
        let low = DiskSpace::assess("/d", 100 * GIB, 4 * GIB).expect("under 5 %");
        assert!(!low.full);
        assert!(
            DiskSpace::assess("/d", 4000 * GIB, 50 * GIB).is_none(),
            "5 % is capped at 10 GiB"
        );
        let full = DiskSpace::assess("/d", 8 * GIB, 20 * 1024 * 1024).expect("20 MiB left");
        assert!(full.full);
        let text = full.text(Catalogue::english());
        assert!(text.contains("/d") && text.contains("20 MiB"), "{text}");
        assert_eq!(human_size(1536 * 1024 * 1024), "1.5 GiB");
    }

    #[test]
    fn without_federation_no_federation_port() {
        let list = checklist(
            "  - {port: 443, tls: true, bind_addresses: ['::'], resources: [{names: [client]}]}\n",
        );
        assert_eq!(forwarded_ports(&list), ["80", "443"]);
    }
}
