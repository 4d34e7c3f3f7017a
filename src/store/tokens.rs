//! API tokens: high-entropy secrets shown once and kept only as their SHA-256.

use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Change, Store, StoreError, WriteContext};
use crate::domain::RecordKind;
use crate::domain::value::{format_timestamp, now_timestamp};

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub token_id: String,
    /// `admin`, `partner:<name>` or `user:<id>`.
    pub principal: String,
    /// The token's role; for a user's token, the user's current role.
    pub role: String,
    /// For a user's token: the user's team, which their reach follows.
    pub team_id: Option<String>,
}

/// A freshly minted token: the secret exists only in this value.
pub struct NewToken {
    pub id: String,
    pub secret: String,
}

/// SHA-256 suffices for 256-bit random secrets; a slow hash guards low-entropy passwords.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    pub async fn create_token(
        &self,
        ctx: &WriteContext,
        name: &str,
        principal: &str,
        role: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<NewToken, StoreError> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let secret = format!("lg_{}", hex::encode(bytes));
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), json!(name));
        fields.insert("principal".into(), json!(principal));
        fields.insert("role_id".into(), json!(role));
        fields.insert("token_sha256".into(), json!(token_hash(&secret)));
        if let Some(at) = expires_at {
            fields.insert("expires_at".into(), json!(format_timestamp(at)));
        }
        let written = self
            .write(
                ctx,
                vec![Change::Insert {
                    kind: RecordKind::ApiToken,
                    id: None,
                    fields,
                }],
            )
            .await?;
        Ok(NewToken {
            id: written[0].id.clone(),
            secret,
        })
    }

    /// The owner of a presented secret, when it is known, unrevoked and unexpired.
    pub async fn authenticate_token(&self, secret: &str) -> Result<Option<TokenOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT id, principal, role_id FROM api_tokens WHERE token_sha256 = $1 \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(token_hash(secret))
        .bind(now_timestamp())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut owner = TokenOwner {
            token_id: row.try_get("id")?,
            principal: row.try_get("principal")?,
            role: row
                .try_get::<Option<String>, _>("role_id")?
                .unwrap_or_default(),
            team_id: None,
        };
        if let Some(user_id) = owner.principal.strip_prefix("user:") {
            // A deleted or deactivated user's tokens stop working at once.
            match self.user(user_id).await? {
                Some(user) if user.active => {
                    owner.role = user.role;
                    owner.team_id = user.team_id;
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(owner))
    }

    pub async fn revoke_token(&self, ctx: &WriteContext, id: &str) -> Result<(), StoreError> {
        let mut fields = serde_json::Map::new();
        fields.insert("revoked_at".into(), json!(now_timestamp()));
        self.write(
            ctx,
            vec![Change::Update {
                kind: RecordKind::ApiToken,
                id: id.to_owned(),
                fields,
                expected_version: None,
            }],
        )
        .await?;
        Ok(())
    }

    pub async fn token_count(&self) -> Result<i64, StoreError> {
        self.count(RecordKind::ApiToken).await
    }
}

/// Recently authenticated tokens, so a busy partner does not cost a store read per
/// request. A revocation takes effect within `ttl`.
pub struct TokenCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (TokenOwner, std::time::Instant)>>,
}

/// Entries kept at most; the cache starts over past this rather than grow unbounded.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

impl TokenCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    /// Forgets every cached token: a revocation or user deletion through this process
    /// takes effect at once.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    pub async fn authenticate(
        &self,
        store: &Store,
        secret: &str,
    ) -> Result<Option<TokenOwner>, StoreError> {
        let hash = token_hash(secret);
        if let Ok(entries) = self.entries.lock()
            && let Some((owner, at)) = entries.get(&hash)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(owner.clone()));
        }
        let owner = store.authenticate_token(secret).await?;
        if let (Some(owner), Ok(mut entries)) = (&owner, self.entries.lock()) {
            if entries.len() >= TOKEN_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(hash, (owner.clone(), std::time::Instant::now()));
        }
        Ok(owner)
    }
}
