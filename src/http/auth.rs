//! Who is calling: a bearer token resolved to a principal: the bootstrap admin, a
//! partner key, or a user's token (sign-in or `leadgate token create --user`). What the
//! principal may do is decided by its role (src/access, via [`super::caller::Caller`]).

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::AppState;
use super::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin {
        token_id: String,
    },
    Partner {
        name: String,
        token_id: String,
    },
    User {
        id: String,
        role: String,
        team_id: Option<String>,
        token_id: String,
    },
}

impl Principal {
    /// The actor recorded on audit rows.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin { token_id } => format!("token:{token_id}"),
            Principal::Partner { name, .. } => format!("partner:{name}"),
            Principal::User { id, .. } => format!("user:{id}"),
        }
    }

    /// The role whose rules apply.
    pub fn role(&self) -> &str {
        match self {
            Principal::Admin { .. } => "admin",
            Principal::Partner { .. } => "partner",
            Principal::User { role, .. } => role,
        }
    }

    pub fn token_id(&self) -> &str {
        match self {
            Principal::Admin { token_id }
            | Principal::Partner { token_id, .. }
            | Principal::User { token_id, .. } => token_id,
        }
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty() && t.len() <= 256)
}

/// Where the request's token came from and whether it may be used: a bearer header is
/// never sent by a browser on its own, so it needs no CSRF check; the console's session
/// cookie is, so a state-changing request carrying it must also carry the session's CSRF
/// token (see [`super::console`]).
fn credential(req: &HttpRequest) -> Result<Option<String>, &'static str> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return Ok(bearer(req));
    }
    let Some(token) = super::console::session_cookie(req) else {
        return Ok(None);
    };
    if !req.method().is_safe() && !super::console::csrf_matches(req, &token) {
        return Err("csrf");
    }
    Ok(Some(token))
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = credential(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("no app state".into()))?;
            let reject = |reason: &str| {
                state
                    .metrics
                    .inbound_rejected
                    .with_label_values(&["auth", reason])
                    .inc();
                ApiError::Unauthorized
            };
            let token = match token {
                Ok(token) => token.ok_or_else(|| reject("missing"))?,
                Err(reason) => {
                    reject(reason);
                    return Err(ApiError::Forbidden(
                        "missing or wrong X-CSRF-Token: a state-changing request signed in by the console's cookie must carry its session's CSRF token".into(),
                    ));
                }
            };
            let owner = state
                .tokens
                .authenticate(&state.store, &token)
                .await?
                .ok_or_else(|| reject("invalid"))?;
            if let Some(id) = owner.principal.strip_prefix("user:") {
                return Ok(Principal::User {
                    id: id.to_owned(),
                    role: owner.role,
                    team_id: owner.team_id,
                    token_id: owner.token_id,
                });
            }
            match (
                owner.role.as_str(),
                owner.principal.strip_prefix("partner:"),
            ) {
                ("admin", _) => Ok(Principal::Admin {
                    token_id: owner.token_id,
                }),
                ("partner", Some(name)) => Ok(Principal::Partner {
                    name: name.to_owned(),
                    token_id: owner.token_id,
                }),
                _ => Err(reject("unknown-role")),
            }
        })
    }
}
