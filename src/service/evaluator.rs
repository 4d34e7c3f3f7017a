//! The periodic evaluator: SLA breaches, contract renewals and lapses, expansion rules.
//! Runs in processes that process (roles `all` and `worker`).

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::Row;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Service, ServiceError};
use crate::domain::RecordKind;
use crate::domain::value::format_timestamp;
use crate::store::{Change, RequestMeta, Store, WriteContext};
use crate::telemetry::Metrics;

/// Tickets breached per transaction.
const BATCH: i64 = 500;

/// What one SLA pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaPass {
    pub first_response: usize,
    pub resolution: usize,
}

/// The two timers and the query for each one's running timers that are due: the
/// conditions are those of the timer's partial index (migrations/*/0008_service.sql).
const TIMERS: [(&str, &str); 2] = [
    (
        "first_response",
        "SELECT id, number, priority, account_id, owner_id, first_response_due AS due \
         FROM tickets WHERE first_responded_at IS NULL AND first_response_breached_at IS NULL \
         AND sla_paused_at IS NULL AND resolved_at IS NULL AND first_response_due <= $1 \
         ORDER BY first_response_due LIMIT $2",
    ),
    (
        "resolution",
        "SELECT id, number, priority, account_id, owner_id, resolution_due AS due \
         FROM tickets WHERE resolution_breached_at IS NULL AND sla_paused_at IS NULL \
         AND resolved_at IS NULL AND resolution_due <= $1 ORDER BY resolution_due LIMIT $2",
    ),
];

/// Marks every running timer due by `now` as breached: the ticket records when, the
/// breach is on the ticket's and the account's timeline, and
/// `leadgate_sla_breaches_total` counts it. Paused timers (pending the customer,
/// resolved, closed) never breach.
pub async fn evaluate_sla(
    store: &Store,
    metrics: &Metrics,
    now: DateTime<Utc>,
) -> Result<SlaPass, ServiceError> {
    let started = Instant::now();
    let ctx = WriteContext::new("system:sla", "system", RequestMeta::default());
    let at = format_timestamp(now);
    let mut pass = SlaPass::default();
    for (timer, sql) in TIMERS {
        loop {
            // Read and mark in one write transaction: a reply committed in between either
            // lands before (and the timer is no longer selected) or after the breach.
            let mut tx = store.begin_write().await?;
            let sql = format!("{sql}{}", super::claim_rows(store));
            let rows = sqlx::query(&sql)
                .bind(&at)
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut changes = Vec::with_capacity(rows.len() * 2);
            let mut priorities = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("id")?;
                let number: Option<i64> = row.try_get("number")?;
                let priority: Option<String> = row.try_get("priority")?;
                let account_id: Option<String> = row.try_get("account_id")?;
                let owner_id: Option<String> = row.try_get("owner_id")?;
                let due: Option<String> = row.try_get("due")?;
                changes.push(Change::Update {
                    kind: RecordKind::Ticket,
                    id: id.clone(),
                    fields: Map::from_iter([(format!("{timer}_breached_at"), json!(at))]),
                    expected_version: None,
                });
                let name = number.map_or_else(|| id.clone(), |n| format!("T-{n}"));
                let fields: Map<String, Value> = [
                    ("activity_type", json!("sla_breach")),
                    (
                        "subject",
                        json!(format!("{name}: {} SLA breached", timer.replace('_', " "))),
                    ),
                    ("channel", json!("system")),
                    ("occurred_at", json!(at)),
                    ("ticket_id", json!(id)),
                    ("account_id", json!(account_id)),
                    ("owner_id", json!(owner_id)),
                    (
                        "data",
                        json!({"timer": timer, "due": due, "priority": priority}),
                    ),
                ]
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                changes.push(Change::Insert {
                    kind: RecordKind::Activity,
                    id: None,
                    fields,
                });
                priorities.push(priority.unwrap_or_default());
            }
            crate::store::write::apply(&mut tx, &ctx, changes).await?;
            tx.commit().await?;
            for priority in &priorities {
                metrics
                    .sla_breaches
                    .with_label_values(&[timer, priority])
                    .inc();
            }
            match timer {
                "first_response" => pass.first_response += rows.len(),
                _ => pass.resolution += rows.len(),
            }
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
    }
    metrics
        .sla_evaluation_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(pass)
}

/// Runs the evaluators until `shutdown`: SLA and contracts every
/// `service.evaluate_every_secs`, expansion rules every `service.expansion_every_secs`.
pub fn spawn(
    store: Store,
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = StdDuration::from_secs(service.config.evaluate_every_secs.max(1));
        let expansion_every = StdDuration::from_secs(service.config.expansion_every_secs.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expansion: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = Utc::now();
            match evaluate_sla(&store, &metrics, now).await {
                Ok(pass) if pass.first_response + pass.resolution > 0 => tracing::info!(
                    first_response = pass.first_response,
                    resolution = pass.resolution,
                    "SLA breaches recorded"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "SLA evaluation failed; retrying"),
            }
            if let Err(error) = super::renewals::evaluate(&store, &service, now).await {
                tracing::warn!(%error, "contract evaluation failed; retrying");
            }
            if last_expansion.is_none_or(|at| at.elapsed() >= expansion_every) {
                last_expansion = Some(Instant::now());
                match super::expansion::evaluate(&store, &service, now).await {
                    Ok(0) => {}
                    Ok(opened) => tracing::info!(opened, "expansion opportunities opened"),
                    Err(error) => tracing::warn!(%error, "expansion rules failed; retrying"),
                }
            }
        }
    })
}
