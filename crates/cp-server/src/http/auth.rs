//! Authentication (API key → organization and role), rate limiting, and the `Auth<A>` extractor
//! that every handler uses to get its caller.

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cp_store::keys::{KeyPrincipal, is_well_formed};
use cp_types::ErrorCode;
use cp_types::org::Role;

use super::rate_limit::{Decision, Meter};
use super::session;
use crate::services::caller::Caller;
use crate::services::error::ServiceError;
use crate::state::AppState;

/// The key presented by a request: `Authorization: Bearer <key>`, `Authorization: UserKey <key>`
/// (the Python client), or a `UserKey: <key>` header.
///
/// An `Authorization` header of another scheme (e.g. `Basic`, added by a proxy) does not hide a
/// `UserKey` header.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| {
            let (scheme, rest) = auth.trim().split_once(' ')?;
            let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("userkey");
            Some(rest.trim()).filter(|key| known && !key.is_empty())
        });
    from_authorization.or_else(|| {
        headers
            .get("userkey")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    })
}

fn client_addr(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn limited(decision: Decision) -> Response {
    let mut resp = ServiceError::new(
        ErrorCode::RateLimited,
        "rate limit exceeded; retry after the window resets",
    )
    .with_details(serde_json::json!({"limit": decision.limit, "reset": decision.reset}))
    .into_response();
    decision.write_headers(resp.headers_mut());
    resp
}

/// The POST routes that only read (their input is too large for a query string), which
/// viewers may call.
const READS_BY_POST: &[&str] = &["/ui/diagram"];

/// Middleware on every key-protected route: resolves the key, meters the request, refuses
/// writes by viewers, and stamps the rate-limit headers on the answer.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let now = unix_now();
    let addr = Meter::Addr(client_addr(&req));
    // A header key wins; without one, the dashboard's session cookie.
    let (token, from_cookie) = match presented_key(req.headers()) {
        Some(token) => (Some(token), false),
        None => (session::cookie_key(req.headers()), true),
    };
    if from_cookie && token.is_some() && !session::may_act(req.method(), req.headers(), &state.config.public_url) {
        return ServiceError::forbidden("a browser session changes things only from the dashboard's own pages")
            .into_response();
    }
    let principal = match token {
        Some(token) => resolve(&state, token).await,
        None => Ok(None),
    };
    let principal = match principal {
        Ok(Some(p)) if p.is_usable(cp_types::now()) => p,
        Ok(found) => {
            // Without a valid key, the client address is metered at the standard limit, so
            // guessing keys costs the same as any other request.
            let decision = state.limiter.check(addr, state.config.standard_rate_limit, now);
            if !decision.allowed {
                return limited(decision);
            }
            let presented = presented_key(req.headers()).or_else(|| session::cookie_key(req.headers()));
            let message = match (found, presented) {
                (Some(p), _) if p.revoked_at.is_some() => "API key has been revoked",
                (Some(_), _) => "API key has expired",
                (None, Some(_)) => "invalid API key",
                (None, None) => "missing API key: send 'Authorization: Bearer <key>'",
            };
            let mut resp = ServiceError::unauthorized(message).into_response();
            decision.write_headers(resp.headers_mut());
            return resp;
        }
        Err(resp) => return resp,
    };

    let limit = match principal.role {
        Role::Worker => state.config.worker_rate_limit,
        // A limit set before the operator lowered the ceiling is held to it.
        _ => u64::try_from(principal.rate_limit_per_minute)
            .unwrap_or(0)
            .min(state.config.max_org_rate_limit),
    };
    let decision = state
        .limiter
        .check_key(&state.store, principal.key_id, limit, now)
        .await;
    if !decision.allowed {
        return limited(decision);
    }
    if principal.role == Role::Viewer
        && !matches!(*req.method(), Method::GET | Method::HEAD)
        && !READS_BY_POST.contains(&req.uri().path())
    {
        let mut resp = ServiceError::forbidden("viewer keys can only read").into_response();
        decision.write_headers(resp.headers_mut());
        return resp;
    }
    if state.keys.should_touch(principal.key_id) {
        let store = state.store.clone();
        let key_id = principal.key_id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(key_id, cp_types::now()).await {
                tracing::debug!(error = %e, "could not record key use");
            }
        });
    }
    req.extensions_mut().insert(Arc::new(Caller {
        key_id: principal.key_id,
        key_name: principal.key_name,
        role: principal.role,
        org_id: principal.org_id,
        org_name: principal.org_name,
        worker_queue_id: principal.worker_queue_id,
    }));
    let mut resp = next.run(req).await;
    decision.write_headers(resp.headers_mut());
    resp
}

/// The organization of a request's key when it is a usable admin key, for endpoints that need
/// no key but tell an organization's admin more (the detailed health report).
pub async fn admin_org(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let token = presented_key(headers)?;
    let found = resolve(state, token).await.ok()??;
    (found.is_usable(cp_types::now()) && found.role == Role::Admin).then_some(found.org_id)
}

/// Why a sign-in to the dashboard was refused.
pub enum SignInRefused {
    /// The address made too many attempts; retry after this many seconds.
    Limited(u64),
    /// Unknown, revoked or expired key, or a worker's.
    Invalid,
    Unavailable,
}

/// The owner of a key offered at the dashboard's sign-in form: metered per address like any
/// request without a valid key, and never a worker key (workers have no pages).
pub async fn sign_in(state: &AppState, addr: IpAddr, token: &str) -> Result<KeyPrincipal, SignInRefused> {
    let decision = state
        .limiter
        .check(Meter::Addr(addr), state.config.standard_rate_limit, unix_now());
    if !decision.allowed {
        return Err(SignInRefused::Limited(decision.retry_after));
    }
    match resolve(state, token.trim()).await {
        Ok(Some(p)) if p.is_usable(cp_types::now()) && p.role != Role::Worker => Ok(p),
        Ok(_) => Err(SignInRefused::Invalid),
        Err(_) => Err(SignInRefused::Unavailable),
    }
}

/// The key's owner, from the cache or the database. Malformed keys are refused without a
/// lookup; a well-formed unknown key costs one indexed query and then counts against its
/// address. (Refusing lookups for an address over its limit was tried and dropped: it locked
/// out valid keys behind the same address, e.g. a NAT or a client that also sent bad requests.)
async fn resolve(state: &AppState, token: &str) -> Result<Option<KeyPrincipal>, Response> {
    if let Some(hit) = state.keys.get(token) {
        return Ok(Some(hit));
    }
    if !is_well_formed(token) {
        return Ok(None);
    }
    let found = state
        .store
        .lookup_key(token)
        .await
        .map_err(|e| ServiceError::from(e).into_response())?;
    if let Some(p) = &found {
        state.keys.remember(token, p.clone());
    }
    Ok(found)
}

/// Which roles an endpoint admits.
pub trait Access: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Reading the catalog: admin, member, viewer.
pub struct Read;
/// Changing the catalog: admin, member.
pub struct Write;
/// Keys and organization settings: admin only.
pub struct Admin;
/// Worker protocol endpoints: worker and admin keys.
pub struct WorkerApi;
/// Any valid key (e.g. `auth/validate`).
pub struct AnyRole;
/// Policy enforcement of tool calls: workers, and people who may change the catalog.
pub struct Enforcer;
/// Secret values and integration credentials: admin and worker keys (API §1, Keys).
pub struct SecretReader;

impl Access for Read {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Member, Role::Viewer];
}
impl Access for Write {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Member];
}
impl Access for Admin {
    const ROLES: &'static [Role] = &[Role::Admin];
}
impl Access for WorkerApi {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Worker];
}
impl Access for Enforcer {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Member, Role::Worker];
}
impl Access for AnyRole {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Member, Role::Viewer, Role::Worker];
}
impl Access for SecretReader {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Worker];
}

/// The authenticated caller, admitted only if its role is in `A::ROLES` (else 403).
pub struct Auth<A: Access = Read> {
    pub principal: Arc<Caller>,
    _access: PhantomData<A>,
}

impl<A: Access> std::ops::Deref for Auth<A> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.principal
    }
}

impl<A: Access, S: Send + Sync> FromRequestParts<S> for Auth<A> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ServiceError> {
        let principal = parts
            .extensions
            .get::<Arc<Caller>>()
            .cloned()
            .ok_or_else(|| ServiceError::unauthorized("missing API key"))?;
        if !A::ROLES.contains(&principal.role) {
            return Err(ServiceError::forbidden(format!(
                "the {} role cannot use this endpoint",
                principal.role
            )));
        }
        Ok(Auth {
            principal,
            _access: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer kby_a".parse().unwrap());
        assert_eq!(presented_key(&h), Some("kby_a"));
        h.insert(header::AUTHORIZATION, "UserKey kby_b".parse().unwrap());
        assert_eq!(presented_key(&h), Some("kby_b"));
        h.insert(header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(presented_key(&h), None);
        h.insert("UserKey", "kby_c".parse().unwrap());
        assert_eq!(
            presented_key(&h),
            Some("kby_c"),
            "a proxy's Basic header does not hide UserKey"
        );
        h.remove(header::AUTHORIZATION);
        assert_eq!(presented_key(&h), Some("kby_c"));
    }
}
