//! Tickets from channels, inside the pipeline worker's transaction: a support mailbox
//! (a mapping whose target is `tickets`) and WhatsApp messages of known contacts
//! (`service.whatsapp_tickets`).

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::tickets::{self, Direction, NewTicket, Reply};
use super::{Service, ServiceError};
use crate::pipeline::{Draft, PipelineError, RowError};
use crate::store::WriteContext;
use crate::store::inbox::InboxRow;
use crate::store::write::Journal;

impl From<ServiceError> for RowError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Store(error) => RowError::Store(error),
            other => RowError::Row(PipelineError(other.to_string())),
        }
    }
}

fn inbound_text(row: &InboxRow, name: &str) -> Option<String> {
    row.fields
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The contact (and their account) with this email address or phone number.
async fn contact_by(
    conn: &mut AnyConnection,
    sql: &str,
    value: &str,
) -> Result<Option<(String, Option<String>)>, ServiceError> {
    let row = sqlx::query(sql)
        .bind(value)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row
        .map(|row| -> Result<_, sqlx::Error> {
            Ok((row.try_get("id")?, row.try_get("account_id")?))
        })
        .transpose()?)
}

/// One support email: a reply threads onto its ticket (a `[#T-123]` subject token, or
/// In-Reply-To / References naming a message on a ticket), anything else opens a ticket;
/// the sender is linked when they are a known contact. Answers the inbox row's lineage.
pub async fn email(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    service: &Service,
    row: &InboxRow,
    draft: Draft,
) -> Result<Value, RowError> {
    journal.settle_inserts(conn).await?;
    let subject = inbound_text(row, "subject");
    let mut references: Vec<String> = row
        .fields
        .get("references")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(in_reply_to) = inbound_text(row, "in_reply_to") {
        // Looked at last-first: the message answered directly wins.
        references.push(in_reply_to);
    }
    let sender = inbound_text(row, "reply_to_address")
        .or_else(|| inbound_text(row, "from_address"))
        .map(|a| a.to_lowercase());
    let contact = match &sender {
        Some(address) => {
            contact_by(
                conn,
                "SELECT id, account_id FROM contacts WHERE email = $1 ORDER BY id LIMIT 1",
                address,
            )
            .await?
        }
        None => None,
    };
    let message_id = inbound_text(row, "message_id").or_else(|| row.external_id.clone());
    let body = draft
        .fields
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| inbound_text(row, "text"));
    let now = Utc::now();
    if let Some(ticket) = tickets::thread_of_email(conn, subject.as_deref(), &references).await? {
        let outcome = tickets::reply(
            conn,
            journal,
            ctx,
            service,
            &ticket,
            Reply {
                direction: Direction::Inbound,
                subject: subject.clone(),
                body,
                channel: "email".to_owned(),
                external_id: message_id,
                inbound_id: Some(row.id.clone()),
                contact_id: contact.as_ref().map(|(id, _)| id.clone()),
            },
            now,
        )
        .await?;
        return Ok(json!({"action": outcome.action, "kind": "tickets", "id": outcome.ticket_id}));
    }
    let text = |name: &str| {
        draft
            .fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut custom = draft.custom.clone();
    if let Some(sender) = &sender {
        custom.insert("from_address".into(), Value::from(sender.clone()));
    }
    let created = tickets::create(
        conn,
        journal,
        ctx,
        service,
        NewTicket {
            subject: text("subject")
                .or(subject)
                .unwrap_or_else(|| "(no subject)".to_owned()),
            description: body,
            priority: text("priority"),
            channel: text("channel").unwrap_or_else(|| "email".to_owned()),
            account_id: contact.as_ref().and_then(|(_, account)| account.clone()),
            contact_id: contact.map(|(id, _)| id),
            lead_id: None,
            owner_id: text("owner_id"),
            thread_key: message_id.clone(),
            follow_up_of: None,
            custom: (!custom.is_empty()).then_some(custom),
            external_id: message_id,
            inbound_id: Some(row.id.clone()),
        },
        now,
    )
    .await?;
    Ok(
        json!({"action": "created", "kind": "tickets", "id": created.id,
              "number": created.number}),
    )
}

/// A WhatsApp message from a known contact's number: onto their ticket that is not
/// closed, else a new ticket. `None` when the number is no contact's (it stays a lead).
pub async fn whatsapp(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    service: &Service,
    row: &InboxRow,
    draft: &Draft,
) -> Result<Option<Value>, RowError> {
    let Some(phone) = draft
        .fields
        .get("phone")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    journal.settle_inserts(conn).await?;
    let Some((contact, account)) = contact_by(
        conn,
        "SELECT id, account_id FROM contacts WHERE phone = $1 OR mobile_phone = $1 \
         ORDER BY id LIMIT 1",
        &phone,
    )
    .await?
    else {
        return Ok(None);
    };
    let body = draft
        .activity
        .get("body")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let now = Utc::now();
    if let Some(ticket) = tickets::open_ticket_of_contact(conn, &contact).await? {
        let outcome = tickets::reply(
            conn,
            journal,
            ctx,
            service,
            &ticket,
            Reply {
                direction: Direction::Inbound,
                subject: None,
                body,
                channel: "whatsapp".to_owned(),
                external_id: row.external_id.clone(),
                inbound_id: Some(row.id.clone()),
                contact_id: Some(contact),
            },
            now,
        )
        .await?;
        return Ok(Some(
            json!({"action": outcome.action, "kind": "tickets", "id": outcome.ticket_id}),
        ));
    }
    let subject = body
        .as_deref()
        .map(|text| {
            let line = text.lines().next().unwrap_or(text);
            let short: String = line.chars().take(80).collect();
            format!("WhatsApp: {short}")
        })
        .unwrap_or_else(|| "WhatsApp message".to_owned());
    let created = tickets::create(
        conn,
        journal,
        ctx,
        service,
        NewTicket {
            subject,
            description: body,
            priority: None,
            channel: "whatsapp".to_owned(),
            account_id: account,
            contact_id: Some(contact),
            thread_key: Some(format!("whatsapp:{phone}")),
            custom: Some(Map::from_iter([("phone".to_owned(), Value::from(phone))])),
            external_id: row.external_id.clone(),
            inbound_id: Some(row.id.clone()),
            ..NewTicket::default()
        },
        now,
    )
    .await?;
    Ok(Some(
        json!({"action": "created", "kind": "tickets", "id": created.id,
                   "number": created.number}),
    ))
}
