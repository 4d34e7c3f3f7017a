//! Support tickets: creation (API, mailbox, WhatsApp), the status machine, replies and
//! their threading, and the SLA timers each status change starts, pauses or resumes.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use sqlx::AnyConnection;

use super::{ClosedReply, Service, ServiceError};
use crate::domain::RecordKind;
use crate::domain::value::format_timestamp;
use crate::store::read::fields_in;
use crate::store::write::{Journal, apply_journaled, new_id};
use crate::store::{Change, WriteContext};

/// A ticket's status. New and open run the SLA clock; the others stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    New,
    Open,
    PendingCustomer,
    Resolved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::New,
        Status::Open,
        Status::PendingCustomer,
        Status::Resolved,
        Status::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::PendingCustomer => "pending_customer",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the SLA clock runs in this status.
    pub fn runs_clock(self) -> bool {
        matches!(self, Status::New | Status::Open)
    }

    /// The legal moves. Nothing returns to `new`; a closed ticket moves only by a
    /// customer's reply (reopen or follow-up, as configured), never by hand.
    pub fn can_move_to(self, to: Status) -> bool {
        use Status::*;
        match (self, to) {
            (from, to) if from == to => false,
            (_, New) => false,
            (New | Open | PendingCustomer, _) => true,
            (Resolved, Open | Closed) => true,
            (Resolved, _) => false,
            (Closed, _) => false,
        }
    }
}

/// What creating a ticket needs.
#[derive(Debug, Clone, Default)]
pub struct NewTicket {
    pub subject: String,
    pub description: Option<String>,
    pub priority: Option<String>,
    /// `api`, `email`, `whatsapp` …
    pub channel: String,
    pub account_id: Option<String>,
    pub contact_id: Option<String>,
    pub lead_id: Option<String>,
    pub owner_id: Option<String>,
    pub thread_key: Option<String>,
    pub follow_up_of: Option<String>,
    pub custom: Option<Map<String, Value>>,
    /// The first message's id on its channel (an email's Message-ID): the activity keeps
    /// it, so replies that reference it thread onto the ticket.
    pub external_id: Option<String>,
    pub inbound_id: Option<String>,
}

/// A ticket created.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub number: i64,
    pub owner_id: Option<String>,
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn parse_time(fields: &Map<String, Value>, name: &str) -> Option<DateTime<Utc>> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn activity(fields: Value) -> Change {
    let Value::Object(fields) = fields else {
        unreachable!("activity fields are an object literal")
    };
    Change::Insert {
        kind: RecordKind::Activity,
        id: None,
        fields: fields
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .collect(),
    }
}

/// The next ticket number, taken in the caller's transaction (gapless: a rolled-back
/// transaction gives its number back).
async fn next_number(conn: &mut AnyConnection) -> Result<i64, ServiceError> {
    Ok(sqlx::query_scalar(
        "UPDATE service_counters SET value = value + 1 WHERE name = 'tickets' RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// A ticket as stored, with its creation instant.
pub struct Ticket {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub fields: Map<String, Value>,
}

impl Ticket {
    pub fn status(&self) -> Status {
        text(&self.fields, "status")
            .and_then(|s| Status::parse(&s))
            .unwrap_or(Status::New)
    }

    pub fn number(&self) -> Option<i64> {
        self.fields.get("number").and_then(Value::as_i64)
    }

    fn name(&self) -> String {
        self.number()
            .map_or_else(|| self.id.clone(), |n| format!("T-{n}"))
    }

    fn text(&self, name: &str) -> Option<String> {
        text(&self.fields, name)
    }
}

pub async fn load(conn: &mut AnyConnection, id: &str) -> Result<Ticket, ServiceError> {
    let fields = fields_in(conn, RecordKind::Ticket, id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("ticket {id}")))?;
    let created: String = sqlx::query_scalar("SELECT created_at FROM tickets WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    let created_at = DateTime::parse_from_rfc3339(&created)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    Ok(Ticket {
        id: id.to_owned(),
        created_at,
        fields,
    })
}

/// Creates a ticket: number, SLA due times, routing, and its opening on the timeline of
/// the ticket and of its account.
pub async fn create(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    service: &Service,
    new: NewTicket,
    now: DateTime<Utc>,
) -> Result<Created, ServiceError> {
    if new.subject.trim().is_empty() {
        return Err(ServiceError::Invalid("a ticket needs a subject".into()));
    }
    let priority = new
        .priority
        .clone()
        .unwrap_or_else(|| service.config.default_priority.clone());
    let target = service.target(&priority).ok_or_else(|| {
        ServiceError::Invalid(format!(
            "unknown priority `{priority}`; configured: {}",
            service
                .config
                .sla
                .targets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    journal.settle_inserts(conn).await?;
    let mut account_id = new.account_id.clone();
    let mut country = None;
    if let Some(contact_id) = &new.contact_id {
        let contact = fields_in(conn, RecordKind::Contact, contact_id)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("no contact {contact_id}")))?;
        if account_id.is_none() {
            account_id = text(&contact, "account_id");
        }
        country = text(&contact, "country");
    }
    if let Some(account) = &account_id {
        let fields = fields_in(conn, RecordKind::Account, account)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("no account {account}")))?;
        country = text(&fields, "country").or(country);
    }
    let mut owner_id = new.owner_id.clone();
    let mut rule = None;
    if owner_id.is_none() {
        let routing = Map::from_iter(
            [
                ("country".to_owned(), country.clone().map(Value::from)),
                ("priority".to_owned(), Some(Value::from(priority.clone()))),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v))),
        );
        if let Some(assignment) = service
            .assigner
            .assign(conn, &routing, &format!("ticket:{}", new.channel))
            .await?
        {
            owner_id = Some(assignment.owner);
            rule = Some(assignment.rule);
        }
    }
    let number = next_number(conn).await?;
    let (first_due, resolution_due) =
        super::sla::due_times(&service.calendar, now, target, Duration::zero());
    let id = new_id();
    let mut fields = json!({
        "subject": new.subject,
        "description": new.description,
        "status": Status::New.as_str(),
        "priority": priority,
        "channel": new.channel,
        "account_id": account_id,
        "contact_id": new.contact_id,
        "lead_id": new.lead_id,
        "owner_id": owner_id,
        "number": number,
        "first_response_due": format_timestamp(first_due),
        "resolution_due": format_timestamp(resolution_due),
        "thread_key": new.thread_key,
        "follow_up_of": new.follow_up_of,
        "assignment_rule": rule,
        "sla_paused_seconds": 0,
        "reopened_count": 0,
    });
    if let (Some(custom), Value::Object(map)) = (new.custom.clone(), &mut fields) {
        map.insert("custom".into(), Value::Object(custom));
    }
    let Value::Object(fields) = fields else {
        unreachable!("ticket fields are an object literal")
    };
    let fields: Map<String, Value> = fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let at = format_timestamp(now);
    let mut changes = vec![
        Change::Insert {
            kind: RecordKind::Ticket,
            id: Some(id.clone()),
            fields,
        },
        activity(json!({
            "activity_type": "ticket_opened",
            "subject": format!("T-{number} opened: {}", new.subject),
            "body": new.description,
            "direction": "inbound",
            "channel": new.channel,
            "occurred_at": at,
            "ticket_id": id,
            "account_id": account_id,
            "contact_id": new.contact_id,
            "owner_id": owner_id,
            "external_id": new.external_id,
            "inbound_id": new.inbound_id,
            "data": {"number": number, "priority": priority, "follow_up_of": new.follow_up_of},
        })),
    ];
    if let (Some(owner), Some(rule)) = (&owner_id, &rule) {
        changes.push(activity(json!({
            "activity_type": "assignment",
            "subject": format!("T-{number} assigned by rule {rule}"),
            "channel": "pipeline",
            "occurred_at": at,
            "ticket_id": id,
            "owner_id": owner,
            "data": {"rule": rule, "owner_id": owner},
        })));
    }
    apply_journaled(conn, ctx, changes, journal).await?;
    Ok(Created {
        id,
        number,
        owner_id,
    })
}

/// The fields a move from the ticket's status to `to` sets: timestamps, and the SLA clock
/// stopped (into pending/resolved/closed) or resumed with the paused time credited.
pub fn transition(
    service: &Service,
    ticket: &Ticket,
    to: Status,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let from = ticket.status();
    let mut fields = Map::new();
    fields.insert("status".into(), Value::from(to.as_str()));
    let at = format_timestamp(now);
    if from.runs_clock() && !to.runs_clock() {
        fields.insert("sla_paused_at".into(), Value::from(at.clone()));
    }
    if !from.runs_clock() && to.runs_clock() {
        let paused_since = parse_time(&ticket.fields, "sla_paused_at").unwrap_or(now);
        let before = ticket
            .fields
            .get("sla_paused_seconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let paused = Duration::seconds(before) + service.calendar.between(paused_since, now);
        fields.insert("sla_paused_at".into(), Value::Null);
        fields.insert(
            "sla_paused_seconds".into(),
            Value::from(paused.num_seconds()),
        );
        let priority = ticket
            .text("priority")
            .unwrap_or_else(|| service.config.default_priority.clone());
        if let Some(target) = service.target(&priority) {
            let (first, resolution) =
                super::sla::due_times(&service.calendar, ticket.created_at, target, paused);
            fields.insert("first_response_due".into(), format_timestamp(first).into());
            fields.insert("resolution_due".into(), format_timestamp(resolution).into());
        }
    }
    if matches!(to, Status::Resolved | Status::Closed) && ticket.text("resolved_at").is_none() {
        fields.insert("resolved_at".into(), Value::from(at.clone()));
    }
    if to == Status::Closed {
        fields.insert("closed_at".into(), Value::from(at.clone()));
    }
    if matches!(from, Status::Resolved | Status::Closed) && to == Status::Open {
        fields.insert("resolved_at".into(), Value::Null);
        fields.insert("closed_at".into(), Value::Null);
        let count = ticket
            .fields
            .get("reopened_count")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        fields.insert("reopened_count".into(), Value::from(count + 1));
    }
    fields
}

/// A requested status move: where to, and the version the caller saw (`If-Match`).
#[derive(Debug, Clone, Copy)]
pub struct Move {
    pub to: Status,
    pub expected_version: Option<i64>,
}

/// Moves a ticket, refusing illegal moves; the move is on the timeline.
pub async fn change_status(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    service: &Service,
    id: &str,
    Move {
        to,
        expected_version,
    }: Move,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    journal.settle_inserts(conn).await?;
    let ticket = load(conn, id).await?;
    let from = ticket.status();
    if !from.can_move_to(to) {
        return Err(ServiceError::State(format!(
            "a {} ticket cannot move to {}",
            from.as_str(),
            to.as_str()
        )));
    }
    let fields = transition(service, &ticket, to, now);
    let changes = vec![
        Change::Update {
            kind: RecordKind::Ticket,
            id: id.to_owned(),
            fields,
            expected_version,
        },
        status_activity(&ticket, from, to, &ctx.channel, now),
    ];
    apply_journaled(conn, ctx, changes, journal).await?;
    Ok(())
}

fn status_activity(
    ticket: &Ticket,
    from: Status,
    to: Status,
    channel: &str,
    now: DateTime<Utc>,
) -> Change {
    activity(json!({
        "activity_type": "ticket_status",
        "subject": format!("{} {} → {}", ticket.name(), from.as_str(), to.as_str()),
        "channel": channel,
        "occurred_at": format_timestamp(now),
        "ticket_id": ticket.id,
        "account_id": ticket.text("account_id"),
        "data": {"from": from.as_str(), "to": to.as_str()},
    }))
}

/// Who wrote a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The customer.
    Inbound,
    /// An agent.
    Outbound,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub direction: Direction,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub channel: String,
    /// The message's id on its channel (an email's Message-ID).
    pub external_id: Option<String>,
    pub inbound_id: Option<String>,
    pub contact_id: Option<String>,
}

/// Where a reply went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOutcome {
    /// The ticket the reply is on (a new follow-up for a reply to a closed ticket).
    pub ticket_id: String,
    /// `appended`, `reopened`, `resumed` or `follow_up`.
    pub action: &'static str,
}

/// Puts a reply on a ticket. A customer's reply resumes a ticket pending them, reopens a
/// resolved one, and reopens a closed one or opens a follow-up (`service.closed_reply`);
/// an agent's first reply is the first response.
pub async fn reply(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    service: &Service,
    id: &str,
    reply: Reply,
    now: DateTime<Utc>,
) -> Result<ReplyOutcome, ServiceError> {
    journal.settle_inserts(conn).await?;
    let ticket = load(conn, id).await?;
    let status = ticket.status();
    let mut action = "appended";
    let mut changes = Vec::new();
    match reply.direction {
        Direction::Inbound => {
            let to = match status {
                Status::PendingCustomer => {
                    action = "resumed";
                    Some(Status::Open)
                }
                Status::Resolved => {
                    action = "reopened";
                    Some(Status::Open)
                }
                Status::Closed if service.config.closed_reply == ClosedReply::Reopen => {
                    action = "reopened";
                    Some(Status::Open)
                }
                Status::Closed => {
                    let subject = reply
                        .subject
                        .clone()
                        .unwrap_or_else(|| format!("Follow-up to {}", ticket.name()));
                    let created = create(
                        conn,
                        journal,
                        ctx,
                        service,
                        NewTicket {
                            subject,
                            description: reply.body.clone(),
                            priority: ticket.text("priority"),
                            channel: reply.channel.clone(),
                            account_id: ticket.text("account_id"),
                            contact_id: reply
                                .contact_id
                                .clone()
                                .or_else(|| ticket.text("contact_id")),
                            lead_id: ticket.text("lead_id"),
                            owner_id: ticket.text("owner_id"),
                            thread_key: ticket.text("thread_key"),
                            follow_up_of: Some(ticket.id.clone()),
                            custom: None,
                            external_id: reply.external_id.clone(),
                            inbound_id: reply.inbound_id.clone(),
                        },
                        now,
                    )
                    .await?;
                    // The closed ticket no longer threads: its key moves to the follow-up.
                    changes.push(Change::Update {
                        kind: RecordKind::Ticket,
                        id: ticket.id.clone(),
                        fields: Map::from_iter([("thread_key".to_owned(), Value::Null)]),
                        expected_version: None,
                    });
                    changes.push(activity(json!({
                        "activity_type": "ticket_follow_up",
                        "subject": format!("{} closed; the reply opened T-{}", ticket.name(), created.number),
                        "channel": reply.channel,
                        "occurred_at": format_timestamp(now),
                        "ticket_id": ticket.id,
                        "data": {"follow_up_id": created.id},
                    })));
                    apply_journaled(conn, ctx, changes, journal).await?;
                    return Ok(ReplyOutcome {
                        ticket_id: created.id,
                        action: "follow_up",
                    });
                }
                Status::New | Status::Open => None,
            };
            if let Some(to) = to {
                changes.push(Change::Update {
                    kind: RecordKind::Ticket,
                    id: ticket.id.clone(),
                    fields: transition(service, &ticket, to, now),
                    expected_version: None,
                });
                changes.push(status_activity(&ticket, status, to, &reply.channel, now));
            }
        }
        Direction::Outbound => {
            if status == Status::Closed {
                return Err(ServiceError::State(format!(
                    "{} is closed; agents reply on an open ticket",
                    ticket.name()
                )));
            }
            let mut fields = Map::new();
            if ticket.text("first_responded_at").is_none() {
                fields.insert("first_responded_at".into(), format_timestamp(now).into());
            }
            if status == Status::New {
                fields.extend(transition(service, &ticket, Status::Open, now));
                changes.push(status_activity(
                    &ticket,
                    status,
                    Status::Open,
                    &reply.channel,
                    now,
                ));
            }
            if !fields.is_empty() {
                changes.insert(
                    0,
                    Change::Update {
                        kind: RecordKind::Ticket,
                        id: ticket.id.clone(),
                        fields,
                        expected_version: None,
                    },
                );
            }
        }
    }
    let direction = match reply.direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    };
    changes.push(activity(json!({
        "activity_type": "message",
        "subject": reply.subject.clone().unwrap_or_else(|| format!("Reply on {}", ticket.name())),
        "body": reply.body,
        "direction": direction,
        "channel": reply.channel,
        "occurred_at": format_timestamp(now),
        "ticket_id": ticket.id,
        "account_id": ticket.text("account_id"),
        "contact_id": reply.contact_id.or_else(|| ticket.text("contact_id")),
        "external_id": reply.external_id,
        "inbound_id": reply.inbound_id,
    })));
    apply_journaled(conn, ctx, changes, journal).await?;
    Ok(ReplyOutcome {
        ticket_id: ticket.id,
        action,
    })
}

/// Recomputes the due times after a priority change: the new target from creation, plus
/// the paused time so far.
pub fn reprioritised(
    service: &Service,
    ticket: &Ticket,
    priority: &str,
) -> Result<Map<String, Value>, ServiceError> {
    let target = service
        .target(priority)
        .ok_or_else(|| ServiceError::Invalid(format!("unknown priority `{priority}`")))?;
    let paused = Duration::seconds(
        ticket
            .fields
            .get("sla_paused_seconds")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    );
    let (first, resolution) =
        super::sla::due_times(&service.calendar, ticket.created_at, target, paused);
    Ok(Map::from_iter([
        ("priority".to_owned(), Value::from(priority)),
        (
            "first_response_due".to_owned(),
            format_timestamp(first).into(),
        ),
        (
            "resolution_due".to_owned(),
            format_timestamp(resolution).into(),
        ),
    ]))
}

/// The `[#T-123]` token in a subject, if any.
pub fn subject_token(subject: &str) -> Option<i64> {
    let start = subject.find("[#T-")?;
    let rest = &subject[start + 4..];
    let end = rest.find(']')?;
    rest[..end].trim().parse().ok()
}

/// The ticket an email belongs to: a `[#T-123]` subject token, else a message it answers
/// (In-Reply-To, References) that is on a ticket's timeline or is a ticket's first
/// message. Follow-ups win over the closed ticket they follow.
pub async fn thread_of_email(
    conn: &mut AnyConnection,
    subject: Option<&str>,
    references: &[String],
) -> Result<Option<String>, ServiceError> {
    if let Some(number) = subject.and_then(subject_token) {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM tickets WHERE number = $1")
            .bind(number)
            .fetch_optional(&mut *conn)
            .await?;
        if id.is_some() {
            return follow_latest(conn, id).await;
        }
    }
    for reference in references.iter().rev() {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT ticket_id FROM activities WHERE external_id = $1 AND ticket_id IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(reference)
        .fetch_optional(&mut *conn)
        .await?;
        if id.is_some() {
            return follow_latest(conn, id).await;
        }
    }
    Ok(None)
}

/// The newest follow-up of a ticket, if a reply to it opened one.
async fn follow_latest(
    conn: &mut AnyConnection,
    mut id: Option<String>,
) -> Result<Option<String>, ServiceError> {
    for _ in 0..16 {
        let Some(current) = &id else { break };
        let next: Option<String> = sqlx::query_scalar(
            "SELECT id FROM tickets WHERE follow_up_of = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(current)
        .fetch_optional(&mut *conn)
        .await?;
        match next {
            Some(next) => id = Some(next),
            None => break,
        }
    }
    Ok(id)
}

/// A contact's ticket that is not closed (newest first): where their next WhatsApp
/// message goes.
pub async fn open_ticket_of_contact(
    conn: &mut AnyConnection,
    contact_id: &str,
) -> Result<Option<String>, ServiceError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM tickets WHERE contact_id = $1 AND status <> 'closed' \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(contact_id)
    .fetch_optional(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_moves_follow_the_lifecycle() {
        use Status::*;
        assert!(New.can_move_to(Open));
        assert!(New.can_move_to(PendingCustomer));
        assert!(Open.can_move_to(Resolved));
        assert!(PendingCustomer.can_move_to(Open));
        assert!(Resolved.can_move_to(Closed));
        assert!(Resolved.can_move_to(Open));
        assert!(!Resolved.can_move_to(PendingCustomer));
        assert!(!Open.can_move_to(New));
        assert!(!Closed.can_move_to(Open), "only a customer's reply reopens");
        assert!(!Open.can_move_to(Open));
    }

    fn office_hours() -> Service {
        let mut config = super::super::ServiceConfig::default();
        config.sla.business_hours = Some(super::super::sla::BusinessHoursConfig {
            time_zone: "UTC".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(str::to_owned)
                .to_vec(),
            start: "09:00".into(),
            end: "17:00".into(),
        });
        Service::new(config).expect("valid service configuration")
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_weekend_pending_the_customer_credits_only_business_hours() {
        let service = office_hours();
        // Created Thursday 09:00 (normal: 8 business hours to first response).
        let mut ticket = Ticket {
            id: "t".into(),
            created_at: at("2026-11-26T09:00:00Z"),
            fields: Map::from_iter([
                ("status".to_owned(), json!("open")),
                ("priority".to_owned(), json!("normal")),
            ]),
        };
        // Pending the customer from Friday 16:00 …
        let paused = transition(
            &service,
            &ticket,
            Status::PendingCustomer,
            at("2026-11-27T16:00:00Z"),
        );
        assert_eq!(
            paused["sla_paused_at"],
            json!("2026-11-27T16:00:00.000000Z")
        );
        ticket.fields.extend(paused);
        // … to Monday 10:00: two business hours, not 66 hours.
        let resumed = transition(&service, &ticket, Status::Open, at("2026-11-30T10:00:00Z"));
        assert_eq!(resumed["sla_paused_seconds"], json!(2 * 3600));
        assert!(resumed["sla_paused_at"].is_null());
        // First response: Thursday 17:00 + 2 h = Friday 11:00.
        assert_eq!(
            resumed["first_response_due"],
            json!("2026-11-27T11:00:00.000000Z")
        );
        assert!(
            !resumed.contains_key("reopened_count"),
            "resuming is no reopen"
        );
    }

    #[test]
    fn reopening_a_closed_ticket_clears_its_resolution_and_counts() {
        let service = office_hours();
        let ticket = Ticket {
            id: "t".into(),
            created_at: at("2026-11-26T09:00:00Z"),
            fields: Map::from_iter([
                ("status".to_owned(), json!("closed")),
                (
                    "resolved_at".to_owned(),
                    json!("2026-11-26T12:00:00.000000Z"),
                ),
                (
                    "sla_paused_at".to_owned(),
                    json!("2026-11-26T12:00:00.000000Z"),
                ),
                ("reopened_count".to_owned(), json!(1)),
            ]),
        };
        let fields = transition(&service, &ticket, Status::Open, at("2026-11-26T13:00:00Z"));
        assert_eq!(fields["reopened_count"], json!(2));
        assert!(fields["resolved_at"].is_null() && fields["closed_at"].is_null());
        assert_eq!(fields["sla_paused_seconds"], json!(3600));
    }

    #[test]
    fn the_subject_token_names_the_ticket_number() {
        assert_eq!(subject_token("Re: [#T-42] printer on fire"), Some(42));
        assert_eq!(subject_token("[#T- 7 ]"), Some(7));
        assert_eq!(subject_token("T-42 without brackets"), None);
        assert_eq!(subject_token("[#T-abc]"), None);
    }
}
