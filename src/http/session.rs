//! Sign-in with email and password for a session token, sign-out, and who-am-I. Every
//! sign-in, failed or not, is an audit row with the caller's IP and user agent.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Principal;
use super::caller::Caller;
use super::error::ApiError;
use crate::access::Action;
use crate::domain::RecordKind;
use crate::store::{RequestMeta, WriteContext};

#[derive(Deserialize, ToSchema)]
pub struct SignIn {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct Session {
    /// The bearer token; shown once.
    pub token: String,
    pub token_id: String,
    pub expires_at: String,
    pub user: crate::store::users::User,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub actor: String,
    pub role: String,
    /// Kinds and what the role may do with each.
    #[schema(value_type = Object)]
    pub can: serde_json::Map<String, serde_json::Value>,
    /// Per kind, the fields this role does not see.
    #[schema(value_type = Object)]
    pub hidden: serde_json::Map<String, serde_json::Value>,
}

/// Exchange a user's email and password for a session token (`access.session_hours`).
#[utoipa::path(
    tag = "access",
    request_body = SignIn,
    responses(
        (status = 201, body = Session),
        (status = 401, body = super::error::Problem),
        (status = 429, body = super::error::Problem),
    )
)]
#[post("/v1/auth/sign-in")]
pub async fn sign_in(
    req: HttpRequest,
    body: web::Json<SignIn>,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let session = issue_session(&req, body.into_inner(), meta, &state).await?;
    Ok(HttpResponse::Created().json(session))
}

/// Checks the credentials (throttled per client address, every attempt audited) and
/// issues a session token; shared by the API's sign-in and the console's cookie sign-in.
pub(super) async fn issue_session(
    req: &HttpRequest,
    credentials: SignIn,
    meta: RequestMeta,
    state: &AppState,
) -> Result<Session, ApiError> {
    // Password guessing is throttled per client address, apart from the public webhooks.
    if let Some(peer) = req.peer_addr() {
        state
            .sign_in_limiter
            .check(peer.ip())
            .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
    }
    let SignIn { email, password } = credentials;
    if email.len() > 254 || password.len() > 1024 {
        return Err(ApiError::BadRequest("email or password too long".into()));
    }
    let user = state.store.check_password(&email, &password).await?;
    let Some(user) = user else {
        let ctx = WriteContext::new("anonymous", "api", meta);
        state
            .store
            .record_event(
                &ctx,
                "sign_in_failed",
                RecordKind::User.path(),
                "",
                None,
                Some(email.trim().to_lowercase()),
            )
            .await?;
        return Err(ApiError::Unauthorized);
    };
    let ctx = WriteContext::new(format!("user:{}", user.id), "api", meta);
    let expires =
        chrono::Utc::now() + chrono::Duration::hours(state.config.access.session_hours.into());
    let token = state
        .store
        .create_token(
            &ctx,
            "session",
            &format!("user:{}", user.id),
            &user.role,
            Some(expires),
        )
        .await?;
    state
        .store
        .record_event(
            &ctx,
            "sign_in",
            RecordKind::User.path(),
            &user.id,
            None,
            None,
        )
        .await?;
    Ok(Session {
        token: token.secret,
        token_id: token.id,
        expires_at: crate::domain::value::format_timestamp(expires),
        user,
    })
}

/// Revoke the token this request carries.
#[utoipa::path(tag = "access", responses((status = 204)), security(("bearer" = [])))]
#[post("/v1/auth/sign-out")]
pub async fn sign_out(
    principal: Principal,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ctx = WriteContext::new(principal.actor(), "api", meta);
    state.store.revoke_token(&ctx, principal.token_id()).await?;
    state.tokens.clear();
    Ok(HttpResponse::NoContent().finish())
}

/// The caller: actor, role, what the role may do and which fields it does not see.
#[utoipa::path(tag = "access", responses((status = 200, body = Me)), security(("bearer" = [])))]
#[get("/v1/auth/me")]
pub async fn me(caller: Caller) -> Result<HttpResponse, ApiError> {
    let mut can = serde_json::Map::new();
    let mut hidden = serde_json::Map::new();
    let kinds = RecordKind::ALL
        .iter()
        .map(|k| k.path())
        .chain([crate::access::AUDIT, crate::access::INBOX]);
    for kind in kinds {
        let actions: Vec<&str> = Action::ALL
            .into_iter()
            .filter(|a| caller.role.can(kind, *a))
            .map(Action::as_str)
            .collect();
        if !actions.is_empty() {
            can.insert(kind.to_owned(), actions.into());
        }
        let mut fields: Vec<&str> = caller.role.hidden_fields(kind).collect();
        fields.sort();
        if !fields.is_empty() {
            hidden.insert(kind.to_owned(), fields.into());
        }
    }
    Ok(HttpResponse::Ok().json(Me {
        actor: caller.actor(),
        role: caller.role.name.clone(),
        can,
        hidden,
    }))
}
