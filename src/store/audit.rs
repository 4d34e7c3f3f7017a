//! The audit trail as a hash chain: every row's hash covers its own content and the hash
//! of the row before it (by `seq`), so a changed, removed or reordered row breaks the
//! chain at the first row after it. Appending, reads and the verifier.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::read::{AuditEntry, decode_audit};
use super::write::{
    AuditRow, Journal, Placeholders, WriteContext, statement_chunks, values_clause,
};
use super::{Store, StoreError};

/// The link of the first row: there is nothing before it.
pub const GENESIS: [u8; 32] = [0; 32];

/// Any fixed number: PostgreSQL writers take this transaction lock before they read the
/// chain's head, so two transactions never link to the same row. SQLite writers are
/// serialised already (`BEGIN IMMEDIATE` behind one mutex).
const CHAIN_LOCK: i64 = 0x006c_6761_7564_6974;

/// What a row's hash covers: everything the row says, in a fixed order.
#[derive(Serialize)]
pub struct AuditContent<'a> {
    pub at: &'a str,
    pub actor: &'a str,
    pub channel: &'a str,
    pub action: &'a str,
    pub record_kind: &'a str,
    pub record_id: &'a str,
    pub field: Option<&'a str>,
    pub old_value: Option<&'a str>,
    pub new_value: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

impl AuditContent<'_> {
    /// SHA-256 over the previous row's hash in lowercase hex and the row as a JSON array
    /// (unambiguous: no separator can be forged inside a value). Hashes are stored as
    /// bytes; the hex in the input is what chains written as hex text were hashed over.
    pub fn hash(&self, prev_hash: &[u8]) -> [u8; 32] {
        let values = [
            Some(self.at),
            Some(self.actor),
            Some(self.channel),
            Some(self.action),
            Some(self.record_kind),
            Some(self.record_id),
            self.field,
            self.old_value,
            self.new_value,
            self.ip,
            self.user_agent,
            self.request_id,
        ];
        // Streamed into the hasher: no hex string or JSON text allocated per row.
        let mut hasher = Sha256::new();
        let mut link = [0u8; 64];
        match hex::encode_to_slice(prev_hash, &mut link) {
            Ok(()) => hasher.update(link),
            // A stored hash that is not 32 bytes (an edited row) is linked as it was.
            Err(_) => hasher.update(hex::encode(prev_hash).as_bytes()),
        }
        // Strings into a hasher: neither the serialisation nor the writes can fail.
        let _ = serde_json::to_writer(&mut hasher, &values);
        hasher.finalize().into()
    }
}

/// The columns [`append`] writes, in its order.
const APPEND_COLUMNS: usize = 13;

/// Appends `rows` to the chain in their order, in the caller's transaction: the chain's
/// head read under its lock, each row hashed onto the one before it, written in
/// multi-row statements. The one way rows get into `audit_log`.
pub async fn append(conn: &mut AnyConnection, rows: &[AuditContent<'_>]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut head = chain_head(conn).await?;
    let placeholders = Placeholders::of(conn);
    for chunk in statement_chunks(rows, APPEND_COLUMNS) {
        let sql = format!(
            "INSERT INTO audit_log (at, actor, channel, action, record_kind, record_id, \
             field, old_value, new_value, ip, user_agent, request_id, hash) VALUES {}",
            values_clause(placeholders, chunk.len(), APPEND_COLUMNS)
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            let hash = row.hash(&head).to_vec();
            query = query
                .bind(row.at)
                .bind(row.actor)
                .bind(row.channel)
                .bind(row.action)
                .bind(row.record_kind)
                .bind(row.record_id)
                .bind(row.field)
                .bind(row.old_value)
                .bind(row.new_value)
                .bind(row.ip)
                .bind(row.user_agent)
                .bind(row.request_id)
                .bind(hash.clone());
            head = hash;
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The hash the next row links to (the last row's, as stored), read under the chain's
/// lock.
pub async fn chain_head(conn: &mut AnyConnection) -> Result<Vec<u8>, StoreError> {
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let head: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(head.flatten().unwrap_or_else(|| GENESIS.to_vec()))
}

/// Audit rows moved into the lookups per transaction by [`Store::index_audit`]: the writer
/// waits for at most one batch.
pub const INDEX_BATCH: i64 = 1_000;

/// The ways the audit trail is looked up other than by `seq` (migration 0015): each reads
/// its table (`audit_record_index`, `audit_actor_index`) for rows up to
/// `audit_indexed.through` and the log's tail above it, so a row is found from the commit
/// that wrote it on, whether or not [`Store::index_audit`] has got to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditLookup {
    /// A record's rows: `$1` is `record_kind`, `$2` `record_id`.
    Record,
    /// Every record of a kind: `$1` is `record_kind`.
    Kind,
    /// An actor's rows: `$1` is `actor`.
    Actor,
}

impl AuditLookup {
    /// Parameters the lookup's key takes; the caller's own are numbered after them.
    pub fn key_params(self) -> usize {
        match self {
            AuditLookup::Record => 2,
            AuditLookup::Kind | AuditLookup::Actor => 1,
        }
    }

    /// The audit rows the key finds, their `seq` and `columns`, as two arms (the lookup
    /// table joined to the log, and the log's unindexed tail) and then `tail`, e.g.
    /// `ORDER BY seq LIMIT $4`. `conditions` name the log as `a`. The first arm's `seq`
    /// is the lookup table's, so SQLite sees both arms in `seq` order and merges them,
    /// stopping at a `LIMIT`, rather than sorting all of an actor's rows. `after_seq` is
    /// the number of a parameter rows must be above, applied to the lookup table's `seq`
    /// so that paging starts inside it.
    pub fn query(
        self,
        columns: &[&str],
        conditions: &str,
        after_seq: Option<usize>,
        tail: &str,
    ) -> String {
        let (table, indexed_key, log_key) = match self {
            AuditLookup::Record => (
                "audit_record_index",
                "x.record_kind = $1 AND x.record_id = $2",
                "a.record_kind = $1 AND a.record_id = $2",
            ),
            AuditLookup::Kind => (
                "audit_record_index",
                "x.record_kind = $1",
                "a.record_kind = $1",
            ),
            AuditLookup::Actor => ("audit_actor_index", "x.actor = $1", "a.actor = $1"),
        };
        let columns: String = columns.iter().map(|c| format!(", a.{c}")).collect();
        let (indexed_after, log_after) = after_seq
            .map(|n| (format!(" AND x.seq > ${n}"), format!(" AND a.seq > ${n}")))
            .unwrap_or_default();
        format!(
            "SELECT x.seq AS seq{columns} FROM {table} x JOIN audit_log a ON a.seq = x.seq \
             WHERE {indexed_key}{indexed_after}{conditions} \
             UNION ALL \
             SELECT a.seq{columns} FROM audit_log a \
             WHERE a.seq > (SELECT through FROM audit_indexed WHERE id = 1) \
             AND {log_key}{log_after}{conditions} {tail}"
        )
    }
}

/// The columns of `audit_log` besides `seq` that an [`AuditEntry`] is read from.
pub const AUDIT_COLUMNS: [&str; 12] = [
    "at",
    "actor",
    "channel",
    "action",
    "record_kind",
    "record_id",
    "field",
    "old_value",
    "new_value",
    "ip",
    "user_agent",
    "request_id",
];

/// What `leadgate audit verify` found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainReport {
    pub rows: u64,
    /// The hash of the last row, in hex: keep it elsewhere to detect a rewritten tail
    /// later.
    pub head: String,
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// Audit rows wanted by `GET /v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub record_id: Option<String>,
    pub action: Option<String>,
    /// RFC 3339 bounds on `at`, inclusive from, exclusive to.
    pub from: Option<String>,
    pub to: Option<String>,
    pub after_seq: Option<i64>,
    pub limit: i64,
}

const VERIFY_PAGE: i64 = 5_000;

impl Store {
    /// Walks the whole chain in `seq` order and names the first row that does not hold.
    /// A row's link is the stored hash of the row before it, so an edited row fails at
    /// itself, and a removed, inserted or rewritten (rehashed) row at the row after it.
    pub async fn verify_audit(&self) -> Result<ChainReport, StoreError> {
        let mut expected_prev = GENESIS.to_vec();
        let mut last_seq = 0i64;
        let mut rows = 0u64;
        loop {
            let page = sqlx::query(
                "SELECT seq, at, actor, channel, action, record_kind, record_id, field, \
                 old_value, new_value, ip, user_agent, request_id, hash \
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(last_seq)
            .bind(VERIFY_PAGE)
            .fetch_all(self.pool())
            .await?;
            let Some(last) = page.last() else { break };
            last_seq = last.try_get("seq")?;
            for row in &page {
                rows += 1;
                let seq: i64 = row.try_get("seq")?;
                let broken = |reason: &str| ChainReport {
                    rows,
                    head: hex::encode(&expected_prev),
                    broken: Some(BrokenLink {
                        seq,
                        reason: reason.to_owned(),
                    }),
                };
                let text = |name: &str| row.try_get::<Option<String>, _>(name);
                // Text written over a hash (SQLite keeps what it is given) is compared as
                // its bytes, so the row is named rather than the walk failing.
                let hash = row
                    .try_get::<Option<Vec<u8>>, _>("hash")
                    .or_else(|_| text("hash").map(|text| text.map(String::into_bytes)))?;
                let Some(hash) = hash else {
                    return Ok(broken("row has no hash"));
                };
                let (at, actor, channel, action, kind, id) = (
                    text("at")?.unwrap_or_default(),
                    text("actor")?.unwrap_or_default(),
                    text("channel")?.unwrap_or_default(),
                    text("action")?.unwrap_or_default(),
                    text("record_kind")?.unwrap_or_default(),
                    text("record_id")?.unwrap_or_default(),
                );
                let (field, old, new, ip, agent, request) = (
                    text("field")?,
                    text("old_value")?,
                    text("new_value")?,
                    text("ip")?,
                    text("user_agent")?,
                    text("request_id")?,
                );
                let content = AuditContent {
                    at: &at,
                    actor: &actor,
                    channel: &channel,
                    action: &action,
                    record_kind: &kind,
                    record_id: &id,
                    field: field.as_deref(),
                    old_value: old.as_deref(),
                    new_value: new.as_deref(),
                    ip: ip.as_deref(),
                    user_agent: agent.as_deref(),
                    request_id: request.as_deref(),
                };
                if content.hash(&expected_prev)[..] != hash[..] {
                    return Ok(broken(
                        "its hash does not match its content and the row before it (the row \
                         was edited, or a row before it was removed, inserted or rewritten)",
                    ));
                }
                expected_prev = hash;
            }
        }
        Ok(ChainReport {
            rows,
            head: hex::encode(&expected_prev),
            broken: None,
        })
    }

    /// Gives rows written before the chain existed their links, once, in `seq` order.
    pub async fn backfill_audit_chain(&self) -> Result<u64, StoreError> {
        let mut filled = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            let pending = sqlx::query(
                "SELECT seq, at, actor, channel, action, record_kind, record_id, field, \
                 old_value, new_value, ip, user_agent, request_id FROM audit_log \
                 WHERE hash IS NULL ORDER BY seq LIMIT $1",
            )
            .bind(VERIFY_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            if pending.is_empty() {
                return Ok(filled);
            }
            let first: i64 = pending[0].try_get("seq")?;
            let before: Option<Option<Vec<u8>>> = sqlx::query_scalar(
                "SELECT hash FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(first)
            .fetch_optional(&mut *tx)
            .await?;
            let mut head = before.flatten().unwrap_or_else(|| GENESIS.to_vec());
            for row in &pending {
                let text = |name: &str| row.try_get::<Option<String>, _>(name);
                let owned: Vec<Option<String>> = AUDIT_COLUMNS
                    .iter()
                    .map(|name| text(name))
                    .collect::<Result<_, _>>()?;
                let get = |n: usize| owned[n].as_deref();
                let content = AuditContent {
                    at: get(0).unwrap_or_default(),
                    actor: get(1).unwrap_or_default(),
                    channel: get(2).unwrap_or_default(),
                    action: get(3).unwrap_or_default(),
                    record_kind: get(4).unwrap_or_default(),
                    record_id: get(5).unwrap_or_default(),
                    field: get(6),
                    old_value: get(7),
                    new_value: get(8),
                    ip: get(9),
                    user_agent: get(10),
                    request_id: get(11),
                };
                let hash = content.hash(&head).to_vec();
                sqlx::query("UPDATE audit_log SET hash = $1 WHERE seq = $2")
                    .bind(hash.clone())
                    .bind(row.try_get::<i64, _>("seq")?)
                    .execute(&mut *tx)
                    .await?;
                head = hash;
                filled += 1;
            }
            tx.commit().await?;
        }
    }

    /// Brings the lookups by record and by actor up to the end of the log: the keys of
    /// rows above `audit_indexed.through`, [`INDEX_BATCH`] rows per transaction, sorted so
    /// that a batch's inserts into one page come together. The server runs it every
    /// second. It does about the work the write path no longer does (`access_bench`
    /// measures both): the cost is moved off the change's commit, not removed.
    /// Returns the rows indexed.
    pub async fn index_audit(&self) -> Result<u64, StoreError> {
        // Without the writer's turn: nothing to do is the usual answer.
        let (through, end): (i64, Option<i64>) = sqlx::query_as(
            "SELECT through, (SELECT MAX(seq) FROM audit_log) FROM audit_indexed WHERE id = 1",
        )
        .fetch_one(self.pool())
        .await?;
        if end.is_none_or(|end| end <= through) {
            return Ok(0);
        }
        let mut indexed = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            // On PostgreSQL a row's `seq` is taken under the chain's lock, held until its
            // commit: under that lock no row below the log's end can still commit, so
            // moving the mark past it loses none. SQLite's writer is this transaction.
            if tx.backend_name() == "PostgreSQL" {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CHAIN_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let through: i64 = sqlx::query_scalar("SELECT through FROM audit_indexed WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let upto: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(seq) FROM (SELECT seq FROM audit_log WHERE seq > $1 \
                 ORDER BY seq LIMIT $2) batch",
            )
            .bind(through)
            .bind(INDEX_BATCH)
            .fetch_one(&mut *tx)
            .await?;
            let Some(upto) = upto else {
                tx.commit().await?;
                return Ok(indexed);
            };
            let rows = sqlx::query(
                "INSERT INTO audit_record_index (record_kind, record_id, seq) \
                 SELECT record_kind, record_id, seq FROM audit_log WHERE seq > $1 AND seq <= $2 \
                 ORDER BY record_kind, record_id, seq",
            )
            .bind(through)
            .bind(upto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "INSERT INTO audit_actor_index (actor, seq) \
                 SELECT actor, seq FROM audit_log WHERE seq > $1 AND seq <= $2 \
                 ORDER BY actor, seq",
            )
            .bind(through)
            .bind(upto)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE audit_indexed SET through = $1 WHERE id = 1")
                .bind(upto)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            indexed += rows;
        }
    }

    /// Records an event that changes no record (a sign-in, a refused request) on the
    /// chain, in its own transaction.
    pub async fn record_event(
        &self,
        ctx: &WriteContext,
        action: &'static str,
        subject: &'static str,
        subject_id: &str,
        field: Option<&str>,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        let mut journal = Journal::default();
        journal.push_event(
            &Arc::new(ctx.clone()),
            AuditRow {
                action,
                kind: subject,
                id: subject_id.to_owned(),
                field: field.map(str::to_owned),
                old: None,
                new: detail.map(|d| serde_json::Value::String(d).to_string()),
            },
        );
        let mut tx = self.begin_write().await?;
        journal.flush(&mut tx).await?;
        tx.commit().await
    }

    /// Audit rows by actor, kind, record, action and time, oldest first, from a cursor.
    pub async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        // Only the conditions given, each bound: the actor's or the record's lookup pages
        // from the cursor through that key's rows; other filters read the log from the
        // cursor on.
        let lookup = match (&filter.actor, &filter.kind, &filter.record_id) {
            (Some(actor), _, _) => Some((AuditLookup::Actor, vec![actor.as_str()])),
            (None, Some(kind), Some(id)) => {
                Some((AuditLookup::Record, vec![kind.as_str(), id.as_str()]))
            }
            _ => None,
        };
        let mut values: Vec<&str> = Vec::new();
        if let Some((_, key)) = &lookup {
            values.extend(key);
        }
        let after_seq = values.len() + 1;
        let mut conditions = String::new();
        // The lookup's key is bound already.
        let keyed: &[&str] = match &lookup {
            Some((AuditLookup::Actor, _)) => &["a.actor ="],
            Some(_) => &["a.record_kind =", "a.record_id ="],
            None => &[],
        };
        for (condition, value) in [
            ("a.actor =", &filter.actor),
            ("a.record_kind =", &filter.kind),
            ("a.record_id =", &filter.record_id),
            ("a.action =", &filter.action),
            ("a.at >=", &filter.from),
            ("a.at <", &filter.to),
        ] {
            if let Some(value) = value.as_ref().filter(|_| !keyed.contains(&condition)) {
                values.push(value);
                conditions.push_str(&format!(" AND {condition} ${}", values.len() + 1));
            }
        }
        let limit = values.len() + 2;
        let sql = match &lookup {
            Some((lookup, _)) => lookup.query(
                &AUDIT_COLUMNS,
                &conditions,
                Some(after_seq),
                &format!("ORDER BY seq LIMIT ${limit}"),
            ),
            None => format!(
                "SELECT a.* FROM audit_log a WHERE a.seq > ${after_seq}{conditions} \
                 ORDER BY a.seq LIMIT ${limit}"
            ),
        };
        let key_len = lookup.as_ref().map_or(0, |(lookup, _)| lookup.key_params());
        let mut query = sqlx::query(&sql);
        for value in &values[..key_len] {
            query = query.bind(*value);
        }
        query = query.bind(filter.after_seq.unwrap_or(0));
        for value in &values[key_len..] {
            query = query.bind(*value);
        }
        let rows = query.bind(filter.limit).fetch_all(self.pool()).await?;
        rows.iter().map(decode_audit).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content<'a>(actor: &'a str, new_value: Option<&'a str>) -> AuditContent<'a> {
        AuditContent {
            at: "2026-11-24T10:00:00.000000Z",
            actor,
            channel: "api",
            action: "update",
            record_kind: "leads",
            record_id: "l-1",
            field: Some("email"),
            old_value: None,
            new_value,
            ip: None,
            user_agent: None,
            request_id: None,
        }
    }

    #[test]
    fn hash_depends_on_every_value_and_the_link() {
        let base = content("user:a", Some("\"x\"")).hash(&GENESIS);
        assert_ne!(base, content("user:b", Some("\"x\"")).hash(&GENESIS));
        assert_ne!(base, content("user:a", Some("\"y\"")).hash(&GENESIS));
        assert_ne!(base, content("user:a", None).hash(&GENESIS));
        assert_ne!(base, content("user:a", Some("\"x\"")).hash(&base));
        assert_eq!(base, content("user:a", Some("\"x\"")).hash(&GENESIS));
    }

    #[test]
    fn hashes_are_those_of_the_chain_kept_as_hex_text() {
        // SHA-256 of the previous hash in hex and the row's JSON, as rows written before
        // hashes were stored as bytes were hashed (computed apart from this code).
        let first = content("user:a", Some("\"x\"")).hash(&GENESIS);
        assert_eq!(
            hex::encode(first),
            "7d4612e240b965bc445e7499a95ae7db06c6ba01bc26318a983990dd2cd55545"
        );
        assert_eq!(
            hex::encode(content("user:a", Some("\"x\"")).hash(&first)),
            "cb64e07249333ae98740ef902251fa0cfc683b17121d499db20f1b9c421b364b"
        );
    }

    #[test]
    fn the_streamed_hash_is_the_one_over_hex_and_json_text() {
        let mut row = content("user:\"a\"\n", Some("\"\\u00e9 ✓\""));
        row.ip = Some("10.0.0.1");
        for link in [GENESIS.to_vec(), vec![7u8; 32], b"not a hash".to_vec()] {
            let values = [
                Some(row.at),
                Some(row.actor),
                Some(row.channel),
                Some(row.action),
                Some(row.record_kind),
                Some(row.record_id),
                row.field,
                row.old_value,
                row.new_value,
                row.ip,
                row.user_agent,
                row.request_id,
            ];
            let mut text = hex::encode(&link);
            text.push_str(&serde_json::to_string(&values).expect("json"));
            let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            assert_eq!(row.hash(&link), expected);
        }
    }

    #[test]
    fn a_value_cannot_imitate_a_field_boundary() {
        let mut split = content("a", Some("b"));
        split.channel = "c";
        let mut joined = content("a\",\"c", Some("b"));
        joined.channel = "";
        assert_ne!(split.hash(&GENESIS), joined.hash(&GENESIS));
    }
}
