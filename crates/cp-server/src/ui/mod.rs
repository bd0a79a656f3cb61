//! The web dashboard, served at `/`: server-rendered pages over the same store and services as
//! the API, one small script of our own, and every change made through `/api/v1` itself (the
//! script calls it with the session cookie), so the API's validation, roles and policies are
//! the dashboard's too.

mod assets;
mod graph;
mod pages;
mod render;
mod session;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use minijinja::context;

use crate::http::auth::authenticate;
use crate::state::AppState;

/// The pages may load only our own script, style and images, and may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes: the pages behind the session, the sign-in form and the assets.
pub fn router(state: AppState) -> Router<AppState> {
    let pages = pages::routes()
        .route_layer(from_fn_with_state(state.clone(), authenticate))
        .layer(from_fn(html_errors));
    let script = pages::script_routes().route_layer(from_fn_with_state(state, authenticate));
    Router::new()
        .merge(pages)
        .merge(script)
        .merge(session::routes())
        .route("/ui/assets/{name}", get(assets::asset))
        .layer(from_fn(security_headers))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// A page's failure as a page: without a session, the sign-in form (coming back here after);
/// otherwise the error envelope's message in the layout-free error page.
async fn html_errors(req: Request, next: Next) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        return resp;
    }
    if status == StatusCode::UNAUTHORIZED {
        let next = urlencoding(&path_and_query);
        return Redirect::to(&format!("/sign-in?next={next}")).into_response();
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = envelope["error"]["message"]
        .as_str()
        .unwrap_or("Something went wrong.")
        .to_owned();
    let ctx = context! { status => status.as_u16(), reason => status.canonical_reason(), message };
    match render::html("error.html", ctx) {
        Ok(mut page) => {
            *page.status_mut() = status;
            if let Some(retry) = parts.headers.get(header::RETRY_AFTER) {
                page.headers_mut().insert(header::RETRY_AFTER, retry.clone());
            }
            page
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// Percent-encodes a path for a query value.
fn urlencoding(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
