//! The sequence scheduler: enrols leads that match a sequence's rule, walks due
//! enrolments through their steps, and runs the task rules. Due enrolments are claimed
//! by pushing their `next_at` forward (a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL),
//! so several worker processes never run the same step twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::NurtureError;
use super::config::NurtureSection;
use super::engagement::object;
use super::sequences::{self, ENROLMENT_COLUMNS, Engagement, Enrolment, Sequence, Step, text};
use super::tracking::TrackingKey;
use crate::domain::RecordKind;
use crate::domain::value::{format_timestamp, now_timestamp};
use crate::outbound::{Content, WHATSAPP};
use crate::store::read::Record;
use crate::store::write::{apply, new_id};
use crate::store::{Backend, Change, RequestMeta, Store, WriteContext};

const BATCH: i64 = 32;
/// Steps one enrolment may take in one pass (emails, tasks and branches do not wait).
const STEPS_PER_PASS: usize = 16;

pub struct Scheduler {
    pub store: Store,
    pub section: Arc<NurtureSection>,
    pub key: TrackingKey,
    pub shutdown: CancellationToken,
}

fn context() -> WriteContext {
    WriteContext::new("pipeline:nurture", "nurture", RequestMeta::default())
}

/// Where an enrolment goes after a step.
enum Next {
    /// Take step `n` now.
    Now(i64),
    /// Take step `n` at `at`.
    At(i64, chrono::DateTime<Utc>),
    /// The same step later (outside the sending window).
    Later(chrono::DateTime<Utc>),
    Exit(String),
    Completed,
}

impl Scheduler {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let poll = Duration::from_millis(self.section.poll_ms.max(10));
        let mut last_tasks: Option<Instant> = None;
        loop {
            if let Err(error) = self.enrol_by_rules().await {
                tracing::warn!(%error, "sequence enrolment by rule failed");
            }
            match self.run_due().await {
                Ok(n) if n > 0 && !self.shutdown.is_cancelled() => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sequence pass failed; retrying"),
            }
            if last_tasks.is_none_or(|at| at.elapsed() > poll * 30) {
                last_tasks = Some(Instant::now());
                if let Err(error) = super::tasks::run_rules(&self.store, &self.section).await {
                    tracing::warn!(%error, "task rules failed");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("sequence scheduler stopped");
    }

    /// Enrols the leads each active rule-based sequence matches; answers how many.
    pub async fn enrol_by_rules(&self) -> Result<usize, NurtureError> {
        let mut enrolled = 0;
        for sequence in sequences::active_with_rules(&self.store).await? {
            let Some(rule) = &sequence.enrol else {
                continue;
            };
            let mut sql = String::from(
                "SELECT id FROM leads WHERE created_at >= $1 AND id NOT IN \
                 (SELECT lead_id FROM sequence_enrolments WHERE sequence_id = $2)",
            );
            let mut values: Vec<String> = Vec::new();
            let mut n = 3;
            for (field, value) in &rule.equals {
                // Only a lead field's own (static) name reaches the SQL text.
                let Some(def) = RecordKind::Lead.field(field) else {
                    continue;
                };
                sql.push_str(&format!(" AND LOWER({}) = LOWER(${n})", def.name));
                values.push(value.clone());
                n += 1;
            }
            if rule.min_score.is_some() {
                sql.push_str(&format!(" AND score > ${n}"));
            }
            sql.push_str(" LIMIT 500");
            let mut query = sqlx::query_scalar::<_, String>(&sql)
                .bind(&sequence.created_at)
                .bind(&sequence.id);
            for value in &values {
                query = query.bind(value);
            }
            if let Some(min) = rule.min_score {
                query = query.bind(min);
            }
            let leads = query.fetch_all(self.store.pool()).await?;
            for lead in leads {
                if sequences::enrol(&self.store, &sequence.id, &lead)
                    .await?
                    .is_some()
                {
                    enrolled += 1;
                }
            }
        }
        Ok(enrolled)
    }

    async fn claim(&self) -> Result<Vec<Enrolment>, NurtureError> {
        let lock = match self.store.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let now = Utc::now();
        let lease = now + chrono::Duration::seconds(self.section.lease_secs.max(1) as i64);
        let sql = format!(
            "UPDATE sequence_enrolments SET next_at = $1 WHERE id IN (SELECT id FROM \
             sequence_enrolments WHERE status = 'active' AND next_at <= $2 ORDER BY next_at \
             LIMIT $3{lock}) RETURNING {ENROLMENT_COLUMNS}"
        );
        let mut tx = self.store.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(format_timestamp(lease))
            .bind(format_timestamp(now))
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(sequences::enrolment_row).collect()
    }

    /// Takes the due steps of due enrolments; answers how many enrolments it moved.
    pub async fn run_due(&self) -> Result<usize, NurtureError> {
        let due = self.claim().await?;
        let mut cache: HashMap<String, Option<Sequence>> = HashMap::new();
        for enrolment in &due {
            if !cache.contains_key(&enrolment.sequence_id) {
                let sequence = sequences::get(&self.store, &enrolment.sequence_id).await?;
                cache.insert(enrolment.sequence_id.clone(), sequence);
            }
            let sequence = cache.get(&enrolment.sequence_id).cloned().flatten();
            if let Err(error) = self.advance(enrolment.clone(), sequence).await {
                tracing::warn!(enrolment = %enrolment.id, %error, "sequence step failed; retried later");
            }
        }
        Ok(due.len())
    }

    async fn advance(
        &self,
        mut enrolment: Enrolment,
        sequence: Option<Sequence>,
    ) -> Result<(), NurtureError> {
        let Some(sequence) = sequence.filter(|s| s.active) else {
            return self
                .settle(&enrolment, Next::Exit("sequence_inactive".into()), None)
                .await;
        };
        for _ in 0..STEPS_PER_PASS {
            let Some(lead) = self.store.get(RecordKind::Lead, &enrolment.lead_id).await? else {
                return self
                    .settle(&enrolment, Next::Exit("lead_removed".into()), None)
                    .await;
            };
            if let Some(reason) = self.exit_reason(&lead, &enrolment).await? {
                return self.settle(&enrolment, Next::Exit(reason), None).await;
            }
            let Some(step) = sequence.steps.get(enrolment.step as usize) else {
                return self.settle(&enrolment, Next::Completed, None).await;
            };
            let next_step = enrolment.step + 1;
            let now = Utc::now();
            match step {
                Step::Wait {
                    days,
                    hours,
                    seconds,
                } => {
                    let wait = chrono::Duration::days(*days)
                        + chrono::Duration::hours(*hours)
                        + chrono::Duration::seconds(*seconds);
                    return self
                        .settle(&enrolment, Next::At(next_step, now + wait), None)
                        .await;
                }
                Step::Branch {
                    on,
                    then,
                    otherwise,
                } => {
                    let hit = self.engaged(&enrolment, *on).await?;
                    let target = if hit { *then } else { *otherwise } as i64;
                    self.settle(&enrolment, Next::Now(target), None).await?;
                    enrolment.step = target;
                }
                Step::Email { template } => {
                    let Some(email) = text(&lead.fields, "email") else {
                        // Nothing to send to: the step is passed, the timeline says why.
                        self.note(
                            &lead,
                            &format!("Sequence {}: no email address; step skipped", sequence.name),
                        )
                        .await?;
                        self.settle(&enrolment, Next::Now(next_step), None).await?;
                        enrolment.step = next_step;
                        continue;
                    };
                    if let Some(reason) = super::suppression::reason(&self.store, email).await? {
                        let reason = if reason == "unsubscribed" {
                            reason
                        } else {
                            "bounced".into()
                        };
                        return self.settle(&enrolment, Next::Exit(reason), None).await;
                    }
                    let zone = super::window::zone(
                        text(&lead.fields, "time_zone"),
                        &self.section.default_time_zone,
                    );
                    let at = super::window::next_send_time(
                        now,
                        zone,
                        self.section.window_start_hour,
                        self.section.window_end_hour,
                    );
                    if at > now {
                        return self.settle(&enrolment, Next::Later(at), None).await;
                    }
                    let Some(template) = super::templates::by_name(&self.store, template).await?
                    else {
                        return self
                            .settle(
                                &enrolment,
                                Next::Exit(format!("template `{template}` is gone")),
                                None,
                            )
                            .await;
                    };
                    let mut tx = self.store.begin_write().await?;
                    let outbox_id = super::outbox::enqueue_template(
                        &mut tx,
                        &context(),
                        &self.section,
                        &self.key,
                        &lead,
                        &template,
                        &sequence.from,
                        Some(&enrolment.id),
                    )
                    .await?;
                    settle_in(&mut tx, &enrolment, &Next::Now(next_step), Some(&outbox_id)).await?;
                    tx.commit().await?;
                    enrolment.step = next_step;
                    enrolment.last_outbox_id = Some(outbox_id);
                }
                Step::Whatsapp {
                    template,
                    language,
                    text: free_text,
                } => {
                    self.whatsapp(&lead, template, language, free_text).await?;
                    self.settle(&enrolment, Next::Now(next_step), None).await?;
                    enrolment.step = next_step;
                }
                Step::Task { subject, due_hours } => {
                    super::tasks::create_task(
                        &self.store,
                        &lead,
                        subject,
                        *due_hours,
                        &format!("sequence:{}", sequence.name),
                    )
                    .await?;
                    self.settle(&enrolment, Next::Now(next_step), None).await?;
                    enrolment.step = next_step;
                }
            }
        }
        // Leave the rest for the next pass.
        self.settle(&enrolment, Next::Now(enrolment.step), None)
            .await
    }

    async fn settle(
        &self,
        enrolment: &Enrolment,
        next: Next,
        outbox_id: Option<&str>,
    ) -> Result<(), NurtureError> {
        let mut tx = self.store.begin_write().await?;
        settle_in(&mut tx, enrolment, &next, outbox_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn note(&self, lead: &Record, subject: &str) -> Result<(), NurtureError> {
        self.store
            .write(
                &context(),
                vec![Change::Insert {
                    kind: RecordKind::Activity,
                    id: None,
                    fields: object(json!({
                        "activity_type": "note",
                        "channel": "nurture",
                        "subject": subject,
                        "occurred_at": now_timestamp(),
                        "lead_id": lead.id,
                    })),
                }],
            )
            .await?;
        Ok(())
    }

    /// Why the lead leaves its sequences now, if it does.
    async fn exit_reason(
        &self,
        lead: &Record,
        enrolment: &Enrolment,
    ) -> Result<Option<String>, NurtureError> {
        if text(&lead.fields, "status") == Some("converted") {
            return Ok(Some("converted".into()));
        }
        if lead
            .fields
            .get("email_undeliverable")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Ok(Some("bounced".into()));
        }
        let row = sqlx::query(
            "SELECT activity_type FROM activities WHERE lead_id = $1 AND created_at > $2 AND \
             ((direction = 'inbound' AND activity_type IN ('email', 'message')) OR activity_type = 'meeting') \
             LIMIT 1",
        )
        .bind(&lead.id)
        .bind(&enrolment.created_at)
        .fetch_optional(self.store.pool())
        .await?;
        if let Some(row) = row {
            let kind: Option<String> = row.try_get("activity_type")?;
            return Ok(Some(if kind.as_deref() == Some("meeting") {
                "meeting_booked".into()
            } else {
                "replied".into()
            }));
        }
        Ok(None)
    }

    async fn engaged(&self, enrolment: &Enrolment, on: Engagement) -> Result<bool, NurtureError> {
        let Some(outbox_id) = &enrolment.last_outbox_id else {
            return Ok(false);
        };
        Ok(match on {
            Engagement::Opened => {
                super::engagement::counted(&self.store, outbox_id, "open").await? > 0
                    || super::engagement::counted(&self.store, outbox_id, "click").await? > 0
            }
            Engagement::Clicked => {
                super::engagement::counted(&self.store, outbox_id, "click").await? > 0
            }
            Engagement::Replied => {
                let sent: Option<String> =
                    sqlx::query_scalar("SELECT created_at FROM email_outbox WHERE id = $1")
                        .bind(outbox_id)
                        .fetch_optional(self.store.pool())
                        .await?;
                let replies: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM activities WHERE lead_id = $1 AND created_at > $2 \
                     AND direction = 'inbound' AND activity_type IN ('email', 'message')",
                )
                .bind(&enrolment.lead_id)
                .bind(sent.unwrap_or_default())
                .fetch_one(self.store.pool())
                .await?;
                replies > 0
            }
        })
    }

    /// A WhatsApp step: free-form text inside the 24-hour customer-service window, the
    /// approved template outside it; neither possible → a note on the timeline.
    async fn whatsapp(
        &self,
        lead: &Record,
        template: &Option<String>,
        language: &Option<String>,
        free_text: &Option<String>,
    ) -> Result<(), NurtureError> {
        let to: String = text(&lead.fields, "phone")
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if to.len() < 6 {
            return self
                .note(lead, "WhatsApp step skipped: the lead has no phone number")
                .await;
        }
        let open = super::tasks::whatsapp_window_open(&self.store, &lead.id).await?;
        let content = match (open, free_text, template) {
            (true, Some(body), _) if !body.is_empty() => Content::text(body.clone()),
            (_, _, Some(name)) if !name.is_empty() => Content::template(
                name.clone(),
                language.clone().unwrap_or_else(|| "en_US".into()),
            ),
            _ => {
                return self
                    .note(
                        lead,
                        "WhatsApp step skipped: outside the 24-hour window and no template given",
                    )
                    .await;
            }
        };
        let activity_id = new_id();
        let mut tx = self.store.begin_write().await?;
        apply(
            &mut tx,
            &context(),
            vec![Change::Insert {
                kind: RecordKind::Activity,
                id: Some(activity_id.clone()),
                fields: crate::pipeline::outbound_activity(&lead.id, &content, None, "sequence"),
            }],
        )
        .await?;
        crate::store::outbound::enqueue(&mut tx, WHATSAPP, &activity_id, &to, &json!(content))
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Moves an enrolment on. One that left meanwhile (an unsubscribe or a bounce while its
/// step ran) stays where it is: an exit is never undone by a step finishing.
async fn settle_in(
    conn: &mut sqlx::AnyConnection,
    enrolment: &Enrolment,
    next: &Next,
    outbox_id: Option<&str>,
) -> Result<(), NurtureError> {
    let now = Utc::now();
    let (step, status, reason, at) = match next {
        Next::Now(step) => (*step, "active", None, now),
        Next::At(step, at) => (*step, "active", None, *at),
        Next::Later(at) => (enrolment.step, "active", None, *at),
        Next::Exit(reason) => (enrolment.step, "exited", Some(reason.as_str()), now),
        Next::Completed => (enrolment.step, "completed", None, now),
    };
    sqlx::query(
        "UPDATE sequence_enrolments SET step = $1, status = $2, exit_reason = $3, next_at = $4, \
         last_outbox_id = COALESCE($5, last_outbox_id), updated_at = $6 \
         WHERE id = $7 AND status = 'active'",
    )
    .bind(step)
    .bind(status)
    .bind(reason)
    .bind(format_timestamp(at))
    .bind(outbox_id)
    .bind(format_timestamp(now))
    .bind(&enrolment.id)
    .execute(conn)
    .await?;
    Ok(())
}
