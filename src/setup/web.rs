//! The wizard over HTTP: one page per step, plain HTML forms (JavaScript only adds the live DNS
//! check and the password hint), a session cookie once the setup token was given, and a
//! double-submit CSRF token on every form. This file holds the state and the handlers; `page`
//! renders, `session` reads and answers the request's cookies and headers, `steps` reads forms.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

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
    answers::{Answers, ElementChoice},
    apply::{Applied, Target, apply},
    checklist::Checklist,
    token::{ClientAddress, TokenGuard, Verdict},
};
use crate::config::Config;

mod page;
mod session;
mod steps;

use page::{Page, STYLESHEET, dns_view, page_error, summary};
use session::{Context, SESSION_COOKIE, context, csrf_ok, redirect, set_cookie};
use steps::read_step;

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

#[derive(Deserialize, Default)]
struct PageQuery {
    lang: Option<String>,
    token: Option<String>,
    host: Option<String>,
}

async fn token_page(
    State(state): State<Arc<SetupState>>,
    ClientAddress(client): ClientAddress,
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
        let verdict = state.guard.check(client, &token).await;
        if verdict == Verdict::Right {
            let session = state.open_session();
            context
                .set_cookies
                .push(set_cookie(SESSION_COOKIE, &session));
            return redirect(&context, "/setup/names");
        }
        return wrong_token(&context, &state, verdict);
    }
    Page::new("token", &context, &state).render_page(StatusCode::OK, &context)
}

async fn token_submit(
    State(state): State<Arc<SetupState>>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut context = context(&headers, None);
    if !csrf_ok(&headers, &form) {
        return csrf_refused(&context, &state);
    }
    let guess = form.get("token").map(String::as_str).unwrap_or_default();
    let verdict = state.guard.check(client, guess).await;
    if verdict != Verdict::Right {
        return wrong_token(&context, &state, verdict);
    }
    let session = state.open_session();
    context
        .set_cookies
        .push(set_cookie(SESSION_COOKIE, &session));
    redirect(&context, "/setup/names")
}

/// The token page again after a wrong token: `403`, or `429` with `Retry-After` when the
/// address's earlier wrong guesses are still being answered.
fn wrong_token(context: &Context, state: &SetupState, verdict: Verdict) -> Response {
    let mut page = Page::new("token", context, state).with_errors(&[("token", "error.token")]);
    page.values.insert("token".into(), String::new());
    match verdict {
        Verdict::Refused { retry_after } => {
            let mut response = page.render_page(StatusCode::TOO_MANY_REQUESTS, context);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs() + 1),
            );
            response
        }
        _ => page.render_page(StatusCode::FORBIDDEN, context),
    }
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
    use askama::Template;

    use super::{page::DnsView, *};
    use crate::setup::apply::build_config;
    use crate::setup::{
        answers::RegistrationChoice,
        i18n::{self, Catalogue},
    };

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
