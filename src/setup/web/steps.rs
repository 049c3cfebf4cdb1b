//! Reading a step's form into the answers: the fields of each step, trimmed and normalised,
//! then the step's own checks.

use std::collections::HashMap;

use crate::setup::answers::{Answers, ElementChoice, RegistrationChoice, TlsChoice};

/// Reads one step's form into the answers; returns the fields that failed their checks.
pub(super) fn read_step(
    step: &str,
    answers: &mut Answers,
    form: &HashMap<String, String>,
    reconfigure: bool,
) -> Vec<(&'static str, &'static str)> {
    let text = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let flag = |name: &str| form.get(name).is_some_and(|v| v == "on");
    let mut errors = Vec::new();
    let port = |name: &'static str, errors: &mut Vec<_>| match text(name).parse::<u16>() {
        Ok(port) => port,
        Err(_) => {
            errors.push((name, "error.port"));
            0
        }
    };
    match step {
        "names" => {
            if !reconfigure {
                answers.server_name = text("server_name").to_lowercase();
            }
            answers.host = text("host").to_lowercase();
            answers.wellknown_here = flag("wellknown_here");
            errors = answers.check_names();
        }
        "tls" => {
            answers.tls = TlsChoice::parse(&text("tls")).unwrap_or_default();
            answers.acme_email = text("acme_email");
            answers.acme_terms = flag("acme_terms");
            answers.acme_staging = flag("acme_staging");
            answers.tls_certificate_path = text("tls_certificate_path");
            answers.tls_private_key_path = text("tls_private_key_path");
            errors = answers.check_tls();
        }
        "admin" => {
            answers.admin_user = crate::setup::answers::normalize_user_name(
                &text("admin_user"),
                &answers.server_name,
            );
            // Passwords are taken as typed: spaces may be part of them.
            answers.admin_password = form.get("admin_password").cloned().unwrap_or_default();
            let again = form
                .get("admin_password_again")
                .cloned()
                .unwrap_or_default();
            errors = answers.check_admin(&again, reconfigure);
        }
        "registration" => {
            answers.registration =
                RegistrationChoice::parse(&text("registration")).unwrap_or_default();
        }
        "calls" => {
            answers.turn_enabled = text("turn") != "off";
            answers.turn_external_ip = text("turn_external_ip");
            answers.turn_listen_port = port("turn_listen_port", &mut errors);
            answers.turn_min_port = port("turn_min_port", &mut errors);
            answers.turn_max_port = port("turn_max_port", &mut errors);
            if errors.is_empty() {
                errors = answers.check_calls();
            }
        }
        "element" => {
            answers.element = ElementChoice::parse(&text("element")).unwrap_or_default();
            answers.element_host = text("element_host").to_lowercase();
            errors = answers.check_element();
        }
        "federation" => {
            answers.federation = text("federation") != "off";
        }
        _ => {}
    }
    errors
}
