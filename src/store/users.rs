//! Users and teams: the principals behind tokens and the tree a manager's reach follows.
//! Passwords are kept as argon2id hashes; every change goes through the audited path.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Change, Store, StoreError, WriteContext};
use crate::access::reach::{check_team_tree, team_parents};
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;

/// A user as admin answers show it (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub team_id: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub manager_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| UserError::Invalid(format!("password: {e}")))
}

/// A hash to verify against when the user does not exist, so a sign-in for an unknown
/// email costs what a wrong password costs.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password("decoy password that never matches").unwrap_or_default()
});

fn decode_user(row: &sqlx::any::AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        email: row
            .try_get::<Option<String>, _>("email")?
            .unwrap_or_default(),
        name: row.try_get("name")?,
        role: row
            .try_get::<Option<String>, _>("role_id")?
            .unwrap_or_default(),
        team_id: row.try_get("team_id")?,
        active: row.try_get::<Option<i64>, _>("active")?.unwrap_or(0) != 0,
    })
}

impl Store {
    /// Adds a user; `password` (optional: token-only users have none) is hashed here.
    pub async fn create_user(
        &self,
        ctx: &WriteContext,
        email: &str,
        name: Option<&str>,
        role: &str,
        team_id: Option<&str>,
        password: Option<String>,
    ) -> Result<User, UserError> {
        let email = email.trim().to_lowercase();
        if !email.contains('@') || email.len() > 254 {
            return Err(UserError::Invalid(format!(
                "`{email}` is not an email address"
            )));
        }
        if self.user_by_email(&email).await?.is_some() {
            return Err(UserError::Conflict(format!(
                "a user with email {email} exists"
            )));
        }
        if let Some(team) = team_id
            && self.team(team).await?.is_none()
        {
            return Err(UserError::Invalid(format!("team `{team}` does not exist")));
        }
        let password_hash = match password {
            Some(p) if p.chars().count() < 12 => {
                return Err(UserError::Invalid(
                    "password must be at least 12 characters".into(),
                ));
            }
            Some(p) => Some(
                tokio::task::spawn_blocking(move || hash_password(&p))
                    .await
                    .map_err(|e| UserError::Invalid(e.to_string()))??,
            ),
            None => None,
        };
        let mut fields = Map::new();
        fields.insert("email".into(), json!(email));
        fields.insert("name".into(), json!(name));
        fields.insert("role_id".into(), json!(role));
        fields.insert("team_id".into(), json!(team_id));
        fields.insert("active".into(), json!(true));
        if let Some(hash) = password_hash {
            fields.insert("password_hash".into(), json!(hash));
        }
        let written = self
            .write(
                ctx,
                vec![Change::Insert {
                    kind: RecordKind::User,
                    id: None,
                    fields,
                }],
            )
            .await?;
        self.user(&written[0].id).await?.ok_or(UserError::NotFound)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_user).transpose()
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_user).transpose()
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY email")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_user).collect()
    }

    /// The active user whose password this is; `None` for any other case, in about the
    /// same time.
    pub async fn check_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(self.pool())
            .await?;
        let stored: Option<String> = match &row {
            Some(row) => row.try_get("password_hash")?,
            None => None,
        };
        let hash = stored.unwrap_or_else(|| DECOY_HASH.clone());
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        let user = row.as_ref().map(decode_user).transpose()?;
        Ok(user.filter(|u| matches && u.active))
    }

    /// Changes a user's role, team, name or active flag.
    pub async fn update_user(
        &self,
        ctx: &WriteContext,
        id: &str,
        fields: Map<String, Value>,
    ) -> Result<User, UserError> {
        if let Some(Value::String(team)) = fields.get("team_id")
            && self.team(team).await?.is_none()
        {
            return Err(UserError::Invalid(format!("team `{team}` does not exist")));
        }
        self.write(
            ctx,
            vec![Change::Update {
                kind: RecordKind::User,
                id: id.to_owned(),
                fields,
                expected_version: None,
            }],
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => UserError::NotFound,
            other => other.into(),
        })?;
        self.user(id).await?.ok_or(UserError::NotFound)
    }

    /// Deletes a user and revokes their tokens in one transaction.
    pub async fn delete_user(&self, ctx: &WriteContext, id: &str) -> Result<(), UserError> {
        let tokens: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM api_tokens WHERE principal = $1 AND revoked_at IS NULL",
        )
        .bind(format!("user:{id}"))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::from)?;
        let mut changes: Vec<Change> = tokens
            .into_iter()
            .map(|token| Change::Update {
                kind: RecordKind::ApiToken,
                id: token,
                fields: Map::from_iter([("revoked_at".to_owned(), json!(now_timestamp()))]),
                expected_version: None,
            })
            .collect();
        changes.push(Change::Delete {
            kind: RecordKind::User,
            id: id.to_owned(),
        });
        self.write(ctx, changes).await.map_err(|e| match e {
            StoreError::NotFound { .. } => UserError::NotFound,
            other => other.into(),
        })?;
        Ok(())
    }

    pub async fn team(&self, id: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query("SELECT id, name, parent_id, manager_id FROM teams WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(Team {
                id: row.try_get("id")?,
                name: row
                    .try_get::<Option<String>, _>("name")?
                    .unwrap_or_default(),
                parent_id: row.try_get("parent_id")?,
                manager_id: row.try_get("manager_id")?,
            })
        })
        .transpose()
    }

    pub async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM teams ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        let mut teams = Vec::with_capacity(ids.len());
        for id in ids {
            teams.extend(self.team(&id).await?);
        }
        Ok(teams)
    }

    /// Creates (`id` None) or changes a team; a parent that would close a cycle is
    /// refused before anything is written.
    pub async fn save_team(
        &self,
        ctx: &WriteContext,
        id: Option<&str>,
        name: Option<&str>,
        parent_id: Option<Option<&str>>,
        manager_id: Option<&str>,
    ) -> Result<Team, UserError> {
        let mut parents = team_parents(self).await?;
        if let Some(Some(parent)) = parent_id
            && !parents.contains_key(parent)
        {
            return Err(UserError::Invalid(format!(
                "parent team `{parent}` does not exist"
            )));
        }
        if let Some(manager) = manager_id
            && self.user(manager).await?.is_none()
        {
            return Err(UserError::Invalid(format!(
                "manager `{manager}` is not a user"
            )));
        }
        let team_id = id.map(str::to_owned).unwrap_or_else(super::write::new_id);
        if id.is_some() && !parents.contains_key(&team_id) {
            return Err(UserError::NotFound);
        }
        if let Some(parent) = parent_id {
            parents.insert(team_id.clone(), parent.map(str::to_owned));
            check_team_tree(&parents).map_err(UserError::Invalid)?;
        }
        let mut fields = Map::new();
        if let Some(name) = name {
            fields.insert("name".into(), json!(name));
        }
        if let Some(parent) = parent_id {
            fields.insert("parent_id".into(), json!(parent));
        }
        if let Some(manager) = manager_id {
            fields.insert("manager_id".into(), json!(manager));
        }
        let change = match id {
            None => Change::Insert {
                kind: RecordKind::Team,
                id: Some(team_id.clone()),
                fields,
            },
            Some(id) => Change::Update {
                kind: RecordKind::Team,
                id: id.to_owned(),
                fields,
                expected_version: None,
            },
        };
        self.write(ctx, vec![change]).await?;
        self.team(&team_id).await?.ok_or(UserError::NotFound)
    }

    /// Fails when the stored team tree has a cycle (someone edited the table directly).
    pub async fn check_teams(&self) -> Result<(), String> {
        let parents = team_parents(self).await.map_err(|e| e.to_string())?;
        check_team_tree(&parents)
    }
}
