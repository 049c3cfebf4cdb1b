//! What must happen outside the box for it to be reachable, computed from the config: DNS
//! records, router ports, the well-known files of a delegated server name, and where Element is.
//! The wizard's finish page and `appliance setup checklist` show the same list.

use std::net::IpAddr;

use serde_json::json;

use super::{answers::server_name_host, i18n::Catalogue};
use crate::config::Config;

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
    pub element_url: Option<String>,
    pub client_url: String,
}

impl Checklist {
    pub fn new(config: &Config, public_ip: Option<IpAddr>) -> Self {
        let client_url = config
            .public_baseurl
            .clone()
            .unwrap_or_else(|| format!("https://{}/", config.server_name));
        let host = client_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or(&config.server_name)
            .to_owned();
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
        if federation {
            ports.push(Port {
                protocol: "TCP",
                port: "8448".into(),
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

        let mut well_known = Vec::new();
        if delegated && !config.serve_server_wellknown {
            let server_port = if federation { 8448 } else { 443 };
            well_known.push(WellKnown {
                url: format!("https://{server_host}/.well-known/matrix/server"),
                json: json!({"m.server": format!("{host}:{server_port}")}).to_string(),
            });
            well_known.push(WellKnown {
                url: format!("https://{server_host}/.well-known/matrix/client"),
                json: json!({"m.homeserver": {"base_url": client_url}}).to_string(),
            });
        }
        Self {
            dns,
            ports,
            well_known,
            element_url,
            client_url,
        }
    }

    /// The checklist as plain text, for the terminal.
    pub fn to_text(&self, tr: &Catalogue) -> String {
        let mut out = String::new();
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
        out.push_str(&format!(
            "\n{} {}\n",
            tr.t("checklist.client_url"),
            self.client_url
        ));
        if let Some(url) = &self.element_url {
            out.push_str(&format!("{} {url}\n", tr.t("checklist.element")));
        }
        out
    }
}
