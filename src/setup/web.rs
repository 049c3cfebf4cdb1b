//! The wizard over HTTP: one page per step, plain HTML forms (JavaScript only adds the live DNS
//! check and the password hint), a session cookie once the setup token was given, and a
//! double-submit CSRF token on every form.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use askama::Template;
use axum::{
    Form, Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{
    answers::{Answers, ElementChoice, RegistrationChoice, TlsChoice},
    apply::{Applied, Target, apply},
    checklist::Checklist,
    dns::{self, DnsAnswer},
    i18n::{self, Catalogue},
    token::TokenGuard,
};
use crate::config::Config;

/// The steps after the token page, in order.
pub const STEPS: [&str; 8] = [
    "names",
    "tls",
    "admin",
    "registration",
    "calls",
    "element",
    "federation",
    "summary",
];

const STYLESHEET: &str = include_str!("../../assets/setup.css");
const SESSION_COOKIE: &str = "setup_session";
const CSRF_COOKIE: &str = "setup_csrf";
const LANG_COOKIE: &str = "setup_lang";
/// More open wizard sessions than this and the oldest are forgotten.
const MAX_SESSIONS: usize = 16;

pub struct SetupState {
    pub target: Target,
    guard: TokenGuard,
    sessions: Mutex<Vec<(String, Answers)>>,
    public_ip: Mutex<Option<IpAddr>>,
    /// Called once setup is applied, before the finish page is sent: the switch to serving
    /// happens there, so the homeserver answers as soon as the browser has the page.
    on_applied: Box<dyn Fn(Applied) + Send + Sync>,
    /// One apply at a time.
    applying: tokio::sync::Mutex<bool>,
    serve_with: Box<dyn Fn(&mut Config) + Send + Sync>,
}

impl SetupState {
    pub fn new(
        target: Target,
        token: String,
        on_applied: Box<dyn Fn(Applied) + Send + Sync>,
        serve_with: Box<dyn Fn(&mut Config) + Send + Sync>,
    ) -> Arc<Self> {
        Arc::new(Self {
            target,
            guard: TokenGuard::new(token),
            sessions: Mutex::new(Vec::new()),
            public_ip: Mutex::new(None),
            on_applied,
            applying: tokio::sync::Mutex::new(false),
            serve_with,
        })
    }

    pub fn set_public_ip(&self, ip: Option<IpAddr>) {
        *lock(&self.public_ip) = ip;
    }

    fn public_ip(&self) -> Option<IpAddr> {
        *lock(&self.public_ip)
    }

    fn initial_answers(&self) -> Answers {
        let mut answers = if self.target.reconfigure {
            Answers::from_config(&self.target.base)
        } else {
            Answers::default()
        };
        // Not proposed when there is nothing to serve (a package built offline has no Element).
        if !self.target.reconfigure && !self.element_installed() {
            answers.element = ElementChoice::Off;
        }
        if answers.turn_external_ip.is_empty()
            && let Some(ip) = self.public_ip()
        {
            answers.turn_external_ip = ip.to_string();
        }
        answers
    }

    /// The config the wizard starts from, on the data directory it writes.
    fn base_on_data_dir(&self) -> Config {
        let mut base = self.target.base.clone();
        base.data_dir = self.target.data_dir.clone();
        base
    }

    /// Where an Element release is (or would be) installed.
    fn element_dir(&self) -> std::path::PathBuf {
        self.base_on_data_dir().element_release_dir()
    }

    fn element_installed(&self) -> bool {
        self.base_on_data_dir().element_installed()
    }

    fn answers(&self, session: &str) -> Option<Answers> {
        lock(&self.sessions)
            .iter()
            .find(|(id, _)| id.as_bytes().ct_eq(session.as_bytes()).into())
            .map(|(_, a)| a.clone())
    }

    fn store(&self, session: &str, answers: Answers) {
        let mut sessions = lock(&self.sessions);
        if let Some(entry) = sessions.iter_mut().find(|(id, _)| id == session) {
            entry.1 = answers;
        }
    }

    fn open_session(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push((id.clone(), self.initial_answers()));
        id
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn router(state: Arc<SetupState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/setup/") }))
        .route("/setup", get(token_page).post(token_submit))
        .route("/setup/", get(token_page).post(token_submit))
        .route("/setup/dns", get(dns_check))
        .route("/setup/assets/{file}", get(asset))
        .route("/setup/apply", post(apply_submit))
        .route("/setup/{step}", get(step_page).post(step_submit))
        // Browsers ask for it on every page: a quiet 404, not the 503 below.
        .route("/favicon.ico", get(|| async { StatusCode::NOT_FOUND }))
        .fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "This server is being set up: open /setup/ to continue.\n",
            )
        })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                // The path only: the first URL carries the setup token in its query.
                .make_span_with(|request: &http::Request<_>| {
                    tracing::info_span!("setup", method = %request.method(), path = %request.uri().path())
                })
                // The 503 above is the expected answer to clients that come too early, not an
                // error of the server; real failures are logged where they happen.
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        )
        .with_state(state)
}

/// What every page needs from the request: language, CSRF token, session.
struct Context {
    lang: &'static str,
    csrf: String,
    session: Option<String>,
    set_cookies: Vec<String>,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    lang: Option<String>,
    token: Option<String>,
    host: Option<String>,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict")
}

fn context(headers: &HeaderMap, lang_param: Option<&str>) -> Context {
    let mut set_cookies = Vec::new();
    let lang = match lang_param.and_then(i18n::known) {
        Some(lang) => {
            set_cookies.push(set_cookie(LANG_COOKIE, lang));
            lang
        }
        None => cookie(headers, LANG_COOKIE)
            .and_then(|l| i18n::known(&l))
            .unwrap_or_else(|| {
                i18n::from_accept_language(
                    headers
                        .get(header::ACCEPT_LANGUAGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                )
            }),
    };
    let csrf = match cookie(headers, CSRF_COOKIE) {
        Some(csrf) => csrf,
        None => {
            let csrf = hex::encode(rand::random::<[u8; 16]>());
            set_cookies.push(set_cookie(CSRF_COOKIE, &csrf));
            csrf
        }
    };
    Context {
        lang,
        csrf,
        session: cookie(headers, SESSION_COOKIE),
        set_cookies,
    }
}

/// The double-submit check: the form's `csrf` field equals the cookie.
fn csrf_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    match (cookie(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(cookie), Some(field)) => cookie.as_bytes().ct_eq(field.as_bytes()).into(),
        _ => false,
    }
}

fn respond(status: StatusCode, context: &Context, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    for value in &context.set_cookies {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The first URL carries the token: never send it on to another site.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            // Inline styles only for the finish page's own stylesheet; never inline scripts.
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'",
        ),
    );
}

fn redirect(context: &Context, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    secure_headers(response.headers_mut());
    for value in &context.set_cookies {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

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
    pub delegation: Vec<super::checklist::WellKnown>,
    pub registration_token: String,
    /// How long the first registration token lasts and how many accounts it makes.
    pub registration_token_note: String,
    pub admin_id: String,
    /// `password_config.policy.minimum_length` of the config being written, for `{length}`.
    pub password_minimum_length: String,
}

impl Page {
    fn new(step: &'static str, context: &Context, state: &SetupState) -> Self {
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

    fn with_answers(mut self, answers: &Answers) -> Self {
        self.values = values_of(answers);
        self
    }

    fn with_errors(mut self, errors: &[(&'static str, &'static str)]) -> Self {
        for (field, key) in errors {
            self.errors.insert((*field).to_owned(), self.t(key));
        }
        self
    }

    fn render_page(&self, status: StatusCode, context: &Context) -> Response {
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
fn values_of(a: &Answers) -> HashMap<String, String> {
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

/// Reads one step's form into the answers; returns the fields that failed their checks.
fn read_step(
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
            answers.admin_user =
                super::answers::normalize_user_name(&text("admin_user"), &answers.server_name);
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

async fn token_page(
    State(state): State<Arc<SetupState>>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let mut context = context(&headers, query.lang.as_deref());
    if let Some(session) = &context.session
        && state.answers(session).is_some()
    {
        return redirect(&context, "/setup/names");
    }
    if let Some(token) = query.token {
        // The link from the log: the token in the query; the session cookie replaces it at once,
        // and the redirect takes it out of the address bar.
        if state.guard.check(&token).await {
            let session = state.open_session();
            context
                .set_cookies
                .push(set_cookie(SESSION_COOKIE, &session));
            return redirect(&context, "/setup/names");
        }
        let page = Page::new("token", &context, &state).with_errors(&[("token", "error.token")]);
        return page.render_page(StatusCode::FORBIDDEN, &context);
    }
    Page::new("token", &context, &state).render_page(StatusCode::OK, &context)
}

async fn token_submit(
    State(state): State<Arc<SetupState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut context = context(&headers, None);
    if !csrf_ok(&headers, &form) {
        return csrf_refused(&context, &state);
    }
    let guess = form.get("token").map(String::as_str).unwrap_or_default();
    if !state.guard.check(guess).await {
        let mut page =
            Page::new("token", &context, &state).with_errors(&[("token", "error.token")]);
        page.values.insert("token".into(), String::new());
        return page.render_page(StatusCode::FORBIDDEN, &context);
    }
    let session = state.open_session();
    context
        .set_cookies
        .push(set_cookie(SESSION_COOKIE, &session));
    redirect(&context, "/setup/names")
}

fn csrf_refused(context: &Context, state: &SetupState) -> Response {
    let mut page = Page::new("token", context, state);
    page.notice = page.t("error.csrf");
    page.render_page(StatusCode::FORBIDDEN, context)
}

fn known_step(step: &str) -> Option<&'static str> {
    STEPS.iter().find(|s| **s == step).copied()
}

async fn step_page(
    State(state): State<Arc<SetupState>>,
    Path(step): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let context = context(&headers, query.lang.as_deref());
    let Some(step) = known_step(&step) else {
        return (StatusCode::NOT_FOUND, "no such page").into_response();
    };
    let Some(answers) = context.session.as_deref().and_then(|s| state.answers(s)) else {
        return redirect(&context, "/setup/");
    };
    let page = step_view(
        Page::new(step, &context, &state).with_answers(&answers),
        &state,
        &answers,
    )
    .await;
    page.render_page(StatusCode::OK, &context)
}

/// Adds what a step shows beyond its fields.
async fn step_view(mut page: Page, state: &SetupState, answers: &Answers) -> Page {
    match page.step {
        "names" if !answers.host.is_empty() => {
            page.dns = Some(dns_view(&page, &answers.host).await);
            if answers.check_names().is_empty() {
                let config =
                    answers.to_config(&state.target.base, state.target.plain_listener.clone());
                page.delegation = super::checklist::delegation_files(&config);
            }
        }
        "summary" => {
            let errors = answers.check_all(state.target.reconfigure);
            page = page.with_errors(&errors);
            page.summary = summary(&page, answers);
        }
        _ => {}
    }
    page
}

async fn dns_view(page: &Page, host: &str) -> DnsView {
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

fn summary(page: &Page, a: &Answers) -> Vec<SummaryRow> {
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

async fn step_submit(
    State(state): State<Arc<SetupState>>,
    Path(step): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let context = context(&headers, None);
    let Some(step) = known_step(&step) else {
        return (StatusCode::NOT_FOUND, "no such page").into_response();
    };
    if !csrf_ok(&headers, &form) {
        return csrf_refused(&context, &state);
    }
    let Some(session) = context.session.clone() else {
        return redirect(&context, "/setup/");
    };
    let Some(mut answers) = state.answers(&session) else {
        return redirect(&context, "/setup/");
    };
    let errors = read_step(step, &mut answers, &form, state.target.reconfigure);
    // "Check DNS" on the names page shows the lookup without moving on.
    let checking = form.get("action").is_some_and(|a| a == "check");
    if !errors.is_empty() || checking {
        if errors.is_empty() {
            state.store(&session, answers.clone());
        }
        let mut page = Page::new(step, &context, &state).with_answers(&answers);
        // What was typed stays in the fields, even when it is invalid.
        for (key, value) in &form {
            if !key.contains("password") && key != "csrf" {
                page.values.insert(key.clone(), value.trim().to_owned());
            }
        }
        let page = step_view(page, &state, &answers).await.with_errors(&errors);
        let status = if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return page.render_page(status, &context);
    }
    state.store(&session, answers);
    let next = STEPS
        .iter()
        .position(|s| *s == step)
        .and_then(|i| STEPS.get(i + 1))
        .unwrap_or(&"summary");
    redirect(&context, &format!("/setup/{next}"))
}

async fn apply_submit(
    State(state): State<Arc<SetupState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let context = context(&headers, None);
    if !csrf_ok(&headers, &form) {
        return csrf_refused(&context, &state);
    }
    let Some(answers) = context.session.as_deref().and_then(|s| state.answers(s)) else {
        return redirect(&context, "/setup/");
    };
    let mut applying = state.applying.lock().await;
    if *applying {
        return redirect(&context, "/setup/");
    }
    let summary_with_notice = |notice: String| {
        let mut page = Page::new("summary", &context, &state).with_answers(&answers);
        page.summary = summary(&page, &answers);
        page.notice = notice;
        page
    };
    let errors = answers.check_all(state.target.reconfigure);
    if !errors.is_empty() {
        let page = summary_with_notice(String::new()).with_errors(&errors);
        return page.render_page(StatusCode::UNPROCESSABLE_ENTITY, &context);
    }
    match apply(&answers, &state.target, &state.serve_with).await {
        Ok(mut applied) => {
            *applying = true;
            let mut page = Page::new("finish", &context, &state).with_answers(&answers);
            let mut checklist = Checklist::new(&applied.config, state.public_ip());
            if state.target.in_place {
                // This process serves now: say whether its relay really runs.
                applied.turn_relay = crate::app::start_turn_relay_in_place(&applied.services).await;
                checklist.set_turn_running(applied.turn_relay.is_some());
            }
            page.checklist = Some(checklist);
            page.registration_token = applied.registration_token.clone().unwrap_or_default();
            page.registration_token_note =
                super::apply::first_token_note(page.tr, applied.registration_token_expiry);
            if !answers.admin_user.is_empty() {
                page.admin_id = format!("@{}:{}", answers.admin_user, answers.server_name);
            }
            let response = page.render_page(StatusCode::OK, &context);
            (state.on_applied)(applied);
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "setup could not be applied");
            let page = summary_with_notice(page_error(&context, &e.0));
            page.render_page(StatusCode::INTERNAL_SERVER_ERROR, &context)
        }
    }
}

fn page_error(context: &Context, reason: &str) -> String {
    Catalogue::get(context.lang).tf("summary.apply_failed", "reason", reason)
}

#[derive(serde::Serialize)]
struct DnsJson {
    ok: bool,
    text: String,
}

/// The live check behind the host name field (JavaScript); only for a wizard session.
async fn dns_check(
    State(state): State<Arc<SetupState>>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let context = context(&headers, None);
    if context
        .session
        .as_deref()
        .and_then(|s| state.answers(s))
        .is_none()
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    let host = query.host.unwrap_or_default().trim().to_lowercase();
    let page = Page::new("names", &context, &state);
    if !super::answers::is_host_name(&host) {
        return Json(DnsJson {
            ok: false,
            text: page.t("error.host"),
        })
        .into_response();
    }
    let view = dns_view(&page, &host).await;
    Json(DnsJson {
        ok: view.ok,
        text: view.text,
    })
    .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "setup.css" => (STYLESHEET, "text/css"),
        "setup.js" => (include_str!("../../assets/setup.js"), "text/javascript"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::apply::build_config;

    fn page(step: &'static str, lang: &'static str) -> Page {
        let state = SetupState::new(
            Target {
                config_path: "/nonexistent/config.yaml".into(),
                data_dir: "/nonexistent".into(),
                base: Config::default(),
                reconfigure: false,
                plain_listener: None,
                in_place: false,
            },
            "t".into(),
            Box::new(|_| {}),
            Box::new(|_| {}),
        );
        let context = Context {
            lang,
            csrf: "c".into(),
            session: None,
            set_cookies: Vec::new(),
        };
        let answers = Answers {
            server_name: "example.org".into(),
            host: "matrix.example.org".into(),
            admin_password: "correct horse battery".into(),
            registration: RegistrationChoice::Token,
            ..Answers::default()
        };
        let mut page = Page::new(step, &context, &state).with_answers(&answers);
        page.summary = summary(&page, &answers);
        page.dns = Some(DnsView {
            ok: true,
            text: "x".into(),
        });
        if step == "finish" {
            let target = state.target.clone();
            let (config, _) = build_config(&answers, &target).unwrap();
            let mut checklist = Checklist::new(&config, None);
            checklist.set_turn_running(false);
            page.checklist = Some(checklist);
            page.registration_token = "tok".into();
            page.registration_token_note =
                crate::setup::apply::first_token_note(page.tr, 1_800_000_000_000);
            page.admin_id = "@admin:example.org".into();
        }
        page.with_errors(&[("server_name", "error.server_name")])
    }

    #[test]
    fn every_page_renders_in_every_language_with_no_missing_text() {
        let mut all_steps = vec!["token", "finish"];
        all_steps.extend(STEPS);
        for lang in i18n::LANGUAGES {
            for step in &all_steps {
                let html = page(step, lang).render().unwrap();
                assert!(
                    !html.contains("[["),
                    "{lang} {step}: a key is missing:\n{html}"
                );
                assert!(html.contains(&format!("lang=\"{lang}\"")), "{lang} {step}");
                assert!(
                    html.contains("name=\"csrf\"") || *step == "finish",
                    "{step} has a CSRF field"
                );
            }
        }
    }

    #[test]
    fn the_checklist_text_has_no_missing_text() {
        let config = Answers {
            server_name: "example.org".into(),
            host: "matrix.example.org".into(),
            ..Answers::default()
        }
        .to_config(&Config::default(), None);
        let development = Answers {
            server_name: "example.org".into(),
            host: "matrix.example.org".into(),
            ..Answers::default()
        }
        .to_config(
            &Config::default(),
            Some(crate::setup::SetupAddresses::development_listener()),
        );
        for lang in i18n::LANGUAGES {
            let mut checklist = Checklist::new(&config, None);
            checklist.set_turn_running(true);
            let text = checklist.to_text(Catalogue::get(lang));
            assert!(!text.contains("[["), "{lang}: {text}");
            assert!(text.contains("/.well-known/matrix/server"), "{text}");
            assert!(text.contains("8448"), "{text}");
            assert!(text.contains("element install"), "not installed: {text}");
            let text = Checklist::new(&development, None).to_text(Catalogue::get(lang));
            assert!(!text.contains("[["), "{lang}: {text}");
            assert!(text.contains("http://127.0.0.1:8080/"), "{text}");
            assert!(!text.contains("8448"), "{text}");
        }
    }

    #[test]
    fn the_first_token_note_says_uses_and_lifetime_in_every_language() {
        for lang in i18n::LANGUAGES {
            let note =
                crate::setup::apply::first_token_note(Catalogue::get(lang), 1_800_000_000_000);
            assert!(note.contains('5') && note.contains('7'), "{lang}: {note}");
            assert!(note.contains("2027-01-15T08:00:00Z"), "{lang}: {note}");
            assert!(!note.contains('{'), "{lang}: {note}");
        }
    }
}
