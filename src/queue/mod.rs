//! The inbound queue: where accepted inbound records wait for the pipeline.
//!
//! One trait, two backends. Embedded: the store's inbox, written by group commit and
//! drained by the in-process worker. NATS: a JetStream stream partitioned by identity,
//! drained by worker processes (`nats.rs`, `lease.rs`, `dlq.rs`). Request handlers only
//! see [`Accepter`], so the choice is configuration, not code.

pub mod dlq;
mod group_commit;
pub mod lease;
pub mod nats;
pub mod partition;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use group_commit::{AcceptError, GroupCommit};

use crate::store::Store;
use crate::store::inbox::{Accepted, Submission};
use crate::telemetry::Metrics;

/// A queue backend: makes a submission durable and answers only once it is.
pub trait InboundQueue: Send + Sync {
    fn accept(&self, submission: Submission) -> BoxFuture<'_, Result<Accepted, AcceptError>>;
}

/// The handle request handlers use to make inbound records durable.
#[derive(Clone)]
pub struct Accepter {
    queue: Arc<dyn InboundQueue>,
}

impl Accepter {
    /// The embedded queue: starts the group-commit writer. `appended` is notified after
    /// each commit so workers wake.
    pub fn start(
        store: Store,
        max_items_per_commit: usize,
        appended: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (queue, task) = GroupCommit::start(store, max_items_per_commit, appended, metrics);
        (Self::new(Arc::new(queue)), task)
    }

    pub fn new(queue: Arc<dyn InboundQueue>) -> Self {
        Self { queue }
    }

    /// Returns once the submission is durable (or refused); never before.
    pub async fn accept(&self, submission: Submission) -> Result<Accepted, AcceptError> {
        self.queue.accept(submission).await
    }
}
