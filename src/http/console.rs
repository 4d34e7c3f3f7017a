//! The web console at `/`: static files compiled into the binary (src/console/), served
//! with a strict Content-Security-Policy, and the console's cookie session.
//!
//! The console signs in through `POST /console/session` (email and password, or an
//! existing token, which is exchanged for a session token). The session token goes into
//! an `HttpOnly; SameSite=Strict` cookie that page scripts cannot read; a CSRF token
//! derived from it (SHA-256 of a domain-separated prefix and the token) goes into a
//! readable cookie, and every state-changing request authenticated by the cookie must
//! repeat it in `X-CSRF-Token` ([`csrf_matches`], checked by the `Principal` extractor).
//! Requests with an `Authorization` header are unaffected: browsers never add one on
//! their own.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::session::{SignIn, issue_session};
use crate::store::{RequestMeta, WriteContext};

pub const SESSION_COOKIE: &str = "lg_session";
pub const CSRF_COOKIE: &str = "lg_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The policy every console answer carries: scripts and styles only from files of this
/// origin (no inline code anywhere), no framing, no plugins, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// File name, content type and content of everything the console loads.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/dom.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/pages.js"),
    ),
    (
        "import.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/import.js"),
    ),
    (
        "state.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/state.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../console/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../console/index.html");

/// The headers every console answer carries.
fn hardened(mut response: HttpResponse) -> HttpResponse {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
        ("cache-control", "no-cache"),
    ] {
        headers.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// The web console's page; every route of the console is this page (hash routing).
#[utoipa::path(tag = "console", responses((status = 200, description = "the console's HTML page", content_type = "text/html")))]
#[get("/")]
pub async fn index() -> HttpResponse {
    hardened(
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(INDEX),
    )
}

/// The console's scripts, style sheet and icon.
#[get("/console/{file}")]
pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file.as_str())
        .ok_or(ApiError::NotFound)?;
    Ok(hardened(
        HttpResponse::Ok().content_type(*content_type).body(*body),
    ))
}

#[derive(Serialize)]
struct Settings {
    max_import_bytes: u64,
    import_extensions: &'static [&'static str],
}

/// What the console checks before uploading (public: it reveals nothing about records).
#[utoipa::path(tag = "console", responses((status = 200, description = "`max_import_bytes` and `import_extensions`")))]
#[get("/console/settings.json")]
pub async fn settings(state: web::Data<AppState>) -> HttpResponse {
    hardened(HttpResponse::Ok().json(Settings {
        max_import_bytes: state.config.max_import_bytes,
        import_extensions: &["xlsx", "xlsm", "xlsb", "xls", "ods", "csv", "tsv"],
    }))
}

/// The console's session token from its cookie.
pub fn session_cookie(req: &HttpRequest) -> Option<String> {
    cookie(req, SESSION_COOKIE).filter(|t| !t.is_empty() && t.len() <= 256)
}

fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// The CSRF token of a session: derived, so nothing is stored, and unguessable without
/// the session token, which page scripts never see.
pub fn csrf_token(session: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"leadgate console csrf\0");
    hasher.update(session.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether the request's `X-CSRF-Token` is the session's, compared in constant time.
pub fn csrf_matches(req: &HttpRequest, session: &str) -> bool {
    let Some(sent) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let expected = csrf_token(session);
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

fn secure(req: &HttpRequest) -> &'static str {
    if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookies(
    response: &mut actix_web::HttpResponseBuilder,
    req: &HttpRequest,
    token: &str,
    max_age: i64,
) {
    let secure = secure(req);
    response.append_header((
        header::SET_COOKIE,
        format!(
            "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        ),
    ));
    let csrf = if token.is_empty() {
        String::new()
    } else {
        csrf_token(token)
    };
    response.append_header((
        header::SET_COOKIE,
        format!("{CSRF_COOKIE}={csrf}; Path=/; Max-Age={max_age}; SameSite=Strict{secure}"),
    ));
}

/// Email and password, or a token (a user's API token, or the bootstrap admin token).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ConsoleSignIn {
    Password { email: String, password: String },
    Token { token: String },
}

#[derive(Serialize)]
struct ConsoleSession {
    csrf: String,
    expires_at: String,
}

/// Signs the console in: the session token is set as an HttpOnly cookie and only the
/// CSRF token is answered. A JSON body is required, which a cross-site form cannot send.
#[utoipa::path(
    tag = "console",
    request_body(content = Object, description = "`{\"email\", \"password\"}` or `{\"token\"}`", content_type = "application/json"),
    responses(
        (status = 201, description = "`{\"csrf\", \"expires_at\"}`; cookies `lg_session` (HttpOnly) and `lg_csrf` set"),
        (status = 401, body = super::error::Problem),
        (status = 403, description = "a partner key", body = super::error::Problem),
        (status = 429, body = super::error::Problem),
    )
)]
#[post("/console/session")]
pub async fn sign_in(
    req: HttpRequest,
    body: web::Json<ConsoleSignIn>,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (token, expires_at) = match body.into_inner() {
        ConsoleSignIn::Password { email, password } => {
            let session = issue_session(&req, SignIn { email, password }, meta, &state).await?;
            (session.token, session.expires_at)
        }
        ConsoleSignIn::Token { token } => exchange_token(&req, &token, meta, &state).await?,
    };
    let max_age = i64::from(state.config.access.session_hours) * 3600;
    let mut response = HttpResponse::Created();
    set_cookies(&mut response, &req, &token, max_age);
    Ok(hardened(response.json(ConsoleSession {
        csrf: csrf_token(&token),
        expires_at,
    })))
}

/// A valid user or admin token buys a session token of the same principal and role, so
/// that signing the console out never revokes the token that was typed in.
async fn exchange_token(
    req: &HttpRequest,
    secret: &str,
    meta: RequestMeta,
    state: &AppState,
) -> Result<(String, String), ApiError> {
    if let Some(peer) = req.peer_addr() {
        state
            .sign_in_limiter
            .check(peer.ip())
            .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
    }
    let secret = secret.trim();
    if secret.is_empty() || secret.len() > 256 {
        return Err(ApiError::Unauthorized);
    }
    let owner = state
        .tokens
        .authenticate(&state.store, secret)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if owner.role == "partner" || owner.principal.starts_with("partner:") {
        return Err(ApiError::Forbidden(
            "partner keys submit leads through the partner API; they cannot sign in to the console"
                .into(),
        ));
    }
    let actor = if owner.principal.starts_with("user:") {
        owner.principal.clone()
    } else {
        format!("token:{}", owner.token_id)
    };
    let ctx = WriteContext::new(actor, "console", meta);
    let expires =
        chrono::Utc::now() + chrono::Duration::hours(state.config.access.session_hours.into());
    let token = state
        .store
        .create_token(
            &ctx,
            "console session",
            &owner.principal,
            &owner.role,
            Some(expires),
        )
        .await?;
    Ok((
        token.secret,
        crate::domain::value::format_timestamp(expires),
    ))
}

/// Signs the console out: the session token is revoked (when it is still valid and the
/// CSRF token matches) and both cookies are cleared either way.
#[utoipa::path(
    tag = "console",
    params(("X-CSRF-Token" = String, Header, description = "the session's CSRF token")),
    responses((status = 204), (status = 403, description = "wrong or missing CSRF token", body = super::error::Problem))
)]
#[post("/console/sign-out")]
pub async fn sign_out(
    req: HttpRequest,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = session_cookie(&req) {
        if !csrf_matches(&req, &token) {
            return Err(ApiError::Forbidden("missing or wrong X-CSRF-Token".into()));
        }
        if let Some(owner) = state.tokens.authenticate(&state.store, &token).await? {
            let actor = if owner.principal.starts_with("user:") {
                owner.principal.clone()
            } else {
                format!("token:{}", owner.token_id)
            };
            let ctx = WriteContext::new(actor, "console", meta);
            state.store.revoke_token(&ctx, &owner.token_id).await?;
            state.tokens.clear();
        }
    }
    let mut response = HttpResponse::NoContent();
    set_cookies(&mut response, &req, "", 0);
    Ok(hardened(response.finish()))
}
