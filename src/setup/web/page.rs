//! The pages: the askama template struct every step renders, the values and errors it shows,
//! the summary rows, the DNS line of the names step.
//!
//! Templates are askama's, in `templates/setup/`; the CSS and JavaScript in `assets/`; all embedded
//! in the binary.

use std::collections::HashMap;

use askama::Template;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::{
    STEPS, SetupState,
    session::{Context, respond},
};
use crate::setup::{
    answers::{Answers, ElementChoice},
    checklist::Checklist,
    dns::{self, DnsAnswer},
    i18n::{self, Catalogue},
};

pub(super) const STYLESHEET: &str = include_str!("../../../assets/setup.css");

/// A row of the summary: label key, value shown, the step that changes it.
pub struct SummaryRow {
    pub label: &'static str,
    pub value: String,
    pub step: &'static str,
}

pub struct DnsView {
    pub ok: bool,
    pub text: String,
}

#[derive(Template)]
#[template(path = "setup/page.html")]
pub struct Page {
    pub tr: &'static Catalogue,
    pub lang: &'static str,
    pub step: &'static str,
    pub csrf: String,
    pub notice: String,
    pub values: HashMap<String, String>,
    pub errors: HashMap<String, String>,
    pub reconfigure: bool,
    pub public_ip: String,
    pub dns: Option<DnsView>,
    pub element_installed: bool,
    pub element_dir: String,
    pub summary: Vec<SummaryRow>,
    pub checklist: Option<Checklist>,
    /// The well-known files of a delegated server name (`checklist::delegation_files`).
    pub delegation: Vec<crate::setup::checklist::WellKnown>,
    pub registration_token: String,
    /// How long the first registration token lasts and how many accounts it makes.
    pub registration_token_note: String,
    pub admin_id: String,
    /// `password_config.policy.minimum_length` of the config being written, for `{length}`.
    pub password_minimum_length: String,
}

impl Page {
    pub(super) fn new(step: &'static str, context: &Context, state: &SetupState) -> Self {
        Self {
            tr: Catalogue::get(context.lang),
            lang: context.lang,
            step,
            csrf: context.csrf.clone(),
            notice: String::new(),
            values: HashMap::new(),
            errors: HashMap::new(),
            reconfigure: state.target.reconfigure,
            public_ip: state
                .public_ip()
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            dns: None,
            element_installed: state.element_installed(),
            element_dir: state.element_dir().display().to_string(),
            summary: Vec::new(),
            checklist: None,
            delegation: Vec::new(),
            registration_token: String::new(),
            registration_token_note: String::new(),
            admin_id: String::new(),
            password_minimum_length: state
                .initial_answers()
                .password_policy
                .minimum_length
                .to_string(),
        }
    }

    pub fn t(&self, key: &str) -> String {
        self.tr.tf(key, "length", &self.password_minimum_length)
    }

    pub fn tf(&self, key: &str, name: &str, value: &str) -> String {
        self.tr.tf(key, name, value)
    }

    /// The value of a field.
    pub fn v(&self, field: &str) -> &str {
        self.values.get(field).map_or("", String::as_str)
    }

    pub fn has_error(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }

    pub fn e(&self, field: &str) -> &str {
        self.errors.get(field).map_or("", String::as_str)
    }

    /// `checked` when the field has this value (radio buttons, check boxes).
    pub fn checked(&self, field: &str, value: &str) -> &'static str {
        if self.v(field) == value {
            "checked"
        } else {
            ""
        }
    }

    /// `aria-invalid` and the ids describing the field.
    pub fn describe(&self, field: &str) -> String {
        if self.has_error(field) {
            format!("{field}-help {field}-error")
        } else {
            format!("{field}-help")
        }
    }

    pub fn title_key(&self) -> String {
        format!("{}.title", self.step)
    }

    /// "Step 3 of 9"; 0 for pages outside the sequence.
    pub fn step_number(&self) -> usize {
        match self.step {
            "token" => 1,
            step => STEPS.iter().position(|s| *s == step).map_or(0, |i| i + 2),
        }
    }

    pub fn progress(&self) -> String {
        self.tf("nav.step", "n", &self.step_number().to_string())
            .replace("{total}", &(STEPS.len() + 1).to_string())
    }

    pub fn previous_step(&self) -> &'static str {
        match STEPS.iter().position(|s| *s == self.step) {
            Some(i) if i > 0 => STEPS[i - 1],
            _ => "",
        }
    }

    /// The finish page carries its stylesheet: once it is sent, `/setup/assets` is gone with
    /// the rest of the wizard.
    pub fn stylesheet(&self) -> &'static str {
        STYLESHEET
    }

    pub fn is_current(&self, code: &str) -> bool {
        code == self.lang
    }

    pub fn languages(&self) -> Vec<(&'static str, String)> {
        i18n::LANGUAGES
            .iter()
            .map(|l| (*l, Catalogue::get(l).t("language.name")))
            .collect()
    }

    pub fn delegated(&self) -> bool {
        !self.delegation.is_empty()
    }

    pub(super) fn with_answers(mut self, answers: &Answers) -> Self {
        self.values = values_of(answers);
        self
    }

    pub(super) fn with_errors(mut self, errors: &[(&'static str, &'static str)]) -> Self {
        for (field, key) in errors {
            self.errors.insert((*field).to_owned(), self.t(key));
        }
        self
    }

    pub(super) fn render_page(&self, status: StatusCode, context: &Context) -> Response {
        match self.render() {
            Ok(body) => respond(status, context, body),
            Err(e) => {
                tracing::error!(error = %e, "cannot render a setup page");
                (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
            }
        }
    }
}

/// The answers as form values.
pub(super) fn values_of(a: &Answers) -> HashMap<String, String> {
    let on = |b: bool| if b { "on" } else { "" }.to_owned();
    [
        ("server_name", a.server_name.clone()),
        ("host", a.host.clone()),
        ("wellknown_here", on(a.wellknown_here)),
        ("tls", a.tls.as_str().to_owned()),
        ("acme_email", a.acme_email.clone()),
        ("acme_terms", on(a.acme_terms)),
        ("acme_staging", on(a.acme_staging)),
        ("tls_certificate_path", a.tls_certificate_path.clone()),
        ("tls_private_key_path", a.tls_private_key_path.clone()),
        ("admin_user", a.admin_user.clone()),
        ("registration", a.registration.as_str().to_owned()),
        ("turn", if a.turn_enabled { "on" } else { "off" }.to_owned()),
        ("turn_listen_port", a.turn_listen_port.to_string()),
        ("turn_min_port", a.turn_min_port.to_string()),
        ("turn_max_port", a.turn_max_port.to_string()),
        ("turn_external_ip", a.turn_external_ip.clone()),
        ("element", a.element.as_str().to_owned()),
        ("element_host", a.element_host_or_default()),
        (
            "federation",
            if a.federation { "on" } else { "off" }.to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub(super) async fn dns_view(page: &Page, host: &str) -> DnsView {
    match dns::lookup(host).await {
        DnsAnswer::Addresses(addresses) if !addresses.is_empty() => {
            let list = addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            DnsView {
                ok: true,
                text: page.tf("names.dns_found", "addresses", &list),
            }
        }
        DnsAnswer::Addresses(_) => DnsView {
            ok: false,
            text: page.tf("names.dns_failed", "reason", "no address"),
        },
        DnsAnswer::Failed(reason) => DnsView {
            ok: false,
            text: page.tf("names.dns_failed", "reason", &reason),
        },
    }
}

pub(super) fn summary(page: &Page, a: &Answers) -> Vec<SummaryRow> {
    let yes_no = |b: bool| page.t(if b { "summary.yes" } else { "summary.no" });
    let mut rows = vec![
        SummaryRow {
            label: "names.server_name",
            value: a.server_name.clone(),
            step: "names",
        },
        SummaryRow {
            label: "names.host",
            value: a.host.clone(),
            step: "names",
        },
        SummaryRow {
            label: "tls.title",
            value: page.t(&format!("tls.{}", a.tls.as_str())),
            step: "tls",
        },
    ];
    if !a.admin_user.is_empty() {
        rows.push(SummaryRow {
            label: "admin.title",
            value: format!("@{}:{}", a.admin_user, a.server_name),
            step: "admin",
        });
    }
    rows.extend([
        SummaryRow {
            label: "registration.title",
            value: page.t(&format!("registration.{}", a.registration.as_str())),
            step: "registration",
        },
        SummaryRow {
            label: "calls.title",
            value: if a.turn_enabled {
                format!(
                    "{} ({} {}, UDP {}-{})",
                    yes_no(true),
                    page.t("calls.port"),
                    a.turn_listen_port,
                    a.turn_min_port,
                    a.turn_max_port
                )
            } else {
                yes_no(false)
            },
            step: "calls",
        },
        SummaryRow {
            label: "element.title",
            value: match a.element {
                ElementChoice::Off => yes_no(false),
                _ if !page.element_installed => page.t("summary.element_not_installed"),
                ElementChoice::Host => format!("https://{}/", a.element_host_or_default()),
                ElementChoice::Path => format!("https://{}/element/", a.host),
            },
            step: "element",
        },
        SummaryRow {
            label: "federation.title",
            value: yes_no(a.federation),
            step: "federation",
        },
    ]);
    rows
}

pub(super) fn page_error(context: &Context, reason: &str) -> String {
    Catalogue::get(context.lang).tf("summary.apply_failed", "reason", reason)
}
