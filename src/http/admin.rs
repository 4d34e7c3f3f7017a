//! Admin endpoints for principals: users, teams, user tokens and partner keys. The same
//! operations as `leadgate user|team|token|partner …`; every change is audited.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::access::Action;
use crate::store::users::{Team, User, UserError};

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::Invalid(detail) => ApiError::Unprocessable(detail),
            UserError::Conflict(detail) => ApiError::Conflict(detail),
            UserError::NotFound => ApiError::NotFound,
            UserError::Store(store) => store.into(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub team_id: Option<String>,
    /// At least 12 characters; omit for a user who signs in only with tokens.
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<String>,
    pub team_id: Option<String>,
    pub active: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub expires_in_days: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartner {
    /// Letters, digits, `-` and `_`; submissions arrive as `partner:<name>`.
    pub name: String,
    pub expires_in_days: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamChange {
    pub name: Option<String>,
    /// `null` makes the team a root.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<Option<String>>,
    pub manager_id: Option<String>,
}

/// A field that is present (even as `null`) is `Some`, so "set to null" differs from
/// "leave alone".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    pub id: String,
    /// Shown once; only its hash is kept.
    pub token: String,
    pub principal: String,
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Users {
    pub items: Vec<User>,
}

#[derive(Serialize, ToSchema)]
pub struct Teams {
    pub items: Vec<Team>,
}

fn check_role(state: &AppState, role: &str) -> Result<(), ApiError> {
    match state.access.role(role) {
        Some(_) => Ok(()),
        None => Err(ApiError::Unprocessable(format!(
            "role `{role}` is not configured (known: {})",
            state.access.role_names().join(", ")
        ))),
    }
}

fn expiry(days: Option<i64>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    match days {
        None => Ok(None),
        Some(d) if (1..=3650).contains(&d) => {
            Ok(Some(chrono::Utc::now() + chrono::Duration::days(d)))
        }
        Some(_) => Err(ApiError::Unprocessable(
            "expires_in_days must be between 1 and 3650".into(),
        )),
    }
}

const USERS: &str = "users";
const TEAMS: &str = "teams";
const TOKENS: &str = "api_tokens";

#[utoipa::path(tag = "admin", responses((status = 200, body = Users)), security(("bearer" = [])))]
#[get("/v1/admin/users")]
pub async fn list_users(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(USERS, Action::Read).await?;
    Ok(HttpResponse::Ok().json(Users {
        items: state.store.users().await?,
    }))
}

#[utoipa::path(tag = "admin", request_body = NewUser, responses((status = 201, body = User), (status = 409, body = super::error::Problem), (status = 422, body = super::error::Problem)), security(("bearer" = [])))]
#[post("/v1/admin/users")]
pub async fn create_user(
    body: web::Json<NewUser>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(USERS, Action::Create).await?;
    let new = body.into_inner();
    check_role(&state, &new.role)?;
    let user = state
        .store
        .create_user(
            &caller.context("api"),
            &new.email,
            new.name.as_deref(),
            &new.role,
            new.team_id.as_deref(),
            new.password,
        )
        .await?;
    Ok(HttpResponse::Created().json(user))
}

#[utoipa::path(tag = "admin", request_body = UserChange, params(("id" = String, Path)), responses((status = 200, body = User), (status = 404, body = super::error::Problem)), security(("bearer" = [])))]
#[patch("/v1/admin/users/{id}")]
pub async fn update_user(
    id: web::Path<String>,
    body: web::Json<UserChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(USERS, Action::Update).await?;
    let change = body.into_inner();
    let mut fields = Map::new();
    if let Some(role) = change.role {
        check_role(&state, &role)?;
        fields.insert("role_id".into(), json!(role));
    }
    if let Some(name) = change.name {
        fields.insert("name".into(), json!(name));
    }
    if let Some(team) = change.team_id {
        fields.insert("team_id".into(), json!(team));
    }
    if let Some(active) = change.active {
        fields.insert("active".into(), Value::Bool(active));
    }
    let user = state
        .store
        .update_user(&caller.context("api"), &id, fields)
        .await?;
    // Role, team and active flag take effect on the next request.
    state.tokens.clear();
    state.reach.clear();
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404, body = super::error::Problem)), security(("bearer" = [])))]
#[delete("/v1/admin/users/{id}")]
pub async fn delete_user(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(USERS, Action::Delete).await?;
    state.store.delete_user(&caller.context("api"), &id).await?;
    state.tokens.clear();
    state.reach.clear();
    Ok(HttpResponse::NoContent().finish())
}

/// A token for a user, shown once.
#[utoipa::path(tag = "admin", request_body = NewToken, params(("id" = String, Path)), responses((status = 201, body = IssuedToken)), security(("bearer" = [])))]
#[post("/v1/admin/users/{id}/tokens")]
pub async fn create_user_token(
    id: web::Path<String>,
    body: web::Json<NewToken>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(TOKENS, Action::Create).await?;
    let user = state.store.user(&id).await?.ok_or(ApiError::NotFound)?;
    let expires = expiry(body.expires_in_days)?;
    let principal = format!("user:{}", user.id);
    let token = state
        .store
        .create_token(
            &caller.context("api"),
            &body.name,
            &principal,
            &user.role,
            expires,
        )
        .await?;
    Ok(HttpResponse::Created().json(IssuedToken {
        id: token.id,
        token: token.secret,
        principal,
        expires_at: expires.map(crate::domain::value::format_timestamp),
    }))
}

/// A partner and its first key, shown once.
#[utoipa::path(tag = "admin", request_body = NewPartner, responses((status = 201, body = IssuedToken), (status = 422, body = super::error::Problem)), security(("bearer" = [])))]
#[post("/v1/admin/partners")]
pub async fn create_partner(
    body: web::Json<NewPartner>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(TOKENS, Action::Create).await?;
    let name = body.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::Unprocessable(
            "partner name must be 1-64 letters, digits, - or _".into(),
        ));
    }
    let expires = expiry(body.expires_in_days)?;
    let principal = format!("partner:{name}");
    let token = state
        .store
        .create_token(&caller.context("api"), name, &principal, "partner", expires)
        .await?;
    Ok(HttpResponse::Created().json(IssuedToken {
        id: token.id,
        token: token.secret,
        principal,
        expires_at: expires.map(crate::domain::value::format_timestamp),
    }))
}

#[utoipa::path(tag = "admin", params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
#[delete("/v1/admin/tokens/{id}")]
pub async fn revoke_token(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(TOKENS, Action::Update).await?;
    state
        .store
        .revoke_token(&caller.context("api"), &id)
        .await?;
    state.tokens.clear();
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(tag = "admin", responses((status = 200, body = Teams)), security(("bearer" = [])))]
#[get("/v1/admin/teams")]
pub async fn list_teams(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(TEAMS, Action::Read).await?;
    Ok(HttpResponse::Ok().json(Teams {
        items: state.store.teams().await?,
    }))
}

/// Create a team; a parent that does not exist is refused.
#[utoipa::path(tag = "admin", request_body = TeamChange, responses((status = 201, body = Team), (status = 422, body = super::error::Problem)), security(("bearer" = [])))]
#[post("/v1/admin/teams")]
pub async fn create_team(
    body: web::Json<TeamChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(TEAMS, Action::Create).await?;
    let change = body.into_inner();
    let name = change
        .name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::Unprocessable("a team needs a name".into()))?;
    let parent = change.parent_id.as_ref().map(|p| p.as_deref());
    let team = state
        .store
        .save_team(
            &caller.context("api"),
            None,
            Some(name),
            parent,
            change.manager_id.as_deref(),
        )
        .await?;
    Ok(HttpResponse::Created().json(team))
}

/// Change a team; a parent that would put the team under itself is refused (422).
#[utoipa::path(tag = "admin", request_body = TeamChange, params(("id" = String, Path)), responses((status = 200, body = Team), (status = 422, body = super::error::Problem)), security(("bearer" = [])))]
#[patch("/v1/admin/teams/{id}")]
pub async fn update_team(
    id: web::Path<String>,
    body: web::Json<TeamChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(TEAMS, Action::Update).await?;
    let change = body.into_inner();
    let parent = change.parent_id.as_ref().map(|p| p.as_deref());
    let team = state
        .store
        .save_team(
            &caller.context("api"),
            Some(&id),
            change.name.as_deref(),
            parent,
            change.manager_id.as_deref(),
        )
        .await?;
    state.reach.clear();
    Ok(HttpResponse::Ok().json(team))
}
