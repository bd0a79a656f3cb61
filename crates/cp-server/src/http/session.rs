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

/// The key in the session cookie, if any. Two session cookies (one planted for a parent
/// domain or a longer path beside ours) are no session at all.
pub fn cookie_key(headers: &HeaderMap) -> Option<&str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim());
    let first = found.next()?;
    (found.next().is_none() && !first.is_empty()).then_some(first)
}

/// Where the browser says the request comes from: `Origin`, else the origin of `Referer`.
fn sender(headers: &HeaderMap) -> Option<&str> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let referer = headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .map(origin_of);
    origin.or(referer)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let url = url.trim_end_matches('/');
    match url.find("://") {
        Some(s) => url[s + 3..].find('/').map_or(url, |p| &url[..s + 3 + p]),
        None => url,
    }
}

/// Whether `origin` is this server: the host the request was sent to or, behind a proxy that
/// rewrites `Host`, the configured public URL's origin.
fn is_ours(origin: &str, headers: &HeaderMap, public_url: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(origin_of(public_url)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Whether the request comes from this server's pages: when the browser names a sender it
/// must be us; when `required`, it must name one (the sign-in form: a login CSRF would sign
/// the victim in to the attacker's organization).
pub fn same_origin(headers: &HeaderMap, public_url: &str, required: bool) -> bool {
    match sender(headers) {
        Some(origin) => is_ours(origin, headers, public_url),
        None => !required,
    }
}

/// Whether a cookie-authenticated request may go on: reads always, changes only from our pages.
pub fn may_act(method: &Method, headers: &HeaderMap, public_url: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD) {
        return true;
    }
    headers.contains_key(UI_HEADER) && same_origin(headers, public_url, false)
}

/// Whether the browser reached us over HTTPS: the public URL says so, or the proxy in front
/// of us does (`X-Forwarded-Proto`), so the cookie is marked `Secure`.
pub fn over_https(headers: &HeaderMap, public_url: &str) -> bool {
    public_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
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
        let planted = headers(&[("cookie", "kcp_session=kby_attacker; kcp_session=kby_victim")]);
        assert_eq!(cookie_key(&planted), None, "two sessions are none");
    }

    #[test]
    fn changes_need_our_header_and_our_origin() {
        let (post, public) = (Method::POST, "http://cp.example");
        assert!(may_act(&Method::GET, &headers(&[]), public));
        assert!(!may_act(&post, &headers(&[("host", "cp:8001")]), public));
        assert!(may_act(
            &post,
            &headers(&[("host", "cp:8001"), ("x-kcp-ui", "1")]),
            public
        ));
        let ours = headers(&[("host", "cp:8001"), ("x-kcp-ui", "1"), ("origin", "http://cp:8001")]);
        assert!(may_act(&post, &ours, public));
        let evil = headers(&[
            ("host", "cp:8001"),
            ("x-kcp-ui", "1"),
            ("origin", "https://evil.example"),
        ]);
        assert!(!may_act(&post, &evil, public));
        let null = headers(&[("host", "cp:8001"), ("x-kcp-ui", "1"), ("origin", "null")]);
        assert!(!may_act(&post, &null, public));
        // Behind a proxy that rewrites Host, the public URL's origin is ours.
        let proxied = headers(&[
            ("host", "10.0.0.5:8001"),
            ("x-kcp-ui", "1"),
            ("origin", "https://cp.example"),
        ]);
        assert!(may_act(&post, &proxied, "https://cp.example/"));
    }

    #[test]
    fn sign_in_needs_a_sender_and_it_must_be_us() {
        let public = "http://127.0.0.1:8001";
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8001")]), public, true));
        let referred = headers(&[
            ("host", "127.0.0.1:8001"),
            ("referer", "http://127.0.0.1:8001/sign-in?next=/"),
        ]);
        assert!(same_origin(&referred, public, true));
        let elsewhere = headers(&[("host", "127.0.0.1:8001"), ("referer", "https://evil.example/page")]);
        assert!(!same_origin(&elsewhere, public, true));
    }
}
