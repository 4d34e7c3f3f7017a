//! One IMAP mailbox: connect, log in, select the folder, fetch every UID above the
//! remembered one, make each message durable, remember its UID, apply the after-action;
//! then IDLE (when the server has it, bounded by `poll_seconds`) or sleep, and again.
//! Errors drop the connection and reconnect with exponential backoff; a message that
//! cannot be decoded is logged and skipped.

use std::time::Duration;

use async_imap::Session;
use async_imap::extensions::idle::IdleResponse;
use chrono::Utc;
use futures_util::TryStreamExt;
use tokio::net::TcpStream;

use super::stream::{MailStream, upgrade};
use super::{AfterAction, MailboxContext, MailboxPosition, email_record};
use crate::config::{MailboxSection, MailboxTls};
use crate::store::RequestMeta;

type ImapSession = Session<MailStream>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub(super) struct Poller {
    config: MailboxSection,
    after: AfterAction,
    source: String,
    context: MailboxContext,
}

impl Poller {
    pub(super) fn new(config: MailboxSection, context: MailboxContext) -> Self {
        let after = AfterAction::parse(&config.after).unwrap_or(AfterAction::Flag);
        Self {
            source: format!("email:{}", config.name),
            after,
            config,
            context,
        }
    }

    /// Runs until shutdown; never gives up on the mailbox.
    pub(super) async fn run(self) {
        let name = self.config.name.clone();
        let mut backoff = Duration::from_secs(1);
        loop {
            let outcome = tokio::select! {
                outcome = self.session() => outcome,
                () = self.context.shutdown.cancelled() => return,
            };
            match outcome {
                Ok(()) => return,
                Err(SessionError { error, connected }) => {
                    if connected {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(mailbox = %name, %error, retry_in = ?backoff, "mailbox connection failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.context.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> anyhow::Result<(ImapSession, bool)> {
        connect(&self.config).await
    }

    /// One connection's life: Ok only when shutdown is asked for between waits.
    async fn session(&self) -> Result<(), SessionError> {
        let failed =
            |connected: bool| move |error: anyhow::Error| SessionError { error, connected };
        let (mut session, idle) = self.connect().await.map_err(failed(false))?;
        let mailbox = session
            .select(&self.config.folder)
            .await
            .map_err(|e| failed(true)(e.into()))?;
        let uid_validity = mailbox.uid_validity.unwrap_or(0);
        let stored = super::load_position(&self.context.store, &self.config.name)
            .await
            .map_err(|e| failed(true)(e.into()))?;
        let mut position = match stored {
            Some(position) if position.uid_validity == uid_validity => position,
            Some(position) => {
                tracing::warn!(mailbox = %self.config.name, old = position.uid_validity, new = uid_validity,
                    "UIDVALIDITY changed: fetching the folder again (known Message-IDs stay one record)");
                MailboxPosition {
                    uid_validity,
                    last_uid: 0,
                }
            }
            None => MailboxPosition {
                uid_validity,
                last_uid: 0,
            },
        };
        tracing::info!(mailbox = %self.config.name, folder = %self.config.folder, idle, last_uid = position.last_uid, "mailbox connected");
        let poll = Duration::from_secs(self.config.poll_seconds);
        loop {
            self.process_new(&mut session, &mut position)
                .await
                .map_err(failed(true))?;
            if self.context.shutdown.is_cancelled() {
                let _ = session.logout().await;
                return Ok(());
            }
            if idle {
                let mut handle = session.idle();
                handle.init().await.map_err(|e| failed(true)(e.into()))?;
                let (wait, _interrupt) = handle.wait_with_timeout(poll);
                let woke = tokio::select! {
                    woke = wait => woke.map_err(|e| failed(true)(e.into()))?,
                    () = self.context.shutdown.cancelled() => return Ok(()),
                };
                if let IdleResponse::NewData(_) = woke {
                    tracing::debug!(mailbox = %self.config.name, "IDLE: new data");
                }
                session = handle.done().await.map_err(|e| failed(true)(e.into()))?;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = self.context.shutdown.cancelled() => {
                        let _ = session.logout().await;
                        return Ok(());
                    }
                }
                session.noop().await.map_err(|e| failed(true)(e.into()))?;
            }
        }
    }

    /// Fetches, stores and acts on every message above the remembered UID, in UID order.
    async fn process_new(
        &self,
        session: &mut ImapSession,
        position: &mut MailboxPosition,
    ) -> anyhow::Result<()> {
        let found = session
            .uid_search(format!("UID {}:*", position.last_uid.saturating_add(1)))
            .await?;
        // `n:*` always names the highest message, even when it is below n.
        let mut uids: Vec<u32> = found
            .into_iter()
            .filter(|uid| *uid > position.last_uid)
            .collect();
        uids.sort_unstable();
        for uid in uids {
            let raw = self.fetch(session, uid).await?;
            match raw {
                Some(raw) if raw.len() > self.context.max_message_bytes => {
                    tracing::warn!(mailbox = %self.config.name, uid, bytes = raw.len(),
                        limit = self.context.max_message_bytes, "message larger than email.max_message_bytes skipped");
                }
                Some(raw) => {
                    match email_record(&self.source, &raw, &self.context.own_domains, Utc::now()) {
                        Ok((record, _)) => {
                            let meta = RequestMeta {
                                request_id: None,
                                ip: None,
                                user_agent: Some(format!("imap:{}", self.config.name)),
                            };
                            // Durable before the UID is remembered or the message touched.
                            super::accept_one(
                                &self.context.accepter,
                                &self.context.metrics,
                                record,
                                meta,
                            )
                            .await?;
                        }
                        Err(error) => {
                            tracing::warn!(mailbox = %self.config.name, uid, %error, "message cannot be decoded; skipped");
                        }
                    }
                }
                None => {
                    tracing::warn!(mailbox = %self.config.name, uid, "message vanished or had no body; skipped");
                }
            }
            position.last_uid = uid;
            super::save_position(
                &self.context.store,
                &self.config.name,
                &self.config.folder,
                *position,
            )
            .await?;
            if let Err(error) = self.after_action(session, uid).await {
                tracing::warn!(mailbox = %self.config.name, uid, %error, "after-action failed (the message is stored and will not be fetched again)");
            }
        }
        Ok(())
    }

    async fn fetch(&self, session: &mut ImapSession, uid: u32) -> anyhow::Result<Option<Vec<u8>>> {
        let fetched: Vec<_> = session
            .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
            .await?
            .try_collect()
            .await?;
        Ok(fetched
            .iter()
            .find(|fetch| fetch.uid == Some(uid))
            .or_else(|| fetched.first())
            .and_then(|fetch| fetch.body())
            .map(<[u8]>::to_vec))
    }

    async fn after_action(&self, session: &mut ImapSession, uid: u32) -> anyhow::Result<()> {
        let set = uid.to_string();
        match &self.after {
            AfterAction::Flag => {
                let _: Vec<_> = session
                    .uid_store(&set, "+FLAGS.SILENT (\\Seen)")
                    .await?
                    .try_collect()
                    .await?;
            }
            AfterAction::Move(folder) => {
                if session.uid_mv(&set, folder).await.is_err() {
                    session.uid_copy(&set, folder).await?;
                    self.delete(session, &set).await?;
                }
            }
            AfterAction::Delete => self.delete(session, &set).await?,
        }
        Ok(())
    }

    async fn delete(&self, session: &mut ImapSession, set: &str) -> anyhow::Result<()> {
        let _: Vec<_> = session
            .uid_store(set, "+FLAGS.SILENT (\\Deleted)")
            .await?
            .try_collect()
            .await?;
        // UID EXPUNGE (UIDPLUS) removes only this message; without it, EXPUNGE.
        let uid_expunged = match session.uid_expunge(set).await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await.is_ok(),
            Err(_) => false,
        };
        if !uid_expunged {
            let _: Vec<_> = session.expunge().await?.try_collect().await?;
        }
        Ok(())
    }
}

struct SessionError {
    error: anyhow::Error,
    /// The connection had logged in: the backoff starts over.
    connected: bool,
}

/// Connects (plain, TLS or STARTTLS), logs in, and says whether the server offers IDLE.
pub async fn connect(config: &MailboxSection) -> anyhow::Result<(ImapSession, bool)> {
    let password = std::env::var(&config.password_env).map_err(|_| {
        anyhow::anyhow!(
            "the environment variable {} (password_env) is not set",
            config.password_env
        )
    })?;
    let address = (config.host.as_str(), config.port);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| anyhow::anyhow!("connecting timed out"))??;
    let stream = match config.tls {
        MailboxTls::None => MailStream::Plain(stream),
        MailboxTls::Tls => upgrade(config, stream).await?,
        MailboxTls::Starttls => {
            let mut plain = async_imap::Client::new(stream);
            plain
                .read_response()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the server closed before its greeting"))?;
            plain
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| anyhow::anyhow!("STARTTLS refused: {e}"))?;
            upgrade(config, plain.into_inner()).await?
        }
    };
    let mut client = async_imap::Client::new(stream);
    // After STARTTLS the server sends no second greeting.
    if config.tls != MailboxTls::Starttls {
        client
            .read_response()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the server closed before its greeting"))?;
    }
    let mut session = client
        .login(&config.user, &password)
        .await
        .map_err(|(error, _)| anyhow::anyhow!("login failed: {error}"))?;
    let idle = session.capabilities().await?.has_str("IDLE");
    Ok((session, idle))
}
