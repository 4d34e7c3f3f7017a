//! Group commit: concurrent requests hand their submissions to one writer task, which
//! appends everything waiting in a single transaction. Many requests share one fsync,
//! and each is answered only after that commit.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::InboundQueue;
use crate::store::inbox::{Accepted, Submission};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AcceptError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Store(String),
    #[error("shutting down")]
    ShuttingDown,
    /// The queue cannot take more now (stream full, server unreachable): retry later.
    #[error("queue unavailable: {0}")]
    QueueUnavailable(String),
}

impl From<&StoreError> for AcceptError {
    fn from(error: &StoreError) -> Self {
        match error {
            StoreError::Unavailable(why) => AcceptError::Unavailable(why.clone()),
            other => AcceptError::Store(other.to_string()),
        }
    }
}

type Reply = oneshot::Sender<Result<Accepted, AcceptError>>;

/// The embedded queue: submissions go to one writer task that commits them to the inbox.
#[derive(Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<(Submission, Reply)>,
}

impl InboundQueue for GroupCommit {
    fn accept(&self, submission: Submission) -> BoxFuture<'_, Result<Accepted, AcceptError>> {
        Box::pin(self.submit(submission))
    }
}

impl GroupCommit {
    /// Starts the writer task. `appended` is notified after each commit so workers wake.
    pub fn start(
        store: Store,
        max_items_per_commit: usize,
        appended: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(max_items_per_commit.max(64) * 4);
        let task = tokio::spawn(write_loop(
            store,
            receiver,
            max_items_per_commit,
            appended,
            metrics,
        ));
        (Self { sender }, task)
    }

    /// Returns once the submission is committed (or refused); never before.
    pub async fn submit(&self, submission: Submission) -> Result<Accepted, AcceptError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((submission, reply))
            .await
            .map_err(|_| AcceptError::ShuttingDown)?;
        answer.await.map_err(|_| AcceptError::ShuttingDown)?
    }
}

async fn write_loop(
    store: Store,
    mut receiver: mpsc::Receiver<(Submission, Reply)>,
    max_items: usize,
    appended: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    // Ends when every Accepter clone is dropped and the queue is drained.
    while let Some(first) = receiver.recv().await {
        let mut items = first.0.items.len();
        let mut batch = vec![first];
        while items < max_items {
            match receiver.try_recv() {
                Ok(next) => {
                    items += next.0.items.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (submissions, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let timer = metrics.group_commit_seconds.start_timer();
        let outcome = store.append_inbox(&submissions).await;
        timer.observe_duration();
        metrics.group_commit_items.observe(items as f64);
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
                appended.notify_one();
            }
            Err(error) => {
                tracing::warn!(%error, submissions = replies.len(), "group commit failed");
                let error = AcceptError::from(&error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
