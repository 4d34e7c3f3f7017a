//! The pipeline: what an inbox row becomes. Map (mappings/*.toml) → normalise → dedup
//! (merge, review or new) → persist, all inside the worker's transaction, so a row is done
//! exactly when its records, their audit rows and its lineage are written.

pub mod assign;
mod blocking;
pub mod decay;
pub mod dedup;
mod enrich;
pub mod harness;
pub mod nats_worker;
mod normalise;
pub mod review;
pub mod score;
pub mod unmerge;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sqlx::AnyConnection;

use crate::domain::{RecordKind, SqlValue};
use crate::lifecycle::Qualification;
use crate::mapping::{Mapping, MappingSet};
use crate::outbound::{Content, WHATSAPP};
use crate::store::inbox::InboxRow;
use crate::store::write::{
    DomainAccount, Journal, Placeholders, apply_journaled, new_id, read_current,
};
use crate::store::{Change, StoreError, WriteContext};

pub use assign::Assigner;
pub use dedup::{Dedup, Outcome};
pub use enrich::Enrich;
pub use normalise::Normalise;
pub use score::Scoring;

/// A record on its way through the stages.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: RecordKind,
    pub fields: Map<String, Value>,
    pub custom: Map<String, Value>,
    /// Raw values a mapping transform could not convert, by target field.
    pub unconverted: Map<String, Value>,
    /// How the arrival shows on the timeline.
    pub activity: Map<String, Value>,
    /// Set when the mapping says this inbound record makes no record (`field=value`).
    pub skipped: Option<String>,
    /// Set when the arrival calls for a follow-up task for a known lead's owner.
    pub follow_up: Option<String>,
    /// Fields whose exact value identifies the lead (the mapping's `identify_by`).
    pub identify_by: Vec<String>,
    /// `(external id, status)`: this arrival updates an earlier activity instead.
    pub activity_update: Option<(String, String)>,
    /// A lead's values as the matcher sees them, prepared with the other pure stages
    /// (so a batch prepares them on every core).
    pub arrival: Option<dedup::Arrival>,
}

impl Draft {
    pub fn new(kind: RecordKind) -> Self {
        Self {
            kind,
            fields: Map::new(),
            custom: Map::new(),
            unconverted: Map::new(),
            activity: Map::new(),
            skipped: None,
            follow_up: None,
            identify_by: Vec::new(),
            activity_update: None,
            arrival: None,
        }
    }

    pub fn set(&mut self, field: &str, value: String) {
        self.fields.insert(field.to_owned(), Value::String(value));
    }

    /// Keeps a value that failed a check, and says which and why.
    pub fn flag(&mut self, field: &str, raw: &str, reason: &str) {
        let issues = self
            .custom
            .entry("_issues")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = issues {
            list.push(json!({"field": field, "value": raw, "reason": reason}));
        }
    }

    /// Text of a field, or the raw text a transform could not convert.
    pub fn text(&self, field: &str) -> Option<String> {
        self.fields
            .get(field)
            .or_else(|| self.unconverted.get(field))
            .and_then(|value| match value {
                Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    }
}

/// A synchronous step over a draft (normalise; enrich, score and assign to come).
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn apply(&self, draft: &mut Draft) -> Result<(), PipelineError>;
}

/// A row that cannot be processed as it stands; kept on the row, retryable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PipelineError(pub String);

/// Why one row failed: its own data (the row fails, the batch goes on) or the store.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Row(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The inbound field an import row names its mapping in, when the upload chose one.
pub const CHOSEN_MAPPING: &str = "_mapping";

/// Fields that identify a person; a lead needs at least one.
const IDENTIFYING: &[&str] = &["email", "phone", "first_name", "last_name", "company"];

pub struct Pipeline {
    mappings: MappingSet,
    /// Sources with a mapping of their own (`forms.<name>.mapping`).
    routes: Vec<(String, String)>,
    /// When set, every row is mapped with this (the `dedup` command's `--mapping`).
    forced: Option<Mapping>,
    stages: Vec<Box<dyn Stage>>,
    dedup: Dedup,
    scoring: Scoring,
    assigner: Assigner,
    qualification: Qualification,
    /// Sent back when an inbound WhatsApp message creates a new lead.
    first_touch: Option<Content>,
    /// Source families, most trusted first (`survivorship_priority`).
    priority: Vec<String>,
    /// Tickets from support mailboxes and WhatsApp (`[service]`).
    service: Arc<crate::service::Service>,
}

impl Pipeline {
    pub fn new(
        mappings: MappingSet,
        stages: Vec<Box<dyn Stage>>,
        dedup: Dedup,
        scoring: Scoring,
        assigner: Assigner,
    ) -> Self {
        Self {
            mappings,
            routes: Vec::new(),
            forced: None,
            stages,
            dedup,
            scoring,
            assigner,
            qualification: Qualification::Bant,
            first_touch: None,
            priority: Vec::new(),
            service: Arc::new(crate::service::Service::defaults()),
        }
    }

    /// Survivorship by source: a field set by a source earlier in `priority` is not
    /// overwritten by a later (or unlisted) one; among equals the newest value wins.
    pub fn with_source_priority(mut self, priority: Vec<String>) -> Self {
        self.priority = priority;
        self
    }

    /// Queues `reply` to the sender of every inbound WhatsApp message that creates a lead.
    pub fn with_first_touch(mut self, reply: Option<Content>) -> Self {
        self.first_touch = reply;
        self
    }

    /// The service configuration tickets from channels follow.
    pub fn with_service(mut self, service: Arc<crate::service::Service>) -> Self {
        self.service = service;
        self
    }

    pub fn service(&self) -> Arc<crate::service::Service> {
        self.service.clone()
    }

    pub fn with_qualification(mut self, qualification: Qualification) -> Self {
        self.qualification = qualification;
        self
    }

    /// Maps rows of `source` with the mapping named `mapping`, which must exist.
    pub fn route(mut self, source: &str, mapping: &str) -> Result<Self, String> {
        if self.mappings.by_name(mapping).is_none() {
            return Err(format!("{source}: no mapping named `{mapping}`"));
        }
        self.routes.push((source.to_owned(), mapping.to_owned()));
        Ok(self)
    }

    pub fn with_mapping(mut self, mapping: Mapping) -> Self {
        self.forced = Some(mapping);
        self
    }

    /// Makes a lead written outside the pipeline (the records API) a dedup candidate for
    /// later arrivals, under the values it has now.
    pub async fn remember_written(
        &self,
        conn: &mut AnyConnection,
        kind: RecordKind,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        if kind != RecordKind::Lead {
            return Ok(());
        }
        let mut draft = Draft::new(kind);
        draft.fields = fields.clone();
        let arrival = self.dedup.arrival(&draft);
        let mut journal = Journal::default();
        self.dedup
            .remember(&mut journal, kind, id, &format!("api:{id}"), &arrival)?;
        journal.flush(conn).await
    }

    /// A bounce (the email connector's `bounce_recipients`) marks each failed address
    /// undeliverable on the leads and contacts that carry it, with a timeline entry.
    /// Returns the ids of the records marked.
    async fn mark_bounced(
        &self,
        conn: &mut AnyConnection,
        journal: &mut Journal,
        row: &InboxRow,
    ) -> Result<Vec<String>, RowError> {
        let recipients: Vec<String> = row.fields["bounce_recipients"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(|address| address.trim().to_lowercase())
                    .filter(|address| address.contains('@'))
                    .collect()
            })
            .unwrap_or_default();
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        journal.settle_inserts(conn).await?;
        let ctx = Arc::new(WriteContext::new(
            row.source.clone(),
            worker::source_family(&row.source),
            row.meta.clone(),
        ));
        let mut changes = Vec::new();
        let mut marked = Vec::new();
        for address in &recipients {
            // A hard bounce suppresses the address for every later send, and the leads
            // carrying it leave their sequences.
            crate::nurture::suppression::suppress_in(conn, address, "bounced", &row.source).await?;
            for (kind, parent) in [
                (RecordKind::Lead, "lead_id"),
                (RecordKind::Contact, "contact_id"),
            ] {
                let sql = format!("SELECT id FROM {} WHERE email = $1", kind.table());
                let ids: Vec<String> = sqlx::query_scalar(&sql)
                    .bind(address)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::from)?;
                for id in ids {
                    if kind == RecordKind::Lead {
                        crate::nurture::sequences::exit_all_in(conn, &id, "bounced")
                            .await
                            .map_err(|e| match e {
                                crate::nurture::NurtureError::Store(e) => e,
                                other => StoreError::Unavailable(other.to_string()),
                            })?;
                    }
                    changes.push(Change::Update {
                        kind,
                        id: id.clone(),
                        fields: Map::from_iter([
                            ("email_undeliverable".to_owned(), Value::Bool(true)),
                            ("email_bounced_at".to_owned(), json!(row.received_at)),
                        ]),
                        expected_version: None,
                    });
                    changes.push(activity_insert(json!({
                        "activity_type": "email_bounce",
                        "channel": "email",
                        "direction": "inbound",
                        "subject": format!("Email to {address} bounced"),
                        "occurred_at": row.received_at,
                        parent: id,
                        "inbound_id": row.id,
                        "external_id": row.external_id,
                    })));
                    marked.push(id);
                }
            }
        }
        apply_journaled(conn, &ctx, changes, journal).await?;
        Ok(marked)
    }

    /// A mapping by name (an upload's `mapping=NAME`).
    pub fn mapping(&self, name: &str) -> Option<&Mapping> {
        self.mappings.by_name(name)
    }

    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Reads, for a batch of prepared leads, what each would otherwise ask the store
    /// one at a time: the account of a contact with the lead's email, and the account of
    /// its domain.
    pub async fn prefetch(
        &self,
        conn: &mut AnyConnection,
        journal: &mut Journal,
        drafts: &[Result<Draft, PipelineError>],
    ) -> Result<(), StoreError> {
        use sqlx::Row;
        let mut emails: Vec<String> = drafts
            .iter()
            .flatten()
            .filter(|draft| draft.kind == RecordKind::Lead && draft.text("account_id").is_none())
            .filter_map(|draft| draft.text("email"))
            .collect();
        emails.sort_unstable();
        emails.dedup();
        let placeholders = Placeholders::of(conn);
        for chunk in emails.chunks(500) {
            let sql = format!(
                "SELECT email, account_id FROM contacts WHERE email IN ({}) \
                 AND account_id IS NOT NULL",
                placeholders.list(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for email in chunk {
                query = query.bind(email.as_str());
            }
            let mut known: HashMap<String, Option<String>> =
                chunk.iter().map(|email| (email.clone(), None)).collect();
            for row in query.fetch_all(&mut *conn).await? {
                let email: String = row.try_get("email")?;
                if let Some(account @ None) = known.get_mut(&email) {
                    *account = Some(row.try_get("account_id")?);
                }
            }
            journal.remember_contact_accounts(known);
        }
        // The accounts of the batch's domains, for leads no contact links.
        let mut domains: Vec<String> = drafts
            .iter()
            .flatten()
            .filter(|draft| draft.kind == RecordKind::Lead && draft.text("account_id").is_none())
            .filter_map(account_domain)
            .collect();
        domains.sort_unstable();
        domains.dedup();
        let known = accounts_by_domain(conn, &domains).await?;
        journal.remember_domain_accounts(known);
        Ok(())
    }

    /// `prepare` for a batch, spread over the cores: mapping, normalising and preparing
    /// a lead for matching (phone parsing above all) is most of a row's own CPU, and
    /// none of it needs the store.
    pub fn prepare_batch(&self, rows: &[InboxRow]) -> Vec<Result<Draft, PipelineError>> {
        use rayon::prelude::*;
        rows.par_iter()
            .with_min_len(16)
            .map(|row| self.prepare(row))
            .collect()
    }

    /// Map and run the pure stages; no store access.
    pub fn prepare(&self, row: &InboxRow) -> Result<Draft, PipelineError> {
        let Value::Object(inbound) = &row.fields else {
            return Err(PipelineError("inbound fields are not an object".into()));
        };
        // An upload may name its mapping (`mapping=zoom_attendees`); only imports may.
        let chosen = row
            .source
            .starts_with("import:")
            .then(|| inbound.get(CHOSEN_MAPPING).and_then(Value::as_str))
            .flatten()
            .and_then(|name| self.mappings.by_name(name));
        let routed = self
            .routes
            .iter()
            .find(|(source, _)| *source == row.source)
            .and_then(|(_, name)| self.mappings.by_name(name));
        let mapping = self
            .forced
            .as_ref()
            .or(chosen)
            .or(routed)
            .or_else(|| self.mappings.for_source(&row.source))
            .ok_or_else(|| PipelineError(format!("no mapping serves source `{}`", row.source)))?;
        let mut draft = Draft::new(mapping.target);
        if let Some(reason) = mapping.skipped_by(inbound) {
            draft.skipped = Some(reason);
            return Ok(draft);
        }
        if let Some(update) = mapping.activity_update(inbound) {
            draft.activity_update = Some(update);
            return Ok(draft);
        }
        let spec = &mapping.activity;
        let detail = |field: &Option<String>| Mapping::inbound_text(inbound, field.as_deref());
        let activity_type = spec
            .activity_type
            .clone()
            .unwrap_or_else(|| "inbound".into());
        draft
            .activity
            .insert("activity_type".into(), Value::from(activity_type));
        let subject = detail(&spec.subject_from)
            .map(|s| format!("{s} via {}", row.source))
            .unwrap_or_else(|| format!("Received from {}", row.source));
        draft
            .activity
            .insert("subject".into(), Value::from(subject));
        if let Some(body) = detail(&spec.body_from) {
            draft.activity.insert("body".into(), Value::from(body));
        }
        if let Some(seconds) = detail(&spec.duration_from).and_then(|d| d.parse::<i64>().ok()) {
            draft
                .activity
                .insert("duration_seconds".into(), Value::from(seconds));
        }
        let direction = detail(&spec.direction_from)
            .map(|d| {
                if d.starts_with("outbound") {
                    "outbound"
                } else {
                    "inbound"
                }
            })
            .unwrap_or("inbound");
        draft
            .activity
            .insert("direction".into(), Value::from(direction));
        draft.follow_up = spec.follow_up(inbound);
        draft.identify_by = mapping.identify_by.clone();
        let mapped = mapping.apply(inbound);
        draft.fields = mapped.fields;
        draft.custom = mapped.custom;
        draft.custom.remove(CHOSEN_MAPPING);
        draft.unconverted = mapped.unconverted;
        for (field, reason) in &mapped.problems {
            let raw = draft
                .unconverted
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            draft.flag(field, &raw, reason);
        }
        for stage in &self.stages {
            stage.apply(&mut draft)?;
        }
        // Values the store would refuse are kept as custom fields and flagged.
        let kind = draft.kind;
        let names: Vec<String> = draft.fields.keys().cloned().collect();
        for name in names {
            let fits = kind.field(&name).is_some_and(|def| {
                draft
                    .fields
                    .get(&name)
                    .is_some_and(|v| SqlValue::from_json(def, v).is_ok())
            });
            if !fits && let Some(value) = draft.fields.remove(&name) {
                let raw = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                draft.flag(&name, &raw, "does not fit the field's type");
                draft.custom.insert(name, value);
            }
        }
        if kind == RecordKind::Lead {
            let identified = IDENTIFYING.iter().any(|f| draft.text(f).is_some());
            if !identified {
                return Err(PipelineError(
                    "no identifying field: a lead needs an email, phone, name or company".into(),
                ));
            }
            draft.arrival = Some(self.dedup.arrival(&draft));
        }
        Ok(draft)
    }

    /// Dedup and persist one prepared row in the worker's transaction; answers the
    /// lineage recorded on the inbox row.
    pub async fn persist(
        &self,
        conn: &mut AnyConnection,
        journal: &mut Journal,
        row: &InboxRow,
        mut draft: Draft,
    ) -> Result<Value, RowError> {
        if let Some(reason) = &draft.skipped {
            let bounced = self.mark_bounced(conn, journal, row).await?;
            if !bounced.is_empty() {
                return Ok(json!({"action": "skipped", "reason": reason,
                                 "marked_undeliverable": bounced}));
            }
            return Ok(json!({"action": "skipped", "reason": reason}));
        }
        let ctx = Arc::new(WriteContext::new(
            row.source.clone(),
            worker::source_family(&row.source),
            row.meta.clone(),
        ));
        if let Some((external_id, status)) = &draft.activity_update {
            journal.settle_inserts(conn).await?;
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM activities WHERE external_id = $1")
                    .bind(external_id)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::from)?;
            if ids.is_empty() {
                return Ok(json!({"action": "skipped",
                    "reason": format!("no activity for {external_id}")}));
            }
            let changes = ids
                .iter()
                .map(|id| Change::Update {
                    kind: RecordKind::Activity,
                    id: id.clone(),
                    fields: Map::from_iter([("status".to_owned(), json!(status))]),
                    expected_version: None,
                })
                .collect();
            apply_journaled(conn, &ctx, changes, journal).await?;
            return Ok(
                json!({"action": "updated", "kind": "activities", "ids": ids, "status": status}),
            );
        }
        if draft.kind == RecordKind::Ticket {
            return crate::service::intake::email(conn, journal, &ctx, &self.service, row, draft)
                .await;
        }
        if self.service.config.whatsapp_tickets
            && row.source == WHATSAPP
            && draft.kind == RecordKind::Lead
            && let Some(result) =
                crate::service::intake::whatsapp(conn, journal, &ctx, &self.service, row, &draft)
                    .await?
        {
            return Ok(result);
        }
        if draft.kind == RecordKind::Payment {
            // A payment is allocated to invoices and may refund an earlier one: the
            // billing operations write it (through the same write path and transaction).
            journal.settle_inserts(conn).await?;
            return crate::billing::payments::persist_inbound(
                conn,
                &ctx,
                &row.source,
                &draft.fields,
                &draft.custom,
            )
            .await
            .map_err(|error| match error {
                crate::billing::BillingError::Store(store) => RowError::Store(store),
                other => RowError::Row(PipelineError(other.to_string())),
            });
        }
        if draft.kind != RecordKind::Lead {
            let id = new_id();
            let mut fields = draft.fields;
            if !draft.custom.is_empty() && draft.kind.field("custom").is_some() {
                fields.insert("custom".into(), Value::Object(draft.custom));
            }
            apply_journaled(
                conn,
                &ctx,
                vec![Change::Insert {
                    kind: draft.kind,
                    id: Some(id.clone()),
                    fields,
                }],
                journal,
            )
            .await?;
            return Ok(json!({"action": "created", "kind": draft.kind, "id": id}));
        }
        let arrival = match draft.arrival.take() {
            Some(arrival) => arrival,
            None => self.dedup.arrival(&draft),
        };
        let identified = identified_lead(conn, journal, &draft).await?;
        let by_identity = identified.is_some();
        let outcome = match identified {
            Some(into) => Outcome::Merge {
                into,
                score: f64::from(u8::MAX),
            },
            None => self.dedup.decide(conn, journal, &arrival).await?,
        };
        if !matches!(outcome, Outcome::Merge { .. }) {
            link_account(conn, journal, &ctx, &mut draft).await?;
        }
        draft
            .fields
            .entry("source")
            .or_insert_with(|| Value::from(row.source.clone()));
        let mut score_change: Option<(i64, Scored)> = None;
        let mut initial_score: Option<Value> = None;
        let mut assignment = None;
        let mut qualification_change: Option<bool> = None;
        let (lead_id, mut result, changes) = match &outcome {
            Outcome::Merge { into, score } => {
                if journal.is_pending(RecordKind::Lead, into) {
                    journal.settle_inserts(conn).await?;
                }
                let read = read_current(conn, RecordKind::Lead, into).await?;
                let existing = &read.fields;
                let mut fields = survivorship(
                    existing,
                    &draft,
                    worker::source_family(&row.source),
                    &self.priority,
                );
                if by_identity {
                    // A channel's own profile (a WhatsApp display name) fills gaps; it does
                    // not overwrite what the lead already says.
                    fields.retain(|name, _| {
                        name == "custom"
                            || existing.get(name).is_none_or(|v| {
                                v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())
                            })
                    });
                }
                let mut merged = existing.clone();
                merged.extend(fields.clone());
                let behaviour_before = existing
                    .get("behaviour_score")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let scored = self.score(&merged, behaviour_before, &row.source);
                let before = existing.get("score").and_then(Value::as_i64).unwrap_or(0);
                if scored.score != before {
                    scored.write_into(&mut fields);
                    score_change = Some((before, scored));
                }
                if let Some(qualified) = self.qualification.evaluate(&merged) {
                    qualification_change = qualified.get("qualified").and_then(Value::as_bool);
                    fields.extend(qualified);
                }
                (
                    into.clone(),
                    json!({"action": "merged", "kind": "leads", "id": into, "score": score}),
                    vec![Change::MergeIncoming {
                        kind: RecordKind::Lead,
                        into: into.clone(),
                        fields,
                        read: Some(Box::new(read)),
                    }],
                )
            }
            Outcome::Review { .. } | Outcome::New => {
                let id = new_id();
                let mut fields = draft.fields.clone();
                fields.insert("status".into(), Value::from("new"));
                let scored = self.score(&fields, 0, &row.source);
                scored.write_into(&mut fields);
                if let Some(qualified) = self.qualification.evaluate(&fields) {
                    qualification_change = qualified.get("qualified").and_then(Value::as_bool);
                    fields.extend(qualified);
                }
                // A new record's first score is told by its arrival on the timeline (one
                // activity, not two per lead); later changes are `score_change`s.
                initial_score = Some(json!({"to": scored.score, "fit": scored.fit.total,
                    "behaviour": scored.behaviour, "rules": scored.rules}));
                if !fields.contains_key("owner_id")
                    && let Some(assigned) = self.assigner.assign(conn, &fields, &row.source).await?
                {
                    fields.insert("owner_id".into(), Value::from(assigned.owner.clone()));
                    assignment = Some(assigned);
                }
                if !draft.custom.is_empty() {
                    fields.insert("custom".into(), Value::Object(draft.custom.clone()));
                }
                if !self.priority.is_empty() {
                    let family = worker::source_family(&row.source);
                    let sources: Map<String, Value> = draft
                        .fields
                        .iter()
                        .filter(|(name, value)| *name != "source" && !is_blank(value))
                        .map(|(name, _)| (name.clone(), Value::from(family)))
                        .collect();
                    fields.insert("field_sources".into(), Value::Object(sources));
                }
                let action = if matches!(outcome, Outcome::New) {
                    "created"
                } else {
                    "review"
                };
                (
                    id.clone(),
                    json!({"action": action, "kind": "leads", "id": id}),
                    vec![Change::Insert {
                        kind: RecordKind::Lead,
                        id: Some(id),
                        fields,
                    }],
                )
            }
        };
        let mut activity = std::mem::take(&mut draft.activity);
        for (key, value) in [
            ("channel", json!(row.source)),
            ("occurred_at", json!(row.received_at)),
            ("lead_id", json!(lead_id)),
            ("inbound_id", json!(row.id)),
            ("external_id", json!(row.external_id)),
            ("data", json!({"dedup": result["action"]})),
        ] {
            activity.insert(key.into(), value);
        }
        if let (Some(score), Some(Value::Object(data))) = (initial_score, activity.get_mut("data"))
        {
            data.insert("score".into(), score);
        }
        let mut changes = changes;
        changes.push(Change::Insert {
            kind: RecordKind::Activity,
            id: None,
            fields: activity,
        });
        if let (Some(reason), Outcome::Merge { into, .. }) = (&draft.follow_up, &outcome) {
            let owner = load_lead(conn, into)
                .await?
                .get("owner_id")
                .cloned()
                .unwrap_or(Value::Null);
            let subject = match draft.text("phone") {
                Some(phone) => format!("Call back {phone}"),
                None => "Follow up".to_owned(),
            };
            let task = json!({
                "activity_type": "task",
                "channel": "pipeline",
                "subject": subject,
                "status": "open",
                "occurred_at": row.received_at,
                "lead_id": lead_id,
                "owner_id": owner,
                "inbound_id": row.id,
                "data": {"because": reason},
            });
            changes.push(activity_insert(task));
        }
        if let Some(assigned) = assignment {
            let activity = json!({
                "activity_type": "assignment",
                "channel": "pipeline",
                "subject": format!("Assigned to {} by rule “{}”", assigned.owner, assigned.rule),
                "occurred_at": row.received_at,
                "lead_id": lead_id,
                "owner_id": assigned.owner,
                "inbound_id": row.id,
                "data": {"rule": assigned.rule, "team": assigned.team, "owner": assigned.owner},
            });
            changes.push(activity_insert(activity));
        }
        if let Some(qualified) = qualification_change {
            let activity = json!({
                "activity_type": "qualification",
                "channel": "pipeline",
                "subject": if qualified { "Qualified" } else { "No longer qualified" },
                "occurred_at": row.received_at,
                "lead_id": lead_id,
                "inbound_id": row.id,
                "data": {"framework": self.qualification, "qualified": qualified},
            });
            changes.push(activity_insert(activity));
        }
        if let Some((from, scored)) = score_change {
            let activity = json!({
                "activity_type": "score_change",
                "channel": "pipeline",
                "subject": format!("Score {from} → {}", scored.score),
                "occurred_at": row.received_at,
                "lead_id": lead_id,
                "inbound_id": row.id,
                "data": {"from": from, "to": scored.score, "fit": scored.fit.total,
                         "behaviour": scored.behaviour, "rules": scored.rules},
            });
            changes.push(activity_insert(activity));
        }
        let first_touch = match &outcome {
            Outcome::New | Outcome::Review { .. } => self.first_touch_for(row),
            Outcome::Merge { .. } => None,
        };
        if let Some((recipient, content)) = &first_touch {
            let id = new_id();
            changes.push(Change::Insert {
                kind: RecordKind::Activity,
                id: Some(id.clone()),
                fields: outbound_activity(&lead_id, content, Some(&row.id), "first_touch"),
            });
            crate::store::outbound::enqueue(conn, WHATSAPP, &id, recipient, &json!(content))
                .await?;
            result["first_touch_activity_id"] = json!(id);
        }
        apply_journaled(conn, &ctx, changes, journal).await?;
        self.dedup
            .remember(journal, RecordKind::Lead, &lead_id, &row.id, &arrival)?;
        if let Outcome::Review {
            with,
            score,
            breakdown,
        } = &outcome
        {
            dedup::open_review(
                conn,
                RecordKind::Lead,
                with,
                &lead_id,
                *score,
                breakdown,
                &row.id,
            )
            .await?;
            result["review_with"] = json!(with);
            result["score"] = json!(score);
        }
        Ok(result)
    }
}

/// Links a lead to its account: the account of a contact with the same email, else the
/// account owning its corporate email or website domain, created when there is none. A
/// known account's owner is kept (owner stickiness).
async fn link_account(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    draft: &mut Draft,
) -> Result<(), StoreError> {
    if draft.text("account_id").is_some() {
        return Ok(());
    }
    if let Some(email) = draft.text("email") {
        let account = match journal.contact_account(&email) {
            Some(known) => known.map(str::to_owned),
            None => sqlx::query_scalar(
                "SELECT account_id FROM contacts WHERE email = $1 AND account_id IS NOT NULL LIMIT 1",
            )
            .bind(&email)
            .fetch_optional(&mut *conn)
            .await?,
        };
        if let Some(account) = account {
            draft.set("account_id", account);
            return Ok(());
        }
    }
    let Some(domain) = account_domain(draft) else {
        return Ok(());
    };
    let found = match journal.domain_account(&domain) {
        Some(known) => known.cloned(),
        None => {
            // Not prefetched (or dropped by an account change): the store must see this
            // transaction's queued accounts.
            journal.settle_inserts(conn).await?;
            let found = accounts_by_domain(conn, std::slice::from_ref(&domain))
                .await?
                .remove(&domain)
                .flatten();
            journal.remember_domain_accounts([(domain.clone(), found.clone())]);
            found
        }
    };
    let account = match found {
        Some(DomainAccount { id, owner_id }) => {
            if let Some(owner) = owner_id.filter(|_| draft.text("owner_id").is_none()) {
                draft.set("owner_id", owner);
            }
            id
        }
        None => {
            let id = new_id();
            let name = draft.text("company").unwrap_or_else(|| domain.clone());
            let mut fields = Map::new();
            fields.insert("name".into(), Value::String(name));
            fields.insert("domain".into(), Value::String(domain.clone()));
            if let Some(website) = draft.text("website") {
                fields.insert("website".into(), Value::String(website));
            }
            apply_journaled(
                conn,
                ctx,
                vec![Change::Insert {
                    kind: RecordKind::Account,
                    id: Some(id.clone()),
                    fields,
                }],
                journal,
            )
            .await?;
            // Later rows of this batch find it in the journal, which took it in.
            id
        }
    };
    draft.set("account_id", account);
    Ok(())
}

/// The domain whose account a lead joins: its corporate email's, else its website's.
fn account_domain(draft: &Draft) -> Option<String> {
    let corporate = draft.text("email_type").as_deref() == Some("corporate");
    draft
        .text("email")
        .filter(|_| corporate)
        .as_deref()
        .and_then(enrich::email_domain)
        .or_else(|| {
            draft
                .text("website")
                .as_deref()
                .and_then(enrich::website_domain)
        })
}

/// The account of each domain (the oldest where several share one), `None` for a domain
/// without; every domain asked is in the answer.
async fn accounts_by_domain(
    conn: &mut AnyConnection,
    domains: &[String],
) -> Result<HashMap<String, Option<DomainAccount>>, StoreError> {
    use sqlx::Row;
    let placeholders = Placeholders::of(conn);
    let mut known: HashMap<String, Option<DomainAccount>> = domains
        .iter()
        .map(|domain| (domain.clone(), None))
        .collect();
    for chunk in domains.chunks(500) {
        let sql = format!(
            "SELECT domain, id, owner_id FROM accounts WHERE domain IN ({}) ORDER BY id",
            placeholders.list(chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for domain in chunk {
            query = query.bind(domain.as_str());
        }
        for row in query.fetch_all(&mut *conn).await? {
            let domain: String = row.try_get("domain")?;
            if let Some(account @ None) = known.get_mut(&domain) {
                *account = Some(DomainAccount {
                    id: row.try_get("id")?,
                    owner_id: row.try_get("owner_id")?,
                });
            }
        }
    }
    Ok(known)
}

impl Pipeline {
    /// The first-touch reply and its recipient (the sender's wa_id) for an inbound
    /// WhatsApp message, when one is configured.
    fn first_touch_for(&self, row: &InboxRow) -> Option<(String, Content)> {
        let content = self.first_touch.as_ref()?;
        if row.source != WHATSAPP
            || row.fields.get("kind").and_then(Value::as_str) != Some("message")
        {
            return None;
        }
        let wa_id = row.fields.get("wa_id").and_then(Value::as_str)?;
        (!wa_id.is_empty()).then(|| (wa_id.to_owned(), content.clone()))
    }
}

/// The timeline activity of a queued outbound WhatsApp message; the sender sets its
/// status (`accepted`, `failed`) and external id (the `wamid`), status webhooks the rest.
pub fn outbound_activity(
    lead_id: &str,
    content: &Content,
    inbound_id: Option<&str>,
    purpose: &str,
) -> Map<String, Value> {
    let subject = match content {
        Content::Text { .. } => "WhatsApp message sent".to_owned(),
        Content::Template { template } => format!("WhatsApp template {}", template.name),
    };
    let fields = json!({
        "activity_type": "message",
        "channel": WHATSAPP,
        "direction": "outbound",
        "status": "queued",
        "subject": subject,
        "body": content.summary(),
        "occurred_at": crate::domain::value::now_timestamp(),
        "lead_id": lead_id,
        "inbound_id": inbound_id,
        "data": {"purpose": purpose, "message": content},
    });
    match fields {
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

/// An activity on the timeline, built as a JSON object literal.
fn activity_insert(fields: Value) -> Change {
    let fields = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Change::Insert {
        kind: RecordKind::Activity,
        id: None,
        fields,
    }
}

/// A lead's score and how it came about.
struct Scored {
    fit: score::Points,
    behaviour: i64,
    score: i64,
    rules: Vec<String>,
}

impl Scored {
    fn write_into(&self, fields: &mut Map<String, Value>) {
        fields.insert("fit_score".into(), Value::from(self.fit.total));
        fields.insert("behaviour_score".into(), Value::from(self.behaviour));
        fields.insert("score".into(), Value::from(self.score));
    }
}

impl Pipeline {
    fn score(&self, fields: &Map<String, Value>, behaviour_before: i64, source: &str) -> Scored {
        let fit = self.scoring.fit(fields);
        let behaviour = self.scoring.behaviour(worker::source_family(source));
        let mut rules = fit.fired.clone();
        rules.extend(behaviour.fired);
        let behaviour = behaviour_before + behaviour.total;
        Scored {
            score: fit.total + behaviour,
            fit,
            behaviour,
            rules,
        }
    }
}

/// The one lead whose identifying field equals the draft's exactly, if there is one.
async fn identified_lead(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    draft: &Draft,
) -> Result<Option<String>, StoreError> {
    for field in &draft.identify_by {
        let (Some(value), Some(def)) = (draft.text(field), RecordKind::Lead.field(field)) else {
            continue;
        };
        journal.settle_inserts(conn).await?;
        let sql = format!("SELECT id FROM leads WHERE {} = $1 LIMIT 2", def.name);
        let ids: Vec<String> = sqlx::query_scalar(&sql)
            .bind(value)
            .fetch_all(&mut *conn)
            .await?;
        if let [only] = ids.as_slice() {
            return Ok(Some(only.clone()));
        }
    }
    Ok(None)
}

async fn load_lead(conn: &mut AnyConnection, id: &str) -> Result<Map<String, Value>, StoreError> {
    crate::store::read::fields_in(conn, RecordKind::Lead, id)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: RecordKind::Lead,
            id: id.to_owned(),
        })
}

/// Newest non-empty wins: the arriving record's non-empty values replace the stored ones;
/// custom fields are combined, newest winning per key.
fn is_blank(value: &Value) -> bool {
    value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty())
}

/// The fields a merge changes: the arrival's non-empty values win (newest wins), except
/// over a non-empty value last set by a source that `priority` ranks higher. With a
/// priority list, `field_sources` remembers which source family set each field.
pub fn survivorship(
    existing: &Map<String, Value>,
    draft: &Draft,
    source: &str,
    priority: &[String],
) -> Map<String, Value> {
    // Lower is more trusted; unlisted sources come after every listed one.
    let rank = |family: &str| {
        priority
            .iter()
            .position(|p| p == family)
            .unwrap_or(priority.len())
    };
    let mut sources = existing
        .get("field_sources")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut fields = Map::new();
    for (name, value) in &draft.fields {
        if is_blank(value) || existing.get(name) == Some(value) || name == "source" {
            continue;
        }
        let current_is_set = existing.get(name).is_some_and(|v| !is_blank(v));
        let outranked = sources
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|holder| rank(holder) < rank(source));
        if current_is_set && outranked {
            continue;
        }
        fields.insert(name.clone(), value.clone());
        if !priority.is_empty() {
            sources.insert(name.clone(), Value::from(source));
        }
    }
    if !priority.is_empty()
        && existing.get("field_sources").and_then(Value::as_object) != Some(&sources)
    {
        fields.insert("field_sources".into(), Value::Object(sources));
    }
    if !draft.custom.is_empty() {
        let mut custom = existing
            .get("custom")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (key, value) in &draft.custom {
            custom.insert(key.clone(), value.clone());
        }
        if existing.get("custom").and_then(Value::as_object) != Some(&custom) {
            fields.insert("custom".into(), Value::Object(custom));
        }
    }
    fields
}

#[cfg(test)]
mod survivorship_tests {
    use super::*;

    fn draft(fields: Value) -> Draft {
        let mut draft = Draft::new(RecordKind::Lead);
        if let Value::Object(map) = fields {
            draft.fields = map;
        }
        draft
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn without_priority_the_newest_non_empty_value_wins() {
        let existing = map(json!({"company": "Old Ltd", "title": "CTO"}));
        let merged = survivorship(
            &existing,
            &draft(json!({"company": "New Ltd", "title": ""})),
            "import",
            &[],
        );
        assert_eq!(merged, map(json!({"company": "New Ltd"})));
    }

    #[test]
    fn a_more_trusted_source_keeps_its_values_and_gaps_still_fill() {
        let priority = vec!["partner".to_owned(), "import".to_owned()];
        let existing = map(json!({"company": "Partner Corp", "phone": null,
                                  "field_sources": {"company": "partner"}}));
        let merged = survivorship(
            &existing,
            &draft(json!({"company": "Form Guess Inc", "phone": "+441234567890"})),
            "form",
            &priority,
        );
        assert!(merged.get("company").is_none(), "{merged:?}");
        assert_eq!(merged["phone"], "+441234567890");
        assert_eq!(
            merged["field_sources"],
            json!({"company": "partner", "phone": "form"})
        );
        // The trusted source itself, or an equal one, still updates it.
        let merged = survivorship(
            &existing,
            &draft(json!({"company": "Partner Corp GmbH"})),
            "partner",
            &priority,
        );
        assert_eq!(merged["company"], "Partner Corp GmbH");
    }
}
