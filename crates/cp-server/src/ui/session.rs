//! Signing in to the dashboard with an API key, and out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::context;
use serde::Deserialize;

use super::render;
use crate::http::auth::{SignInRefused, sign_in};
use crate::http::session;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(form).post(submit))
        .route("/sign-out", post(sign_out))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path of this server, never another site. `//host`, `/\host`,
/// absolute URLs, and control characters (browsers drop tabs and newlines, so `/\t/host`
/// becomes `//host`) all fall back to the overview.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            p
        }
        _ => "/",
    }
}

fn sign_in_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    match render::html("sign_in.html", context! { next, error }) {
        Ok(mut page) => {
            *page.status_mut() = status;
            page
        }
        Err(e) => e.into_response(),
    }
}

async fn form(Query(q): Query<NextQuery>) -> Response {
    sign_in_page(StatusCode::OK, local_path(q.next.as_deref()), None)
}

#[derive(Deserialize)]
struct SignIn {
    api_key: String,
    next: Option<String>,
}

async fn submit(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let next = local_path(form.next.as_deref());
    if !session::same_origin(&headers, &state.config.public_url, true) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            next,
            Some("This form can only be sent from this site."),
        );
    }
    let addr = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    match sign_in(&state, addr, &form.api_key).await {
        Ok(_) => {
            let secure = session::over_https(&headers, &state.config.public_url);
            let mut resp = Redirect::to(next).into_response();
            resp.headers_mut()
                .insert(header::SET_COOKIE, session::set_cookie(form.api_key.trim(), secure));
            resp
        }
        Err(SignInRefused::Invalid) => sign_in_page(
            StatusCode::UNAUTHORIZED,
            next,
            Some("That key is not valid: it is unknown, revoked or expired, or it is a worker's key."),
        ),
        Err(SignInRefused::Limited(retry)) => {
            let mut page = sign_in_page(
                StatusCode::TOO_MANY_REQUESTS,
                next,
                Some("Too many attempts from this address; wait a minute and try again."),
            );
            if let Ok(v) = retry.to_string().parse() {
                page.headers_mut().insert(header::RETRY_AFTER, v);
            }
            page
        }
        Err(SignInRefused::Unavailable) => sign_in_page(
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            Some("The database is not available; try again shortly."),
        ),
    }
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !session::same_origin(&headers, &state.config.public_url, false) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut resp = Redirect::to("/sign-in").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    resp
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/agents?page=2")), "/agents?page=2");
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example",
            "agents",
            "",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/a\\b",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
