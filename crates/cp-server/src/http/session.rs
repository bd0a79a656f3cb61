//! The dashboard's browser session: the API key the user signed in with, in an HttpOnly,
//! SameSite=Strict cookie, so page scripts never see it and it never appears in a URL.
//!
//! A request authenticated by the cookie alone must prove it comes from our own pages when it
//! changes something: it carries the `X-Kcp-Ui` header (a cross-site form cannot set one, and a
//! cross-site script needs a CORS preflight we never grant) and, when the browser sends an
//! `Origin`, it is this server's.

use axum::http::{HeaderMap, HeaderValue, Method, header};

/// The cookie's name.
pub const COOKIE: &str = "kcp_session";
/// The header the dashboard's script sends with every call it makes.
pub const UI_HEADER: &str = "x-kcp-ui";

/// The key in the session cookie, if any.
pub fn cookie_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the request's `Origin`, when sent, names the host it was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Whether a cookie-authenticated request may go on: reads always, changes only from our pages.
pub fn may_act(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD) {
        return true;
    }
    headers.contains_key(UI_HEADER) && same_origin(headers)
}

/// `Set-Cookie` for a session holding `key`; `Secure` when the server is reached over HTTPS.
pub fn set_cookie(key: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict{secure}"))
        .unwrap_or_else(|_| clear_cookie())
}

/// `Set-Cookie` that ends the session.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("kcp_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reads_the_session_among_other_cookies() {
        let h = headers(&[("cookie", "theme=dark; kcp_session=kby_abc ; other=1")]);
        assert_eq!(cookie_key(&h), Some("kby_abc"));
        assert_eq!(cookie_key(&headers(&[("cookie", "xkcp_session=kby_abc")])), None);
        assert_eq!(cookie_key(&headers(&[("cookie", "kcp_session=")])), None);
    }

    #[test]
    fn changes_need_our_header_and_our_origin() {
        let post = Method::POST;
        assert!(may_act(&Method::GET, &headers(&[])));
        assert!(!may_act(&post, &headers(&[("host", "cp:8001")])));
        assert!(may_act(&post, &headers(&[("host", "cp:8001"), ("x-kcp-ui", "1")])));
        assert!(may_act(
            &post,
            &headers(&[("host", "cp:8001"), ("x-kcp-ui", "1"), ("origin", "http://cp:8001")])
        ));
        assert!(!may_act(
            &post,
            &headers(&[
                ("host", "cp:8001"),
                ("x-kcp-ui", "1"),
                ("origin", "https://evil.example")
            ])
        ));
        assert!(!may_act(
            &post,
            &headers(&[("host", "cp:8001"), ("x-kcp-ui", "1"), ("origin", "null")])
        ));
    }
}
