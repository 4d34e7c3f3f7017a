//! The one write path. Every insert, update, merge and delete of a record table goes
//! through [`apply`], which writes the change, its audit rows and an outbox row for the
//! search index in the caller's transaction. No other module writes record tables.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::{Store, StoreError};
use crate::domain::value::{format_timestamp, stored_to_json};
use crate::domain::{FieldDef, FieldType, RecordKind, SqlValue};

/// Where a request came from; copied onto every audit row it causes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Who is writing and through which channel.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// `user:<id>`, `partner:<name>`, `connector:<name>`, `pipeline:<stage>`, `cli:<user>`.
    pub actor: String,
    /// `api`, `partner`, `form`, `import`, `pipeline`, `cli` …
    pub channel: String,
    pub request: RequestMeta,
}

impl WriteContext {
    pub fn new(actor: impl Into<String>, channel: impl Into<String>, request: RequestMeta) -> Self {
        Self {
            actor: actor.into(),
            channel: channel.into(),
            request,
        }
    }
}

pub type Fields = Map<String, Value>;

#[derive(Debug, Clone)]
pub enum Change {
    Insert {
        kind: RecordKind,
        /// Chosen by the caller when other changes in the batch refer to it.
        id: Option<String>,
        fields: Fields,
    },
    Update {
        kind: RecordKind,
        id: String,
        fields: Fields,
        /// Refuse the update unless the record is still at this version.
        expected_version: Option<i64>,
    },
    Delete {
        kind: RecordKind,
        id: String,
    },
    /// An arriving record merged into a stored one: an update audited as `merge`.
    MergeIncoming {
        kind: RecordKind,
        into: String,
        fields: Fields,
        /// The record as this transaction read it to decide the merge: the update
        /// compares against it instead of reading the record again, and reads it again
        /// only when its version has moved since.
        read: Option<Box<Current>>,
    },
    /// `merged` folds into `survivor`: the survivor takes `fields`, the merged record is
    /// removed, and its full snapshot stays in the audit trail so the merge can be undone.
    Merge {
        kind: RecordKind,
        survivor: String,
        merged: String,
        fields: Fields,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Insert,
    Update,
    Delete,
    Merge,
    MergedInto,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Merge => "merge",
            Action::MergedInto => "merged_into",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub kind: RecordKind,
    pub id: String,
    pub action: Action,
    /// Fields whose value changed; empty for an update that changed nothing.
    pub changed: Vec<String>,
    pub version: i64,
}

pub(crate) struct AuditRow {
    pub(crate) action: &'static str,
    /// A record kind's path, or an event's subject (`users` for a sign-in).
    pub(crate) kind: &'static str,
    pub(crate) id: String,
    pub(crate) field: Option<String>,
    pub(crate) old: Option<String>,
    pub(crate) new: Option<String>,
}

/// Inserts, audit rows and outbox rows of changes made in a transaction, written by
/// [`Journal::flush`] before it commits: one statement per few hundred rows instead of
/// one per change. Updates and deletes run at once, after the queued inserts.
#[derive(Default)]
pub struct Journal {
    inserts: Vec<PendingInsert>,
    audit: Vec<(Arc<WriteContext>, String, AuditRow)>,
    outbox: Vec<(RecordKind, String, Action, String)>,
    members: PendingMembers,
    /// Dedup's in-memory blocking index has taken in what was committed before this
    /// transaction.
    blocking_caught_up: bool,
    /// Accounts of contacts by email, read for a whole batch in a few statements; an
    /// email missing here was not asked. Any contact change in the transaction drops it.
    contact_accounts: std::collections::HashMap<String, Option<String>>,
    /// Accounts by domain (id and owner), read for a whole batch like `contact_accounts`;
    /// an account inserted here takes a domain found empty, any other account change
    /// drops them all.
    domain_accounts: std::collections::HashMap<String, Option<DomainAccount>>,
}

/// An account as a lead's domain finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainAccount {
    pub id: String,
    pub owner_id: Option<String>,
}

/// Dedup members of a transaction, findable by blocking key for as long as it lasts:
/// those written early (before a delete or merge) as much as those still queued, since
/// an in-memory blocking index only takes in members once they are committed.
#[derive(Default)]
struct PendingMembers {
    list: Vec<MatchMember>,
    by_key: matching::blocking::KeyMap<Vec<usize>>,
    /// Positions in `list` by member id: dedup asks for each candidate it finds.
    by_id: std::collections::HashMap<String, usize>,
    /// `list[..written]` is in the store already.
    written: usize,
    /// The `match_keys.seq` range their key rows took, while it is one unbroken run
    /// (SQLite's one writer numbers a transaction's rows consecutively).
    key_seqs: Option<(i64, i64)>,
    /// The range is not known (PostgreSQL, or a run that broke).
    key_seqs_broken: bool,
}

/// The blocking-key rows a committed transaction wrote, in `seq` order from `first_seq`
/// to `last_seq`: what an in-memory blocking index would read back from `match_keys`.
#[derive(Debug)]
pub struct WrittenKeys {
    pub first_seq: i64,
    pub last_seq: i64,
    /// Each member's id and keys, in the order their rows were written.
    pub members: Vec<(String, Vec<u64>)>,
}

impl WrittenKeys {
    /// `(key, member id)` per row, in `seq` order.
    pub fn rows(&self) -> impl Iterator<Item = (u64, &str)> {
        self.members
            .iter()
            .flat_map(|(id, keys)| keys.iter().map(move |key| (*key, id.as_str())))
    }
}

/// A dedup member (a record's values as the matcher compares them) and its blocking
/// keys, written with the journal. Later rows of the same transaction find it through
/// [`Journal::members`] until then.
#[derive(Debug, Clone)]
pub struct MatchMember {
    pub id: String,
    pub record_kind: &'static str,
    pub record_id: String,
    pub source_id: String,
    pub values: String,
    pub created_at: String,
    pub keys: Vec<u64>,
}

impl Store {
    /// Applies `changes` atomically: all of them with their audit rows, or none.
    pub async fn write(
        &self,
        ctx: &WriteContext,
        changes: Vec<Change>,
    ) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.begin_write().await?;
        let written = apply(&mut tx, ctx, changes).await?;
        tx.commit().await?;
        Ok(written)
    }
}

/// Applies `changes` inside the caller's transaction, audit rows included.
pub async fn apply(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    changes: Vec<Change>,
) -> Result<Vec<Written>, StoreError> {
    let mut journal = Journal::default();
    let written = apply_journaled(conn, &Arc::new(ctx.clone()), changes, &mut journal).await?;
    journal.flush(conn).await?;
    Ok(written)
}

/// Applies `changes` and keeps their audit rows in `journal`; the caller flushes the
/// journal in the same transaction (the inbox worker does so once per batch).
pub async fn apply_journaled(
    conn: &mut AnyConnection,
    ctx: &Arc<WriteContext>,
    changes: Vec<Change>,
    journal: &mut Journal,
) -> Result<Vec<Written>, StoreError> {
    let now = format_timestamp(chrono::Utc::now());
    let mut written = Vec::with_capacity(changes.len());
    for change in changes {
        // Whatever reads the store must see the inserts queued before it; an update
        // reads only its own row.
        let kind = match &change {
            Change::Insert { kind, .. }
            | Change::Update { kind, .. }
            | Change::Delete { kind, .. }
            | Change::MergeIncoming { kind, .. }
            | Change::Merge { kind, .. } => *kind,
        };
        if kind == RecordKind::Contact {
            journal.contact_accounts.clear();
        }
        if kind == RecordKind::Account && !matches!(change, Change::Insert { .. }) {
            journal.domain_accounts.clear();
        }
        let settle_first = match &change {
            Change::Insert { .. } => false,
            Change::Update { kind, id, .. } => journal.is_pending(*kind, id),
            Change::MergeIncoming { kind, into, .. } => journal.is_pending(*kind, into),
            Change::Delete { .. } | Change::Merge { .. } => true,
        };
        if settle_first {
            write_inserts(conn, &mut journal.inserts).await?;
        }
        // Deletes and merges remove or move dedup members.
        if matches!(change, Change::Delete { .. } | Change::Merge { .. }) {
            write_members(conn, &mut journal.members).await?;
        }
        let (result, audit) = match change {
            Change::Insert { kind, id, fields } => {
                let (written, audit, pending) = insert(kind, id, &fields, &now)?;
                if kind == RecordKind::Account {
                    journal.account_inserted(&written.id, &fields);
                }
                journal.inserts.push(pending);
                (written, audit)
            }
            Change::Update {
                kind,
                id,
                fields,
                expected_version,
            } => {
                update(
                    conn,
                    kind,
                    Target::id(id),
                    &fields,
                    expected_version,
                    Action::Update,
                    &now,
                )
                .await?
            }
            Change::Delete { kind, id } => delete(conn, kind, id, Action::Delete, None).await?,
            Change::MergeIncoming {
                kind,
                into,
                fields,
                read,
            } => {
                let target = Target {
                    id: into,
                    read: read.map(|current| *current),
                };
                update(conn, kind, target, &fields, None, Action::Merge, &now).await?
            }
            Change::Merge {
                kind,
                survivor,
                merged,
                fields,
            } => {
                let (kept, mut audit) = update(
                    conn,
                    kind,
                    Target::id(survivor),
                    &fields,
                    None,
                    Action::Merge,
                    &now,
                )
                .await?;
                let (gone, removed) =
                    delete(conn, kind, merged, Action::MergedInto, Some(&kept.id)).await?;
                // The merged record leaves the search index too.
                journal
                    .outbox
                    .push((kind, gone.id, Action::MergedInto, now.clone()));
                audit.extend(removed);
                (kept, audit)
            }
        };
        if !audit.is_empty() {
            journal
                .outbox
                .push((result.kind, result.id.clone(), result.action, now.clone()));
        }
        journal
            .audit
            .extend(audit.into_iter().map(|row| (ctx.clone(), now.clone(), row)));
        written.push(result);
    }
    Ok(written)
}

/// Parameters per multi-row statement: hundreds of rows per statement, well inside both
/// backends' limits (SQLite 32,766, PostgreSQL 65,535). Each statement is a round trip
/// (on SQLite a hand-off to its thread and back), and a batch's flush was a third of
/// its statements at 240.
pub(crate) const PARAMS_PER_STATEMENT: usize = 4_000;

/// Rows of `columns` parameters that fit one statement.
pub(crate) fn rows_per_statement(columns: usize) -> usize {
    (PARAMS_PER_STATEMENT / columns.max(1)).max(1)
}

/// `rows` in multi-row statements of `columns` parameters a row: as many full
/// statements as fit, then the rest in descending powers of two. SQLite compiles each
/// distinct statement text once while it stays in the connection's statement cache; a
/// rest of any length was a text of its own, compiled anew at every flush (about a
/// millisecond for thousands of parameters), where a power of two repeats from batch to
/// batch.
pub(crate) fn statement_chunks<T>(rows: &[T], columns: usize) -> impl Iterator<Item = &[T]> {
    let full = rows_per_statement(columns);
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = if rest.len() >= full {
            full
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, after) = rest.split_at(take);
        rest = after;
        Some(chunk)
    })
}

/// How a multi-row statement writes its parameters. PostgreSQL numbers them (`$1`).
/// SQLite gets anonymous `?`: sqlx finds a numbered SQLite parameter's place by asking
/// SQLite for its name, which walks the statement's list of names, so binding a
/// statement of n numbered parameters costs n² — a third of an audited change's cost
/// was binding its audit rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    Numbered,
    Anonymous,
}

impl Placeholders {
    /// The `n`th parameter (from 1) of a statement bound in order.
    pub fn nth(self, n: usize) -> String {
        match self {
            Placeholders::Numbered => format!("${n}"),
            Placeholders::Anonymous => "?".to_owned(),
        }
    }

    /// `count` parameters from the first, comma-separated: an `IN (…)` list.
    pub fn list(self, count: usize) -> String {
        (1..=count)
            .map(|n| self.nth(n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        }
    }
}

/// `($1, $2), ($3, $4)` or `(?, ?), (?, ?)`: `rows` rows of `columns` parameters, bound
/// row by row in order.
pub fn values_clause(placeholders: Placeholders, rows: usize, columns: usize) -> String {
    values_clause_with(placeholders, rows, columns, "")
}

/// As [`values_clause`], each row ending with `tail` (literal SQL such as `, 'pending'`).
pub fn values_clause_with(
    placeholders: Placeholders,
    rows: usize,
    columns: usize,
    tail: &str,
) -> String {
    let mut sql = String::with_capacity(rows * (columns * 5 + tail.len()));
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholders.nth(row * columns + column + 1));
        }
        sql.push_str(tail);
        sql.push(')');
    }
    sql
}

impl Journal {
    /// An audit row that records an event rather than a change (a sign-in, a denial).
    pub(crate) fn push_event(&mut self, ctx: &Arc<WriteContext>, row: AuditRow) {
        let now = format_timestamp(chrono::Utc::now());
        self.audit.push((ctx.clone(), now, row));
    }

    /// Whether a record is queued to be inserted (not in the store yet).
    pub fn is_pending(&self, kind: RecordKind, id: &str) -> bool {
        self.inserts
            .iter()
            .any(|row| row.kind == kind && row.id == id)
    }

    /// Writes the queued inserts now, so reads in this transaction see them.
    pub async fn settle_inserts(&mut self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        write_inserts(conn, &mut self.inserts).await
    }

    /// Queues a dedup member for the flush.
    pub fn push_member(&mut self, member: MatchMember) {
        let at = self.members.list.len();
        for key in &member.keys {
            self.members.by_key.entry(*key).or_default().push(at);
        }
        self.members.by_id.insert(member.id.clone(), at);
        self.members.list.push(member);
    }

    /// Dedup members of this transaction, in the order they were remembered.
    pub fn members(&self) -> &[MatchMember] {
        &self.members.list
    }

    /// Dedup members queued in this transaction under `key`, newest first.
    pub fn members_with_key(&self, key: u64) -> impl Iterator<Item = &MatchMember> {
        self.members
            .by_key
            .get(&key)
            .into_iter()
            .flat_map(|at| at.iter().rev())
            .map(|at| &self.members.list[*at])
    }

    /// A dedup member of this transaction, and whether it is in the store already.
    pub fn pending_member(&self, id: &str) -> Option<(&MatchMember, bool)> {
        self.members
            .by_id
            .get(id)
            .map(|&at| (&self.members.list[at], at < self.members.written))
    }

    /// A contact's account by email, when the batch's prefetch asked for it.
    pub fn contact_account(&self, email: &str) -> Option<Option<&str>> {
        self.contact_accounts
            .get(email)
            .map(|account| account.as_deref())
    }

    pub fn remember_contact_accounts(
        &mut self,
        known: impl IntoIterator<Item = (String, Option<String>)>,
    ) {
        self.contact_accounts.extend(known);
    }

    /// An account by domain, when the batch's prefetch (or an earlier row) asked for it.
    pub fn domain_account(&self, domain: &str) -> Option<Option<&DomainAccount>> {
        self.domain_accounts
            .get(domain)
            .map(|account| account.as_ref())
    }

    pub fn remember_domain_accounts(
        &mut self,
        known: impl IntoIterator<Item = (String, Option<DomainAccount>)>,
    ) {
        self.domain_accounts.extend(known);
    }

    /// A domain asked for and found empty now has this transaction's new account. One
    /// not asked for stays unknown: the store may hold another account of it.
    fn account_inserted(&mut self, id: &str, fields: &Fields) {
        let Some(domain) = fields.get("domain").and_then(Value::as_str) else {
            return;
        };
        if let Some(entry @ None) = self.domain_accounts.get_mut(domain) {
            *entry = Some(DomainAccount {
                id: id.to_owned(),
                owner_id: fields
                    .get("owner_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
    }

    /// After the commit: the key rows this transaction wrote, when their `seq` range is
    /// known (for the blocking index to take them in without reading them back), moved
    /// out of the journal — its members are done with.
    pub fn take_written_keys(&mut self) -> Option<WrittenKeys> {
        let members = &mut self.members;
        let (first_seq, last_seq) = members.key_seqs?;
        let rows: usize = members.list.iter().map(|member| member.keys.len()).sum();
        if members.written != members.list.len() || rows as i64 != last_seq - first_seq + 1 {
            return None;
        }
        let members = std::mem::take(&mut members.list)
            .into_iter()
            .map(|member| (member.id, member.keys))
            .collect();
        Some(WrittenKeys {
            first_seq,
            last_seq,
            members,
        })
    }

    pub fn blocking_caught_up(&self) -> bool {
        self.blocking_caught_up
    }

    pub fn set_blocking_caught_up(&mut self) {
        self.blocking_caught_up = true;
    }

    pub async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        write_inserts(conn, &mut self.inserts).await?;
        write_members(conn, &mut self.members).await?;
        let rows: Vec<_> = self
            .audit
            .iter()
            .map(|(ctx, at, row)| super::audit::AuditContent {
                at,
                actor: &ctx.actor,
                channel: &ctx.channel,
                action: row.action,
                record_kind: row.kind,
                record_id: &row.id,
                field: row.field.as_deref(),
                old_value: row.old.as_deref(),
                new_value: row.new.as_deref(),
                ip: ctx.request.ip.as_deref(),
                user_agent: ctx.request.user_agent.as_deref(),
                request_id: ctx.request.request_id.as_deref(),
            })
            .collect();
        super::audit::append(conn, &rows).await?;
        let placeholders = Placeholders::of(conn);
        for chunk in statement_chunks(&self.outbox, 4) {
            let sql = format!(
                "INSERT INTO outbox (record_kind, record_id, op, created_at) VALUES {}",
                values_clause(placeholders, chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for (kind, id, action, at) in chunk {
                query = query
                    .bind(kind.path())
                    .bind(id.as_str())
                    .bind(action.as_str())
                    .bind(at.as_str());
            }
            query.execute(&mut *conn).await?;
        }
        self.audit.clear();
        self.outbox.clear();
        Ok(())
    }
}

fn typed_fields(
    kind: RecordKind,
    fields: &Fields,
) -> Result<Vec<(&'static FieldDef, SqlValue)>, StoreError> {
    fields
        .iter()
        .map(|(name, value)| {
            let def = kind.field(name).ok_or_else(|| StoreError::UnknownField {
                kind,
                field: name.clone(),
            })?;
            Ok((def, SqlValue::from_json(def, value)?))
        })
        .collect()
}

fn bind_value<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    value: &SqlValue,
) -> Query<'q, Any, AnyArguments<'q>> {
    match value {
        SqlValue::Text(s) => query.bind(s.clone()),
        SqlValue::Int(i) => query.bind(*i),
        SqlValue::Null(FieldType::Integer | FieldType::Bool) => query.bind(None::<i64>),
        SqlValue::Null(_) => query.bind(None::<String>),
    }
}

/// The text an audit row keeps for a value: JSON, with secrets redacted.
fn audit_text(def: &FieldDef, value: &SqlValue) -> Option<String> {
    match value {
        SqlValue::Null(_) => None,
        _ if def.secret => Some("\"[redacted]\"".to_owned()),
        _ => Some(stored_json(def, value).to_string()),
    }
}

fn stored_json(def: &FieldDef, value: &SqlValue) -> Value {
    match value {
        SqlValue::Null(_) => Value::Null,
        SqlValue::Text(s) => stored_to_json(def.ty, Some(s.clone()), None),
        SqlValue::Int(i) => stored_to_json(def.ty, None, Some(*i)),
    }
}

fn snapshot(values: &[(&'static FieldDef, SqlValue)]) -> Option<String> {
    let object: Map<String, Value> = values
        .iter()
        .filter(|(_, value)| !matches!(value, SqlValue::Null(_)))
        .map(|(def, value)| {
            let json = if def.secret {
                Value::from("[redacted]")
            } else {
                stored_json(def, value)
            };
            (def.name.to_owned(), json)
        })
        .collect();
    Some(Value::Object(object).to_string())
}

/// A row to insert, held in the journal so rows of one shape share one statement.
struct PendingInsert {
    kind: RecordKind,
    id: String,
    at: String,
    values: Vec<(&'static FieldDef, SqlValue)>,
}

fn insert(
    kind: RecordKind,
    id: Option<String>,
    fields: &Fields,
    now: &str,
) -> Result<(Written, Vec<AuditRow>, PendingInsert), StoreError> {
    let values = typed_fields(kind, fields)?;
    let id = id.unwrap_or_else(new_id);
    let audit = vec![AuditRow {
        action: Action::Insert.as_str(),
        kind: kind.path(),
        id: id.clone(),
        field: None,
        old: None,
        new: snapshot(&values),
    }];
    let written = Written {
        kind,
        id: id.clone(),
        action: Action::Insert,
        changed: values.iter().map(|(def, _)| def.name.to_owned()).collect(),
        version: 1,
    };
    let pending = PendingInsert {
        kind,
        id,
        at: now.to_owned(),
        values,
    };
    Ok((written, audit, pending))
}

/// Writes pending inserts, one multi-row statement per kind and column set.
async fn write_inserts(
    conn: &mut AnyConnection,
    pending: &mut Vec<PendingInsert>,
) -> Result<(), StoreError> {
    let mut groups: Vec<(RecordKind, Vec<&'static str>, Vec<&PendingInsert>)> = Vec::new();
    for row in pending.iter() {
        let names: Vec<&'static str> = row.values.iter().map(|(def, _)| def.name).collect();
        match groups
            .iter_mut()
            .find(|(kind, columns, _)| *kind == row.kind && *columns == names)
        {
            Some((_, _, rows)) => rows.push(row),
            None => groups.push((row.kind, names, vec![row])),
        }
    }
    let placeholders = Placeholders::of(conn);
    for (kind, names, rows) in groups {
        let width = names.len() + 3;
        for chunk in statement_chunks(&rows, width) {
            let sql = format!(
                "INSERT INTO {} (id, created_at, updated_at{}{}) VALUES {}",
                kind.table(),
                if names.is_empty() { "" } else { ", " },
                names.join(", "),
                values_clause(placeholders, chunk.len(), width)
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(row.id.as_str())
                    .bind(row.at.as_str())
                    .bind(row.at.as_str());
                for (_, value) in &row.values {
                    query = bind_value(query, value);
                }
            }
            query.execute(&mut *conn).await?;
        }
    }
    pending.clear();
    Ok(())
}

/// Writes queued dedup members and their keys, a few statements for the lot.
async fn write_members(
    conn: &mut AnyConnection,
    pending: &mut PendingMembers,
) -> Result<(), StoreError> {
    let members = &pending.list[pending.written..];
    if members.is_empty() {
        return Ok(());
    }
    let placeholders = Placeholders::of(conn);
    for chunk in statement_chunks(members, 6) {
        let sql = format!(
            "INSERT INTO match_members (id, record_kind, record_id, source_id, match_values, \
             created_at) VALUES {}",
            values_clause(placeholders, chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for member in chunk {
            query = query
                .bind(member.id.as_str())
                .bind(member.record_kind)
                .bind(member.record_id.as_str())
                .bind(member.source_id.as_str())
                .bind(member.values.as_str())
                .bind(member.created_at.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    // In arrival order, so `seq` keeps each key's members oldest to newest.
    let keys: Vec<(i64, &str)> = members
        .iter()
        .flat_map(|member| {
            member
                .keys
                .iter()
                .map(|key| (*key as i64, member.id.as_str()))
        })
        .collect();
    for chunk in statement_chunks(&keys, 2) {
        let sql = format!(
            "INSERT INTO match_keys (key, member_id) VALUES {}",
            values_clause(placeholders, chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        for (key, member) in chunk {
            query = query.bind(*key).bind(*member);
        }
        query.execute(&mut *conn).await?;
    }
    note_key_seqs(conn, pending, keys.len() as i64).await?;
    pending.written = pending.list.len();
    Ok(())
}

/// Notes the `seq` run of the `rows` key rows just inserted. On SQLite the one writer
/// numbers them consecutively and `last_insert_rowid()` is the last (sqlx's `Any` driver
/// does not pass the row id on); PostgreSQL's concurrent writers leave it unknown.
async fn note_key_seqs(
    conn: &mut AnyConnection,
    pending: &mut PendingMembers,
    rows: i64,
) -> Result<(), StoreError> {
    if rows == 0 || pending.key_seqs_broken {
        return Ok(());
    }
    if conn.backend_name() != "SQLite" {
        pending.key_seqs_broken = true;
        return Ok(());
    }
    let last: i64 = sqlx::query_scalar("SELECT last_insert_rowid()")
        .fetch_one(&mut *conn)
        .await?;
    let first = last - rows + 1;
    pending.key_seqs = match pending.key_seqs {
        None => Some((first, last)),
        Some((start, previous)) if first == previous + 1 => Some((start, last)),
        Some(_) => {
            pending.key_seqs_broken = true;
            None
        }
    };
    Ok(())
}

/// Reads the named columns of one record as the store holds them.
async fn load(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: &str,
    defs: &[&'static FieldDef],
) -> Result<(Vec<SqlValue>, i64), StoreError> {
    let mut columns = String::from("version");
    for def in defs {
        columns.push_str(", ");
        columns.push_str(def.name);
    }
    let sql = format!("SELECT {columns} FROM {} WHERE id = $1", kind.table());
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind,
            id: id.to_owned(),
        })?;
    let version: i64 = row.try_get(0)?;
    let mut values = Vec::with_capacity(defs.len());
    for (n, def) in defs.iter().enumerate() {
        let value = match def.ty {
            FieldType::Integer | FieldType::Bool => row
                .try_get::<Option<i64>, _>(n + 1)?
                .map_or(SqlValue::Null(def.ty), SqlValue::Int),
            _ => row
                .try_get::<Option<String>, _>(n + 1)?
                .map_or(SqlValue::Null(def.ty), SqlValue::Text),
        };
        values.push(value);
    }
    Ok((values, version))
}

/// A record as a transaction read it: its fields as the API shows them, and the stored
/// values and version an update compares against (see [`Change::MergeIncoming`]).
#[derive(Debug, Clone)]
pub struct Current {
    pub fields: Fields,
    version: i64,
    /// One per field of the kind, in [`RecordKind::fields`] order.
    values: Vec<SqlValue>,
}

impl Current {
    fn values_of(&self, kind: RecordKind, defs: &[&'static FieldDef]) -> Vec<SqlValue> {
        defs.iter()
            .map(|def| {
                kind.fields()
                    .iter()
                    .position(|field| field.name == def.name)
                    .and_then(|n| self.values.get(n).cloned())
                    .unwrap_or(SqlValue::Null(def.ty))
            })
            .collect()
    }
}

/// Reads a record for a change this transaction is about to make of it.
pub async fn read_current(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: &str,
) -> Result<Current, StoreError> {
    let defs: Vec<&'static FieldDef> = kind.fields().iter().collect();
    let (values, version) = load(conn, kind, id, &defs).await?;
    let mut fields = Fields::new();
    for (def, value) in defs.iter().zip(&values) {
        // As `read::fields_in` shows a record: secrets are never handed out.
        if def.secret {
            continue;
        }
        let json = match value {
            SqlValue::Null(_) => Value::Null,
            SqlValue::Int(int) => stored_to_json(def.ty, None, Some(*int)),
            SqlValue::Text(text) => stored_to_json(def.ty, Some(text.clone()), None),
        };
        fields.insert(def.name.to_owned(), json);
    }
    Ok(Current {
        fields,
        version,
        values,
    })
}

/// The record an update changes, and, when the caller read it in this transaction,
/// what it read.
struct Target {
    id: String,
    read: Option<Current>,
}

impl Target {
    fn id(id: String) -> Self {
        Self { id, read: None }
    }
}

async fn update(
    conn: &mut AnyConnection,
    kind: RecordKind,
    target: Target,
    fields: &Fields,
    expected_version: Option<i64>,
    action: Action,
    now: &str,
) -> Result<(Written, Vec<AuditRow>), StoreError> {
    let Target { id, mut read } = target;
    let values = typed_fields(kind, fields)?;
    let defs: Vec<_> = values.iter().map(|(def, _)| *def).collect();
    loop {
        let (old_values, version) = match &read {
            Some(current) => (current.values_of(kind, &defs), current.version),
            None => load(conn, kind, &id, &defs).await?,
        };
        if let Some(expected) = expected_version.filter(|expected| *expected != version) {
            return Err(StoreError::VersionConflict {
                kind,
                id,
                expected,
                actual: version,
            });
        }
        let changes: Vec<_> = values
            .iter()
            .zip(&old_values)
            .filter(|((_, new), old)| new != *old)
            .map(|((def, new), old)| (*def, old, new))
            .collect();
        if changes.is_empty() {
            // Nothing to change by what was read: whether that still stands, the store
            // says (one read, as without it).
            if read.take().is_some() {
                continue;
            }
            let written = Written {
                kind,
                id,
                action,
                changed: Vec::new(),
                version,
            };
            return Ok((written, Vec::new()));
        }
        let mut assignments = String::from("updated_at = $1, version = version + 1");
        for (n, (def, _, _)) in changes.iter().enumerate() {
            assignments.push_str(&format!(", {} = ${}", def.name, n + 3));
        }
        let mut sql = format!("UPDATE {} SET {assignments} WHERE id = $2", kind.table());
        if read.is_some() {
            // What was read is what is stored only while the version has not moved.
            sql.push_str(&format!(" AND version = ${}", changes.len() + 3));
        }
        let mut query = sqlx::query(&sql).bind(now).bind(&id);
        for (_, _, value) in &changes {
            query = bind_value(query, value);
        }
        if read.is_some() {
            query = query.bind(version);
        }
        let done = query.execute(&mut *conn).await?;
        if read.is_some() && done.rows_affected() == 0 {
            // Changed (or removed) since it was read: compare against what is stored.
            read = None;
            continue;
        }
        let audit = changes
            .iter()
            .map(|(def, old, new)| AuditRow {
                action: action.as_str(),
                kind: kind.path(),
                id: id.clone(),
                field: Some(def.name.to_owned()),
                old: audit_text(def, old),
                new: audit_text(def, new),
            })
            .collect();
        let changed = changes
            .iter()
            .map(|(def, _, _)| def.name.to_owned())
            .collect();
        return Ok((
            Written {
                kind,
                id,
                action,
                changed,
                version: version + 1,
            },
            audit,
        ));
    }
}

async fn delete(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: String,
    action: Action,
    merged_into: Option<&str>,
) -> Result<(Written, Vec<AuditRow>), StoreError> {
    let defs: Vec<_> = kind.fields().iter().collect();
    let (old_values, version) = load(conn, kind, &id, &defs).await?;
    let sql = format!("DELETE FROM {} WHERE id = $1", kind.table());
    sqlx::query(&sql).bind(&id).execute(&mut *conn).await?;
    if action == Action::Delete {
        // A deleted record is no dedup candidate any more (a merged one's members move to
        // the survivor instead, in the merge). Its blocking keys stay: candidate lookups
        // join keys to members, so keys without a member match nothing, and an index on
        // member_id would cost every pipeline insert.
        sqlx::query("DELETE FROM match_members WHERE record_kind = $1 AND record_id = $2")
            .bind(kind.path())
            .bind(&id)
            .execute(&mut *conn)
            .await?;
    }
    let old: Vec<_> = defs.iter().copied().zip(old_values).collect();
    let audit = vec![AuditRow {
        action: action.as_str(),
        kind: kind.path(),
        id: id.clone(),
        field: None,
        old: snapshot(&old),
        new: merged_into.map(|survivor| Value::from(survivor).to_string()),
    }];
    Ok((
        Written {
            kind,
            id,
            action,
            changed: Vec::new(),
            version,
        },
        audit,
    ))
}

/// Time-ordered ids keep inserts at the end of the primary-key index.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn member(id: &str, keys: &[u64]) -> MatchMember {
        MatchMember {
            id: id.to_owned(),
            record_kind: "leads",
            record_id: format!("lead-{id}"),
            source_id: format!("source-{id}"),
            values: "{}".to_owned(),
            created_at: "2026-11-25T00:00:00.000000Z".to_owned(),
            keys: keys.to_vec(),
        }
    }

    /// The audit rows of `id`'s changes after its insert, as (action, field, old, new),
    /// values as the audit trail keeps them (JSON).
    async fn changes_after_insert(
        conn: &mut AnyConnection,
        id: &str,
    ) -> Vec<(String, String, Option<String>, Option<String>)> {
        sqlx::query_as(
            "SELECT action, field, old_value, new_value FROM audit_log \
             WHERE record_id = $1 AND action <> 'insert' ORDER BY seq",
        )
        .bind(id)
        .fetch_all(conn)
        .await
        .expect("audit")
    }

    #[test]
    fn rows_go_in_full_statements_then_in_powers_of_two_in_their_order() {
        let rows: Vec<usize> = (0..2013).collect();
        let sizes: Vec<usize> = statement_chunks(&rows, 4).map(<[usize]>::len).collect();
        assert_eq!(sizes, [1000, 1000, 8, 4, 1]);
        let again: Vec<usize> = statement_chunks(&rows, 4).flatten().copied().collect();
        assert_eq!(again, rows);
        assert_eq!(statement_chunks(&rows[..0], 4).count(), 0);
    }

    #[tokio::test]
    async fn a_merge_compares_against_what_was_read_unless_the_record_moved_since() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url, 1).await.expect("store");
        store.migrate().await.expect("migrate");
        let ctx = WriteContext::new("test", "test", RequestMeta::default());
        let fields = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect()
        };
        let lead = store
            .write(
                &ctx,
                vec![Change::Insert {
                    kind: RecordKind::Lead,
                    id: None,
                    fields: fields(&[("first_name", "Ada"), ("last_name", "Lovelace")]),
                }],
            )
            .await
            .expect("insert")
            .remove(0)
            .id;
        let merge = |read: Current, pairs: &[(&str, &str)]| Change::MergeIncoming {
            kind: RecordKind::Lead,
            into: lead.clone(),
            fields: fields(pairs),
            read: Some(Box::new(read)),
        };

        // Read, then merged: compared against what was read, one statement fewer.
        let mut tx = store.begin_write().await.expect("tx");
        let read = read_current(&mut tx, RecordKind::Lead, &lead)
            .await
            .expect("read");
        assert_eq!(read.fields["first_name"], "Ada");
        let written = apply(
            &mut tx,
            &ctx,
            vec![merge(read, &[("email", "ada@example.com")])],
        )
        .await
        .expect("merge");
        assert_eq!(written[0].version, 2);
        assert_eq!(
            changes_after_insert(&mut tx, &lead).await,
            [(
                "merge".to_owned(),
                "email".to_owned(),
                None,
                Some(r#""ada@example.com""#.to_owned())
            )]
        );
        tx.commit().await.expect("commit");

        // Read, then changed by someone else, then merged: what was read no longer
        // stands, so the merge compares against the record as stored. By the stale read
        // `first_name` Ada -> Ada changes nothing; as stored it goes Augusta -> Ada.
        let mut tx = store.begin_write().await.expect("tx");
        let stale = read_current(&mut tx, RecordKind::Lead, &lead)
            .await
            .expect("read");
        apply(
            &mut tx,
            &ctx,
            vec![Change::Update {
                kind: RecordKind::Lead,
                id: lead.clone(),
                fields: fields(&[("first_name", "Augusta")]),
                expected_version: None,
            }],
        )
        .await
        .expect("update");
        let written = apply(
            &mut tx,
            &ctx,
            vec![merge(stale.clone(), &[("first_name", "Ada")])],
        )
        .await
        .expect("merge");
        assert_eq!(written[0].changed, ["first_name"]);
        assert_eq!(written[0].version, 4);
        let audit = changes_after_insert(&mut tx, &lead).await;
        assert_eq!(
            audit.last().expect("a row"),
            &(
                "merge".to_owned(),
                "first_name".to_owned(),
                Some(r#""Augusta""#.to_owned()),
                Some(r#""Ada""#.to_owned())
            )
        );
        // A stale read whose merge changes nothing answers the version as stored.
        let written = apply(&mut tx, &ctx, vec![merge(stale, &[("first_name", "Ada")])])
            .await
            .expect("merge");
        assert!(written[0].changed.is_empty());
        assert_eq!(written[0].version, 4);
        tx.commit().await.expect("commit");
    }

    #[tokio::test]
    async fn the_written_keys_are_the_rows_the_flushes_wrote_in_seq_order() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url, 1).await.expect("store");
        store.migrate().await.expect("migrate");
        // Someone else's rows first, so the run does not start at 1.
        let mut tx = store.begin_write().await.expect("tx");
        let mut earlier = Journal::default();
        earlier.push_member(member("x", &[9, 10]));
        earlier.flush(&mut tx).await.expect("flush");
        tx.commit().await.expect("commit");

        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        journal.push_member(member("a", &[1, 2]));
        journal.push_member(member("b", &[3]));
        journal.flush(&mut tx).await.expect("flush");
        // A second flush in the same transaction continues the run.
        journal.push_member(member("c", &[4, 5]));
        journal.flush(&mut tx).await.expect("flush");
        let written = journal.take_written_keys().expect("a known run");
        let stored: Vec<(i64, i64, String)> =
            sqlx::query_as("SELECT seq, key, member_id FROM match_keys WHERE seq > 2 ORDER BY seq")
                .fetch_all(&mut *tx)
                .await
                .expect("rows");
        tx.commit().await.expect("commit");
        assert_eq!((written.first_seq, written.last_seq), (3, 7));
        let rows: Vec<(i64, i64, String)> = written
            .rows()
            .enumerate()
            .map(|(n, (key, id))| (written.first_seq + n as i64, key as i64, id.to_owned()))
            .collect();
        assert_eq!(rows, stored);
    }
}
