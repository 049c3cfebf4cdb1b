//! The request's side of every page: the language (query, cookie or `Accept-Language`), the
//! double-submit CSRF token, the session cookie set once the setup token was given, and the
//! security headers of every response.

use std::collections::HashMap;

use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;

use super::super::i18n;

pub(super) const SESSION_COOKIE: &str = "setup_session";
const CSRF_COOKIE: &str = "setup_csrf";
const LANG_COOKIE: &str = "setup_lang";

/// What every page needs from the request: language, CSRF token, session.
pub(super) struct Context {
    pub(super) lang: &'static str,
    pub(super) csrf: String,
    pub(super) session: Option<String>,
    pub(super) set_cookies: Vec<String>,
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

pub(super) fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict")
}

pub(super) fn context(headers: &HeaderMap, lang_param: Option<&str>) -> Context {
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
pub(super) fn csrf_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    match (cookie(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(cookie), Some(field)) => cookie.as_bytes().ct_eq(field.as_bytes()).into(),
        _ => false,
    }
}

pub(super) fn respond(status: StatusCode, context: &Context, body: String) -> Response {
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

pub(super) fn redirect(context: &Context, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    secure_headers(response.headers_mut());
    for value in &context.set_cookies {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}
