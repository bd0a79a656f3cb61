//! Inbound job webhooks: which sender signed a request and whether the signature holds, in
//! constant time over the raw body. GitHub signs `X-Hub-Signature-256: sha256=<hex>`, GitLab
//! sends its token as `X-Gitlab-Token`, anything else signs `X-Webhook-Signature:
//! sha256=<hex>`, optionally with `X-Webhook-Timestamp` (Unix seconds, refused when more than
//! 5 minutes off). Every signature covers the raw body alone: one signed form, so a body can
//! never be passed off as another message that was signed.

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How old (or how far ahead) a signed timestamp may be.
pub const MAX_SKEW_SECS: i64 = 300;

/// The delivery's own id, when the sender gives one: a repeat fires once.
pub fn delivery_id(headers: &HeaderMap) -> Option<String> {
    ["x-github-delivery", "x-gitlab-event-uuid", "x-webhook-id"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok())
        .map(|v| v.trim().chars().take(200).collect())
}

/// A GitHub `ping` (sent when the hook is made): answered without firing.
pub fn is_ping(headers: &HeaderMap) -> bool {
    headers.get("x-github-event").is_some_and(|v| v.as_bytes() == b"ping")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn hmac_hex_matches(secret: &str, message: &[&[u8]], given_hex: &str) -> bool {
    let Ok(given) = hex::decode(given_hex.trim()) else {
        return false;
    };
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for part in message {
        mac.update(part);
    }
    mac.verify_slice(&given).is_ok()
}

/// Checks the request's signature with the job's `secret` at `now_unix`; the error says what
/// was wrong, for the 401.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str, now_unix: i64) -> Result<(), &'static str> {
    if let Some(sig) = header(headers, "x-hub-signature-256") {
        let hex = sig
            .strip_prefix("sha256=")
            .ok_or("X-Hub-Signature-256 must be sha256=<hex>")?;
        return hmac_hex_matches(secret, &[body], hex)
            .then_some(())
            .ok_or("the X-Hub-Signature-256 signature does not match");
    }
    if let Some(token) = header(headers, "x-gitlab-token") {
        return bool::from(token.as_bytes().ct_eq(secret.as_bytes()))
            .then_some(())
            .ok_or("the X-Gitlab-Token does not match");
    }
    let Some(sig) = header(headers, "x-webhook-signature") else {
        return Err("missing signature: send X-Hub-Signature-256, X-Gitlab-Token or X-Webhook-Signature");
    };
    let hex = sig.strip_prefix("sha256=").unwrap_or(sig);
    if !hmac_hex_matches(secret, &[body], hex) {
        return Err("the X-Webhook-Signature signature does not match");
    }
    if let Some(ts) = header(headers, "x-webhook-timestamp") {
        let at: i64 = ts.parse().map_err(|_| "X-Webhook-Timestamp must be Unix seconds")?;
        if (now_unix - at).abs() > MAX_SKEW_SECS {
            return Err("X-Webhook-Timestamp is more than 5 minutes away from now");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn sign(secret: &str, parts: &[&[u8]]) -> String {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        for p in parts {
            mac.update(p);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn each_scheme_accepts_its_signature_and_refuses_a_wrong_one() {
        let (secret, body) = ("s3cret", br#"{"a":1}"#.as_slice());
        let good = sign(secret, &[body]);
        let gh = headers(&[("x-hub-signature-256", format!("sha256={good}"))]);
        assert!(verify(&gh, body, secret, 0).is_ok());
        assert!(verify(&gh, b"{\"a\":2}", secret, 0).is_err());
        assert!(verify(&headers(&[("x-hub-signature-256", good.clone())]), body, secret, 0).is_err());
        assert!(verify(&headers(&[("x-gitlab-token", secret.into())]), body, secret, 0).is_ok());
        assert!(verify(&headers(&[("x-gitlab-token", "s3creT".into())]), body, secret, 0).is_err());
        let plain = headers(&[("x-webhook-signature", format!("sha256={good}"))]);
        assert!(verify(&plain, body, secret, 0).is_ok());
        assert!(verify(&headers(&[("x-webhook-signature", good.clone())]), body, secret, 0).is_ok());
        assert!(verify(&headers(&[("x-webhook-signature", "zz".into())]), body, secret, 0).is_err());
        assert!(verify(&HeaderMap::new(), body, secret, 0).is_err());
    }

    #[test]
    fn a_timestamp_must_be_recent_and_the_signature_covers_the_body_alone() {
        let (secret, body, now) = ("k", b"hello".as_slice(), 1_700_000_000i64);
        let ts = now.to_string();
        let h = headers(&[
            ("x-webhook-signature", sign(secret, &[body])),
            ("x-webhook-timestamp", ts.clone()),
        ]);
        assert!(verify(&h, body, secret, now + 299).is_ok());
        assert!(verify(&h, body, secret, now + 301).is_err());
        assert!(verify(&h, body, secret, now - 301).is_err());
        let bound = sign(secret, &[ts.as_bytes(), b".", body]);
        let h = headers(&[("x-webhook-signature", bound), ("x-webhook-timestamp", ts)]);
        assert!(verify(&h, body, secret, now).is_err());
    }

    #[test]
    fn delivery_ids_and_pings_are_read_from_each_sender() {
        assert_eq!(
            delivery_id(&headers(&[("x-github-delivery", "abc".into())])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            delivery_id(&headers(&[("x-gitlab-event-uuid", "u".into())])).as_deref(),
            Some("u")
        );
        assert_eq!(
            delivery_id(&headers(&[("x-webhook-id", "w".into())])).as_deref(),
            Some("w")
        );
        assert_eq!(delivery_id(&HeaderMap::new()), None);
        assert!(is_ping(&headers(&[("x-github-event", "ping".into())])));
        assert!(!is_ping(&headers(&[("x-github-event", "push".into())])));
    }
}
