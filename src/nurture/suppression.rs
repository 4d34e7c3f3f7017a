//! The suppression list: addresses no email goes to. Unsubscribes, hard bounces (the
//! mailbox connector's bounce detection and providers' webhooks) and complaints add to
//! it; the sender checks it before every send and the scheduler before every email step.

use sqlx::AnyConnection;

use super::NurtureError;
use crate::domain::value::now_timestamp;
use crate::store::{Store, StoreError};

/// Adds `email` in the caller's transaction; an address already listed keeps its first
/// reason.
pub async fn suppress_in(
    conn: &mut AnyConnection,
    email: &str,
    reason: &str,
    source: &str,
) -> Result<(), StoreError> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO email_suppressions (email, reason, source, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING",
    )
    .bind(&email)
    .bind(reason)
    .bind(source)
    .bind(now_timestamp())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn suppress(
    store: &Store,
    email: &str,
    reason: &str,
    source: &str,
) -> Result<(), NurtureError> {
    let mut tx = store.begin_write().await?;
    suppress_in(&mut tx, email, reason, source).await?;
    tx.commit().await?;
    Ok(())
}

/// Why `email` is suppressed, if it is.
pub async fn reason(store: &Store, email: &str) -> Result<Option<String>, NurtureError> {
    Ok(
        sqlx::query_scalar("SELECT reason FROM email_suppressions WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(store.pool())
            .await?,
    )
}

pub async fn remove(store: &Store, email: &str) -> Result<bool, NurtureError> {
    let mut tx = store.begin_write().await?;
    let done = sqlx::query("DELETE FROM email_suppressions WHERE email = $1")
        .bind(email.trim().to_lowercase())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}
