//! The NATS worker: holds a fair share of the partition leases, consumes each held
//! partition with its own durable pull consumer, and per fetched batch writes the
//! records into the inbox and runs the pipeline in one store transaction, acknowledging
//! the messages only after that transaction commits.
//!
//! Redelivery (a crash between commit and ack, an ack lost with the connection) finds
//! the inbox row already written and skips it: written once. A message whose own
//! processing fails is retried with a growing delay and, at its `max_deliver`-th
//! delivery, copied with the error to the dead-letter stream and acknowledged. A store
//! that is down fails nobody: the batch waits and is delivered again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message, consumer::pull};
use async_nats::{Client, HeaderMap};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use super::worker::{process_rows, source_family};
use crate::config::NatsSection;
use crate::queue::lease::Leases;
use crate::queue::nats::{Envelope, context, dlq_subject, ensure_streams, in_subject};
use crate::store::inbox::{Delivered, insert_delivered};
use crate::store::write::new_id;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// How long one pull waits on the server for messages.
const FETCH_WAIT: Duration = Duration::from_millis(500);

pub struct NatsWorker {
    pub client: Client,
    pub section: NatsSection,
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub batch: usize,
    pub shutdown: CancellationToken,
}

/// What every partition task shares.
struct Shared {
    js: jetstream::Context,
    section: NatsSection,
    store: Store,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    batch: usize,
}

struct Held {
    revision: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl NatsWorker {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let js = context(self.client.clone(), &self.section);
        let worker = new_id();
        let leases = loop {
            let opened = async {
                ensure_streams(&js, &self.section).await?;
                Leases::open(&js, &self.section, worker.clone()).await
            };
            match opened.await {
                Ok(leases) => break leases,
                Err(error) => {
                    tracing::warn!(%error, "NATS worker cannot start yet; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let shared = Arc::new(Shared {
            js,
            section: self.section.clone(),
            store: self.store.clone(),
            pipeline: self.pipeline.clone(),
            metrics: self.metrics.clone(),
            batch: self.batch,
        });
        tracing::info!(worker = leases.worker(), "NATS worker started");
        let tick = Duration::from_millis((self.section.lease_secs * 1000 / 3).max(200));
        let mut held = BTreeMap::new();
        loop {
            balance(&shared, &leases, &mut held).await;
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        // Each partition finishes (and acknowledges) its batch before its lease goes.
        for held in held.values() {
            held.stop.cancel();
        }
        for (partition, held) in held {
            let _ = held.task.await;
            leases.release(partition, held.revision).await;
        }
        leases.leave().await;
        tracing::info!("NATS worker stopped");
    }
}

/// One lease round: say we live, renew what we hold, give up what is beyond our fair
/// share, take free partitions up to it.
async fn balance(shared: &Arc<Shared>, leases: &Leases, held: &mut BTreeMap<u32, Held>) {
    if let Err(error) = leases.heartbeat().await {
        tracing::warn!(%error, "cannot reach the lease bucket");
        return;
    }
    let mut lost = Vec::new();
    for (partition, lease) in held.iter_mut() {
        match leases.renew(*partition, lease.revision).await {
            Ok(Some(revision)) => lease.revision = revision,
            Ok(None) => lost.push(*partition),
            Err(error) => tracing::warn!(%error, partition, "lease renewal failed"),
        }
        if lease.task.is_finished() {
            lost.push(*partition);
        }
    }
    for partition in lost {
        if let Some(lease) = held.remove(&partition) {
            tracing::warn!(partition, "partition lease lost; stopping its consumer");
            lease.stop.cancel();
        }
    }
    let partitions = shared.section.partitions as usize;
    // Listing keys is a consumer of its own; bound it like every other NATS call, and
    // without a count keep what is held rather than guess.
    let Ok(Ok(live)) = tokio::time::timeout(Duration::from_secs(5), leases.live_workers()).await
    else {
        return;
    };
    let fair = partitions.div_ceil(live);
    while held.len() > fair {
        let Some((partition, lease)) = held.pop_last() else {
            break;
        };
        lease.stop.cancel();
        let _ = lease.task.await;
        leases.release(partition, lease.revision).await;
        tracing::info!(partition, "partition handed over");
    }
    if held.len() >= fair {
        return;
    }
    // Start looking at a point of our own, so workers do not all race for partition 0.
    let offset = leases
        .worker()
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    for step in 0..partitions {
        let partition = ((offset + step) % partitions) as u32;
        if held.contains_key(&partition) {
            continue;
        }
        match leases.acquire(partition).await {
            Ok(Some(revision)) => {
                let stop = CancellationToken::new();
                let task = tokio::spawn(consume(shared.clone(), partition, stop.clone()));
                held.insert(
                    partition,
                    Held {
                        revision,
                        stop,
                        task,
                    },
                );
                tracing::info!(partition, "partition taken");
                if held.len() >= fair {
                    break;
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot take partition leases");
                break;
            }
        }
    }
}

async fn consume(shared: Arc<Shared>, partition: u32, stop: CancellationToken) {
    let name = format!("p{partition}");
    let consumer = loop {
        let created = async {
            shared
                .js
                .get_stream(&shared.section.stream)
                .await?
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: in_subject(&shared.section, partition),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(shared.section.ack_wait_secs),
                        // Counted here, not by the server: a store outage is nobody's fault.
                        max_deliver: -1,
                        max_ack_pending: (shared.batch * 2) as i64,
                        ..Default::default()
                    },
                )
                .await
                .map_err(async_nats::Error::from)
        };
        match created.await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, partition, "cannot open the partition consumer");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    while !stop.is_cancelled() {
        let mut messages = Vec::new();
        let mut failed = None;
        let fetch = async {
            let mut batch = match consumer
                .fetch()
                .max_messages(shared.batch)
                .expires(FETCH_WAIT)
                .messages()
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    failed = Some(error.to_string());
                    return;
                }
            };
            while let Some(message) = batch.next().await {
                match message {
                    Ok(message) => messages.push(message),
                    Err(error) => {
                        tracing::debug!(%error, partition, "fetch ended");
                        break;
                    }
                }
            }
        };
        // The batch ends when the server says so; a server that died (or restarted)
        // mid-fetch never does, so the client bounds the wait itself.
        if tokio::time::timeout(FETCH_WAIT + Duration::from_secs(2), fetch)
            .await
            .is_err()
        {
            tracing::warn!(partition, "fetch got no answer; fetching again");
        }
        if let Some(error) = failed {
            tracing::warn!(%error, partition, "fetch failed");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if !messages.is_empty() {
            shared.handle(partition, messages).await;
        }
    }
}

impl Shared {
    async fn handle(&self, partition: u32, messages: Vec<Message>) {
        let timer = self
            .metrics
            .stage_seconds
            .with_label_values(&["batch"])
            .start_timer();
        let mut items = Vec::with_capacity(messages.len());
        let mut carried = Vec::with_capacity(messages.len());
        for message in messages {
            let attempts = message.info().map_or(1, |info| info.delivered);
            match Envelope::decode(&message.payload, attempts) {
                Ok(item) => {
                    items.push(item);
                    carried.push(message);
                }
                Err(error) => {
                    self.fail(partition, &message, attempts, &error.to_string())
                        .await
                }
            }
        }
        match self.commit(&items).await {
            Ok(()) => {
                for message in &carried {
                    ack(message, AckKind::Ack).await;
                }
            }
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(%why, partition, "store unavailable; the batch is delivered again");
                for message in &carried {
                    ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
            }
            // One record broke the batch: isolate it by committing records one at a time.
            Err(error) => {
                tracing::warn!(%error, partition, "batch commit failed; committing one by one");
                for (item, message) in items.iter().zip(&carried) {
                    match self.commit(std::slice::from_ref(item)).await {
                        Ok(()) => ack(message, AckKind::Ack).await,
                        Err(StoreError::Unavailable(_)) => {
                            ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await
                        }
                        Err(error) => {
                            self.fail(partition, message, item.attempts, &error.to_string())
                                .await
                        }
                    }
                }
            }
        }
        timer.observe_duration();
    }

    /// Inbox rows and their records in one transaction; rows an earlier delivery wrote
    /// are skipped.
    async fn commit(&self, items: &[Delivered]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin_write().await?;
        let fresh = insert_delivered(&mut tx, items).await?;
        let rows: Vec<_> = items
            .iter()
            .filter(|item| fresh.contains(&item.id))
            .map(Delivered::to_row)
            .collect();
        let outcomes =
            process_rows(&self.store, &self.pipeline, &self.metrics, &mut tx, &rows).await?;
        tx.commit().await?;
        for (row, outcome) in rows.iter().zip(outcomes) {
            let source = source_family(&row.source);
            match outcome {
                Ok(()) => self
                    .metrics
                    .inbound_processed
                    .with_label_values(&[source])
                    .inc(),
                Err(error) => {
                    tracing::warn!(inbound = %row.id, %error, "inbound row failed");
                    self.metrics
                        .inbound_failed
                        .with_label_values(&[source])
                        .inc();
                }
            }
        }
        Ok(())
    }

    /// A message that failed on its own: delivered again later, or at its last allowed
    /// delivery copied to the dead-letter stream with the error.
    async fn fail(&self, partition: u32, message: &Message, attempts: i64, error: &str) {
        if attempts < self.section.max_deliver {
            let delay = Duration::from_millis(500 * attempts.clamp(1, 20) as u64);
            tracing::warn!(partition, attempts, %error, "message failed; delivering again");
            ack(message, AckKind::Nak(Some(delay))).await;
            return;
        }
        // Header values are one line.
        let error: String = error
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(2000)
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert("Leadgate-Error", error.as_str());
        headers.insert("Leadgate-Subject", message.subject.as_str());
        headers.insert("Leadgate-Attempts", attempts.to_string().as_str());
        if let Ok(info) = message.info() {
            headers.insert(
                "Nats-Msg-Id",
                format!("dlq-{}-{}", self.section.stream, info.stream_sequence).as_str(),
            );
        }
        let published = async {
            self.js
                .publish_with_headers(
                    dlq_subject(&self.section, partition),
                    headers,
                    message.payload.clone(),
                )
                .await?
                .await
        };
        match published.await {
            Ok(_) => {
                tracing::error!(partition, attempts, %error, "message dead-lettered");
                self.metrics
                    .inbound_failed
                    .with_label_values(&["dead_letter"])
                    .inc();
                ack(message, AckKind::Ack).await;
            }
            Err(dlq_error) => {
                tracing::warn!(%dlq_error, "cannot dead-letter; delivering again");
                ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }
}

async fn ack(message: &Message, kind: AckKind) {
    // A lost ack only means a redelivery, which the inbox insert makes harmless.
    if let Err(error) = message.ack_with(kind).await {
        tracing::debug!(%error, "acknowledgement not sent");
    }
}
