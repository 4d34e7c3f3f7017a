//! Outbound nurturing: email templates and sequences, the durable email outbox and the
//! mailers that drain it (SMTP, SendGrid, Mailgun, Amazon SES), open and click tracking,
//! unsubscribe and suppression, WhatsApp follow-ups and task automation.
//!
//! Sending is two tasks of the processing roles (`all`, `worker`): the scheduler walks
//! enrolments through their sequence's steps and queues emails into `email_outbox`; the
//! sender claims due outbox rows under a lease, hands each to the configured mailer and
//! records how it ended. Both work from the store, so a restart resumes where it stopped.

pub mod config;
pub mod engagement;
pub mod mailer;
pub mod outbox;
pub mod scheduler;
pub mod sender;
pub mod sequences;
pub mod suppression;
pub mod tasks;
pub mod templates;
pub mod tracking;
pub mod webhooks;
pub mod window;

pub use config::NurtureSection;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum NurtureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for NurtureError {
    fn from(error: sqlx::Error) -> Self {
        NurtureError::Store(StoreError::from(error))
    }
}
