//! What must happen outside the box for it to be reachable, computed from the config: DNS
//! records, router ports, the well-known files of a delegated server name, and where Element is.
//! The wizard's finish page and `appliance setup checklist` show the same list.

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
    pub element_url: Option<String>,
    pub client_url: String,
}

impl Checklist {
    pub fn new(config: &Config, public_ip: Option<IpAddr>) -> Self {
        let client_url = public_baseurl(config);
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

        let mut well_known = Vec::new();
        if delegated && !config.serve_server_wellknown {
            well_known.push(WellKnown {
                url: format!("https://{server_host}/.well-known/matrix/server"),
                json: json!({"m.server": delegated_server(config)}).to_string(),
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
    fn without_federation_no_federation_port() {
        let list = checklist(
            "  - {port: 443, tls: true, bind_addresses: ['::'], resources: [{names: [client]}]}\n",
        );
        assert_eq!(forwarded_ports(&list), ["80", "443"]);
    }
}
