//! Partition leases in a JetStream key-value bucket (`<stream>_leases`).
//!
//! A worker owns partition `p` while it holds key `p<p>`: created only when absent
//! (`create`), renewed by compare-and-set on its revision (`update`), and gone by itself
//! `lease_secs` after the last renewal (the bucket's max age), so a killed worker's
//! partitions are free again within one lease period. Workers announce themselves with
//! `w.<id>` keys under the same expiry; each takes its fair share of the partitions.
//!
//! A lease is a liveness device, not a fence: a worker that stalls past its lease can
//! overlap with the next owner for one batch. The store's identity locks (see
//! `pipeline::worker::process_rows`) are what keeps that overlap from creating a second
//! record for one person.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;

use super::nats::NatsError;
use crate::config::NatsSection;

pub struct Leases {
    store: kv::Store,
    worker: String,
}

impl Leases {
    pub async fn open(
        js: &jetstream::Context,
        section: &NatsSection,
        worker: String,
    ) -> Result<Self, NatsError> {
        let bucket = format!("{}_leases", section.stream);
        if let Ok(store) = js.get_key_value(&bucket).await {
            return Ok(Self { store, worker });
        }
        // `create_key_value` first asks for account information in a shape NATS 2.9 does
        // not answer; a bucket is only a stream with these settings, so create that.
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(section.lease_secs),
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?;
        let store = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| NatsError::JetStream(e.to_string()))?;
        Ok(Self { store, worker })
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Says this worker is alive (for the fair share of the others).
    pub async fn heartbeat(&self) -> Result<(), NatsError> {
        self.store
            .put(format!("w.{}", self.worker), self.worker.clone().into())
            .await
            .map(|_| ())
            .map_err(|e| NatsError::JetStream(e.to_string()))
    }

    /// Workers that announced themselves within the last lease period.
    pub async fn live_workers(&self) -> Result<usize, NatsError> {
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| NatsError::JetStream(e.to_string()))?;
        let mut live = 0;
        while let Some(key) = keys.next().await {
            if key.is_ok_and(|k| k.starts_with("w.")) {
                live += 1;
            }
        }
        Ok(live.max(1))
    }

    /// Takes a free partition; answers the lease revision, or `None` when it is held.
    pub async fn acquire(&self, partition: u32) -> Result<Option<u64>, NatsError> {
        match self
            .store
            .create(key(partition), self.worker.clone().into())
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(NatsError::JetStream(e.to_string())),
        }
    }

    /// Renews a held lease; `None` when another worker holds it now (it was lost).
    pub async fn renew(&self, partition: u32, revision: u64) -> Result<Option<u64>, NatsError> {
        match self
            .store
            .update(key(partition), self.worker.clone().into(), revision)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(NatsError::JetStream(e.to_string())),
        }
    }

    /// Gives a partition up, if this worker still holds it.
    pub async fn release(&self, partition: u32, revision: u64) {
        if let Err(error) = self
            .store
            .delete_expect_revision(key(partition), Some(revision))
            .await
        {
            tracing::debug!(%error, partition, "lease release skipped");
        }
    }

    pub async fn leave(&self) {
        let _ = self.store.delete(format!("w.{}", self.worker)).await;
    }
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}
