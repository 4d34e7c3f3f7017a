//! Contracts (the `renewals` kind): start, end, value, renewal terms and an AMC visit
//! schedule. `service.renewal_notice_days` before the end a renewal opportunity opens
//! (once) and the owner gets a reminder task; a contract past its end that was not renewed
//! lapses.

use std::sync::Arc;

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::{Service, ServiceError};
use crate::domain::RecordKind;
use crate::domain::value::format_timestamp;
use crate::store::read::fields_in;
use crate::store::write::{Journal, apply_journaled, new_id};
use crate::store::{Change, RequestMeta, Store, WriteContext};

pub const ACTIVE: &str = "active";
pub const RENEWED: &str = "renewed";
pub const LAPSED: &str = "lapsed";

/// Most AMC visits a contract schedules (weekly for ten years is already too many).
const MAX_VISITS: usize = 520;

fn date(fields: &Map<String, Value>, name: &str) -> Result<Option<NaiveDate>, ServiceError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| ServiceError::Invalid(format!("{name} must be YYYY-MM-DD"))),
        Some(_) => Err(ServiceError::Invalid(format!("{name} must be YYYY-MM-DD"))),
    }
}

/// A contract's dates as they will be after `changes`: both present, end not before start.
pub fn check_dates(
    current: &Map<String, Value>,
    changes: &Map<String, Value>,
) -> Result<(NaiveDate, NaiveDate), ServiceError> {
    let pick = |name: &str| {
        if changes.contains_key(name) {
            date(changes, name)
        } else {
            date(current, name)
        }
    };
    let start = pick("start_date")?
        .ok_or_else(|| ServiceError::Invalid("a contract needs a start_date".into()))?;
    let end = pick("end_date")?
        .ok_or_else(|| ServiceError::Invalid("a contract needs an end_date".into()))?;
    if end < start {
        return Err(ServiceError::Invalid(format!(
            "end_date {end} is before start_date {start}"
        )));
    }
    Ok((start, end))
}

/// The AMC visit dates: `per_year` evenly spaced visits a year from the start, while
/// before the end.
pub fn visit_dates(start: NaiveDate, end: NaiveDate, per_year: i64) -> Vec<NaiveDate> {
    if per_year <= 0 {
        return Vec::new();
    }
    let mut dates = Vec::new();
    if 12 % per_year == 0 {
        // Whole months apart (quarterly, monthly …), counted from the start each time so
        // month ends do not drift.
        let step = (12 / per_year) as u32;
        for n in 1.. {
            let Some(at) = start.checked_add_months(Months::new(step * n)) else {
                break;
            };
            if at > end || dates.len() >= MAX_VISITS {
                break;
            }
            dates.push(at);
        }
    } else {
        let step = Duration::days(365 / per_year);
        let mut at = start + step;
        while at <= end && dates.len() < MAX_VISITS {
            dates.push(at);
            at += step;
        }
    }
    dates
}

/// Creates a contract: its owner is the account's unless named, and its AMC visits are
/// scheduled activities on the account's timeline.
pub async fn create(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    mut fields: Map<String, Value>,
) -> Result<String, ServiceError> {
    let (start, end) = check_dates(&Map::new(), &fields)?;
    journal.settle_inserts(conn).await?;
    let account_id = fields
        .get("account_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ServiceError::Invalid("a contract needs an account_id".into()))?;
    let account = fields_in(conn, RecordKind::Account, &account_id)
        .await?
        .ok_or_else(|| ServiceError::Invalid(format!("no account {account_id}")))?;
    if fields.get("owner_id").is_none_or(Value::is_null)
        && let Some(owner) = account.get("owner_id").filter(|v| !v.is_null())
    {
        fields.insert("owner_id".into(), owner.clone());
    }
    fields
        .entry("status")
        .or_insert_with(|| Value::from(ACTIVE));
    let visits = fields
        .get("amc_visits_per_year")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let id = new_id();
    let owner = fields.get("owner_id").cloned().unwrap_or(Value::Null);
    let name = fields
        .get("contract_name")
        .and_then(Value::as_str)
        .unwrap_or("contract")
        .to_owned();
    let mut changes = vec![
        Change::Insert {
            kind: RecordKind::Renewal,
            id: Some(id.clone()),
            fields,
        },
        insert_activity(json!({
            "activity_type": "contract",
            "subject": format!("Contract {name} from {start} to {end}"),
            "channel": ctx.channel,
            "occurred_at": format_timestamp(Utc::now()),
            "account_id": account_id,
            "owner_id": owner,
            "data": {"renewal_id": id, "status": ACTIVE},
        })),
    ];
    let dates = visit_dates(start, end, visits);
    let total = dates.len();
    for (n, day) in dates.into_iter().enumerate() {
        let at = day
            .and_hms_opt(9, 0, 0)
            .map(|t| format_timestamp(t.and_utc()))
            .unwrap_or_default();
        changes.push(insert_activity(json!({
            "activity_type": "amc_visit",
            "status": "scheduled",
            "subject": format!("AMC visit {} of {total}: {name}", n + 1),
            "channel": "system",
            "occurred_at": at,
            "account_id": account_id,
            "owner_id": owner,
            "data": {"renewal_id": id, "visit": n + 1, "of": total},
        })));
    }
    apply_journaled(conn, ctx, changes, journal).await?;
    Ok(id)
}

fn insert_activity(fields: Value) -> Change {
    let Value::Object(fields) = fields else {
        unreachable!("activity fields are an object literal")
    };
    Change::Insert {
        kind: RecordKind::Activity,
        id: None,
        fields: fields.into_iter().filter(|(_, v)| !v.is_null()).collect(),
    }
}

/// Marks an active contract renewed or lapsed; its renewal opportunity is won or lost.
pub async fn set_status(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    id: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    if status != RENEWED && status != LAPSED {
        return Err(ServiceError::Invalid(format!(
            "status `{status}`: a contract is marked `renewed` or `lapsed`"
        )));
    }
    journal.settle_inserts(conn).await?;
    let contract = fields_in(conn, RecordKind::Renewal, id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("renewal {id}")))?;
    let current = contract
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or(ACTIVE);
    if current != ACTIVE {
        return Err(ServiceError::State(format!(
            "the contract is already {current}"
        )));
    }
    let changes = closing_changes(id, &contract, status, now);
    apply_journaled(conn, ctx, changes, journal).await?;
    Ok(())
}

fn closing_changes(
    id: &str,
    contract: &Map<String, Value>,
    status: &str,
    now: DateTime<Utc>,
) -> Vec<Change> {
    let mut changes = vec![Change::Update {
        kind: RecordKind::Renewal,
        id: id.to_owned(),
        fields: Map::from_iter([("status".to_owned(), json!(status))]),
        expected_version: None,
    }];
    if let Some(opportunity) = contract
        .get("renewal_opportunity_id")
        .and_then(Value::as_str)
    {
        changes.push(Change::Update {
            kind: RecordKind::Opportunity,
            id: opportunity.to_owned(),
            fields: Map::from_iter([(
                "stage".to_owned(),
                json!(if status == RENEWED {
                    "closed_won"
                } else {
                    "closed_lost"
                }),
            )]),
            expected_version: None,
        });
    }
    let name = contract
        .get("contract_name")
        .and_then(Value::as_str)
        .unwrap_or("contract");
    changes.push(insert_activity(json!({
        "activity_type": "contract",
        "subject": format!("Contract {name} {status}"),
        "channel": "system",
        "occurred_at": format_timestamp(now),
        "account_id": contract.get("account_id"),
        "owner_id": contract.get("owner_id"),
        "data": {"renewal_id": id, "status": status},
    })));
    changes
}

/// One pass: opens the renewal opportunity (and reminds the owner) of every active
/// contract within the notice period that has none, and lapses active contracts past
/// their end. Answers (opened, lapsed).
pub async fn evaluate(
    store: &Store,
    service: &Service,
    now: DateTime<Utc>,
) -> Result<(usize, usize), ServiceError> {
    let ctx = Arc::new(WriteContext::new(
        "system:renewals",
        "system",
        RequestMeta::default(),
    ));
    let today = now.date_naive();
    let notice = (today + Duration::days(service.config.renewal_notice_days))
        .format("%Y-%m-%d")
        .to_string();
    let today_text = today.format("%Y-%m-%d").to_string();
    let mut opened = 0;
    let mut tx = store.begin_write().await?;
    let claim = super::claim_rows(store);
    let rows = sqlx::query(&format!(
        "SELECT id FROM renewals WHERE status = 'active' AND renewal_opportunity_id IS NULL \
         AND end_date <= $1 AND end_date >= $2 ORDER BY end_date LIMIT 500{claim}"
    ))
    .bind(&notice)
    .bind(&today_text)
    .fetch_all(&mut *tx)
    .await?;
    let mut journal = Journal::default();
    for row in &rows {
        let id: String = row.try_get("id")?;
        let Some(contract) = fields_in(&mut tx, RecordKind::Renewal, &id).await? else {
            continue;
        };
        let name = contract
            .get("contract_name")
            .and_then(Value::as_str)
            .unwrap_or("contract")
            .to_owned();
        let end = contract.get("end_date").cloned().unwrap_or(Value::Null);
        let owner = contract.get("owner_id").cloned().unwrap_or(Value::Null);
        let account = contract.get("account_id").cloned().unwrap_or(Value::Null);
        let opportunity = new_id();
        let mut opp_fields = Map::from_iter([
            ("name".to_owned(), json!(format!("Renewal: {name}"))),
            ("stage".to_owned(), json!("renewal")),
            ("close_date".to_owned(), end.clone()),
            ("account_id".to_owned(), account.clone()),
            ("owner_id".to_owned(), owner.clone()),
            (
                "amount".to_owned(),
                contract.get("value").cloned().unwrap_or(Value::Null),
            ),
            (
                "currency".to_owned(),
                contract.get("currency").cloned().unwrap_or(Value::Null),
            ),
            ("custom".to_owned(), json!({"renewal_id": id})),
        ]);
        opp_fields.retain(|_, v| !v.is_null());
        let changes = vec![
            Change::Insert {
                kind: RecordKind::Opportunity,
                id: Some(opportunity.clone()),
                fields: opp_fields,
            },
            Change::Update {
                kind: RecordKind::Renewal,
                id: id.clone(),
                fields: Map::from_iter([
                    ("renewal_opportunity_id".to_owned(), json!(opportunity)),
                    ("reminded_at".to_owned(), json!(format_timestamp(now))),
                ]),
                expected_version: None,
            },
            insert_activity(json!({
                "activity_type": "task",
                "status": "open",
                "subject": format!("Renew {name}: it ends {}", end.as_str().unwrap_or("soon")),
                "channel": "system",
                "occurred_at": format_timestamp(now),
                "account_id": account,
                "opportunity_id": opportunity,
                "owner_id": owner,
                "data": {"renewal_id": id, "due": end},
            })),
        ];
        apply_journaled(&mut tx, &ctx, changes, &mut journal).await?;
        opened += 1;
    }
    let lapsing = sqlx::query(&format!(
        "SELECT id FROM renewals WHERE status = 'active' AND end_date < $1 ORDER BY end_date \
         LIMIT 500{claim}"
    ))
    .bind(&today_text)
    .fetch_all(&mut *tx)
    .await?;
    for row in &lapsing {
        let id: String = row.try_get("id")?;
        if let Some(contract) = fields_in(&mut tx, RecordKind::Renewal, &id).await? {
            let changes = closing_changes(&id, &contract, LAPSED, now);
            apply_journaled(&mut tx, &ctx, changes, &mut journal).await?;
        }
    }
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    Ok((opened, lapsing.len()))
}

/// Days until `end` from `today` (negative once past).
pub fn days_left(today: NaiveDate, end: NaiveDate) -> i64 {
    (end - today).num_days()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("valid date")
    }

    #[test]
    fn quarterly_visits_fall_every_three_months_within_the_term() {
        assert_eq!(
            visit_dates(d("2026-01-31"), d("2026-12-31"), 4),
            vec![d("2026-04-30"), d("2026-07-31"), d("2026-10-31")]
        );
        assert_eq!(visit_dates(d("2026-01-01"), d("2027-01-01"), 4).len(), 4);
        assert!(visit_dates(d("2026-01-01"), d("2027-01-01"), 0).is_empty());
        assert_eq!(visit_dates(d("2026-01-01"), d("2026-12-31"), 5).len(), 4);
    }

    #[test]
    fn an_end_before_the_start_is_refused() {
        let fields = |start: &str, end: &str| {
            Map::from_iter([
                ("start_date".to_owned(), json!(start)),
                ("end_date".to_owned(), json!(end)),
            ])
        };
        assert!(check_dates(&Map::new(), &fields("2026-01-01", "2026-12-31")).is_ok());
        assert!(check_dates(&Map::new(), &fields("2026-01-01", "2026-01-01")).is_ok());
        let error = check_dates(&Map::new(), &fields("2026-12-31", "2026-01-01")).unwrap_err();
        assert!(error.to_string().contains("before"), "{error}");
        // A change to one date is checked against the stored other.
        let stored = fields("2026-06-01", "2026-12-31");
        let change = Map::from_iter([("end_date".to_owned(), json!("2026-05-01"))]);
        assert!(check_dates(&stored, &change).is_err());
        assert!(check_dates(&Map::new(), &Map::new()).is_err());
        assert_eq!(days_left(d("2026-01-01"), d("2026-01-31")), 30);
    }
}
