//! The caller of a request with everything a permission check needs: principal, role,
//! row reach and request metadata. Every read and write handler goes through its checks,
//! and every refusal is recorded on the audit chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use crate::access::reach::reach_of;
use crate::access::{Action, FieldRule, Reach, RolePolicy};
use crate::domain::RecordKind;
use crate::store::read::{AuditEntry, Record};
use crate::store::{RequestMeta, WriteContext};

pub struct Caller {
    pub principal: Principal,
    pub role: Arc<RolePolicy>,
    pub reach: Reach,
    pub meta: RequestMeta,
    state: web::Data<AppState>,
}

/// Users' reach, recomputed at most every few seconds: team changes apply within `ttl`.
pub struct ReachCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Reach, Instant)>>,
}

impl ReachCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

async fn reach_for(
    state: &AppState,
    principal: &Principal,
    role: &RolePolicy,
) -> Result<Reach, ApiError> {
    let Principal::User { id, team_id, .. } = principal else {
        // The bootstrap admin reaches everything; partners read only through their own
        // endpoint, which checks the submission's owner itself.
        return Ok(match principal {
            Principal::Admin { .. } => Reach::All,
            _ => Reach::Owners(Arc::default()),
        });
    };
    if let Ok(entries) = state.reach.entries.lock()
        && let Some((reach, at)) = entries.get(id)
        && at.elapsed() < state.reach.ttl
    {
        return Ok(reach.clone());
    }
    let reach = reach_of(&state.store, role.reach, id, team_id.as_deref()).await?;
    if let Ok(mut entries) = state.reach.entries.lock() {
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(id.clone(), (reach.clone(), Instant::now()));
    }
    Ok(reach)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let principal = Principal::from_request(req, payload);
        let meta = req
            .extensions()
            .get::<RequestMeta>()
            .cloned()
            .unwrap_or_default();
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let principal = principal.await?;
            let state = state.ok_or_else(|| ApiError::Internal("no app state".into()))?;
            let role = state.access.role(principal.role()).ok_or_else(|| {
                ApiError::Forbidden(format!("role `{}` is not configured", principal.role()))
            })?;
            let reach = reach_for(&state, &principal, &role).await?;
            Ok(Caller {
                principal,
                role,
                reach,
                meta,
                state,
            })
        })
    }
}

use actix_web::HttpMessage;

impl Caller {
    pub fn actor(&self) -> String {
        self.principal.actor()
    }

    pub fn context(&self, channel: &str) -> WriteContext {
        WriteContext::new(self.actor(), channel, self.meta.clone())
    }

    /// Records a refusal on the audit chain; a failure to record is logged, not fatal.
    async fn record_denial(
        &self,
        subject: &'static str,
        id: &str,
        field: Option<&str>,
        reason: String,
    ) {
        let ctx = self.context("api");
        if let Err(error) = self
            .state
            .store
            .record_event(&ctx, "denied", subject, id, field, Some(reason))
            .await
        {
            tracing::warn!(%error, "could not record a permission denial");
        }
        self.state
            .metrics
            .inbound_rejected
            .with_label_values(&["access", "denied"])
            .inc();
    }

    /// 403 unless the role may do `action` on `kind` (a record kind's path, `audit` or
    /// `inbox`).
    pub async fn require(&self, kind: &'static str, action: Action) -> Result<(), ApiError> {
        if self.role.can(kind, action) {
            return Ok(());
        }
        let reason = format!(
            "role `{}` may not {} {kind}",
            self.role.name,
            action.as_str()
        );
        self.record_denial(kind, "", None, reason.clone()).await;
        Err(ApiError::Forbidden(reason))
    }

    fn owner_of(record: &Record) -> Option<&str> {
        record.fields.get("owner_id").and_then(Value::as_str)
    }

    /// Whether the record is within the caller's row reach. An activity without an owner
    /// in reach is still reachable through a record it belongs to.
    async fn reaches(&self, record: &Record) -> Result<bool, ApiError> {
        if self.reach.allows(Self::owner_of(record)) {
            return Ok(true);
        }
        if record.kind == RecordKind::Activity {
            let parents = [
                ("lead_id", RecordKind::Lead),
                ("contact_id", RecordKind::Contact),
                ("account_id", RecordKind::Account),
                ("opportunity_id", RecordKind::Opportunity),
                ("ticket_id", RecordKind::Ticket),
            ];
            for (field, kind) in parents {
                if let Some(id) = record.fields.get(field).and_then(Value::as_str)
                    && let Some(parent) = self.state.store.get(kind, id).await?
                    && self.reach.allows(Self::owner_of(&parent))
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A record the caller may `action`: missing and out-of-reach records both answer 404,
    /// so existence is not revealed.
    pub async fn reachable(
        &self,
        kind: RecordKind,
        id: &str,
        action: Action,
    ) -> Result<Record, ApiError> {
        self.require(kind.path(), action).await?;
        let record = self
            .state
            .store
            .get(kind, id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if !self.reaches(&record).await? {
            self.record_denial(kind.path(), id, None, "outside the caller's reach".into())
                .await;
            return Err(ApiError::NotFound);
        }
        Ok(record)
    }

    /// The record with the fields this role may not see removed.
    pub fn redact(&self, mut record: Record) -> Record {
        for field in self.role.hidden_fields(record.kind.path()) {
            record.fields.remove(field);
        }
        record
    }

    /// 403 naming the first field (in name order) the role may not write; nothing is
    /// written then.
    pub async fn check_writable(
        &self,
        kind: RecordKind,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        let mut names: Vec<&String> = fields.keys().collect();
        names.sort();
        for name in names {
            if let Some(rule) = self.role.write_rule(kind.path(), name) {
                let reason = format!(
                    "role `{}` may not write {}.{name} ({})",
                    self.role.name,
                    kind.path(),
                    match rule {
                        FieldRule::Hidden => "hidden",
                        FieldRule::ReadOnly => "read-only",
                    }
                );
                self.record_denial(kind.path(), id, Some(name), reason.clone())
                    .await;
                return Err(ApiError::Forbidden(reason));
            }
        }
        Ok(())
    }

    /// 403 when a filter or sort names a hidden field: an answer ordered or narrowed by
    /// it would reveal it.
    pub async fn check_readable(&self, kind: RecordKind, field: &str) -> Result<(), ApiError> {
        if self.role.is_hidden(kind.path(), field) {
            let reason = format!(
                "role `{}` may not read {}.{field}",
                self.role.name,
                kind.path()
            );
            self.record_denial(kind.path(), "", Some(field), reason.clone())
                .await;
            return Err(ApiError::Forbidden(reason));
        }
        Ok(())
    }

    /// What search may show this caller: the kinds the role reads, the owners in reach,
    /// and no hidden field (not matched, returned or highlighted).
    pub fn search_scope(&self) -> crate::search::SearchScope {
        let hidden_fields = RecordKind::ALL
            .iter()
            .flat_map(|kind| {
                self.role
                    .hidden_fields(kind.path())
                    .map(move |field| (*kind, field.to_owned()))
            })
            .collect();
        crate::search::SearchScope {
            kinds: Some(self.role.readable_kinds()),
            owner_ids: self.reach.owner_ids(),
            hidden_fields,
        }
    }

    /// Audit entries without hidden fields: rows about a hidden field are dropped and
    /// insert/delete snapshots lose the hidden keys.
    pub fn redact_audit(&self, entries: Vec<AuditEntry>) -> Vec<AuditEntry> {
        entries
            .into_iter()
            .filter(|entry| {
                entry
                    .field
                    .as_deref()
                    .is_none_or(|field| !self.role.is_hidden(&entry.record_kind, field))
            })
            .map(|mut entry| {
                let hidden: Vec<String> = self
                    .role
                    .hidden_fields(&entry.record_kind)
                    .map(str::to_owned)
                    .collect();
                for value in [&mut entry.old_value, &mut entry.new_value] {
                    if let Value::Object(snapshot) = value {
                        for field in &hidden {
                            snapshot.remove(field);
                        }
                    }
                }
                entry
            })
            .collect()
    }
}
