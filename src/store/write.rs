//! The one write path. Every insert, update, merge and delete of a record table goes
//! through [`apply`], which writes the change, its audit rows and an outbox row for the
//! search index in the caller's transaction. No other module writes record tables.

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

struct AuditRow {
    action: Action,
    kind: RecordKind,
    id: String,
    field: Option<String>,
    old: Option<String>,
    new: Option<String>,
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

/// Applies `changes` inside the caller's transaction (the inbox worker commits them
/// together with the inbox row they came from).
pub async fn apply(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    changes: Vec<Change>,
) -> Result<Vec<Written>, StoreError> {
    let now = format_timestamp(chrono::Utc::now());
    let mut written = Vec::with_capacity(changes.len());
    for change in changes {
        let (result, audit) = match change {
            Change::Insert { kind, id, fields } => insert(conn, kind, id, &fields, &now).await?,
            Change::Update {
                kind,
                id,
                fields,
                expected_version,
            } => update(conn, kind, id, &fields, expected_version, Action::Update, &now).await?,
            Change::Delete { kind, id } => delete(conn, kind, id, Action::Delete, None).await?,
            Change::Merge {
                kind,
                survivor,
                merged,
                fields,
            } => {
                let (kept, mut audit) =
                    update(conn, kind, survivor, &fields, None, Action::Merge, &now).await?;
                let (_, removed) =
                    delete(conn, kind, merged, Action::MergedInto, Some(&kept.id)).await?;
                audit.extend(removed);
                (kept, audit)
            }
        };
        write_audit(conn, ctx, &audit, &now).await?;
        if !audit.is_empty() {
            sqlx::query(
                "INSERT INTO outbox (record_kind, record_id, op, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(result.kind.path())
            .bind(&result.id)
            .bind(result.action.as_str())
            .bind(&now)
            .execute(&mut *conn)
            .await?;
        }
        written.push(result);
    }
    Ok(written)
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

async fn insert(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: Option<String>,
    fields: &Fields,
    now: &str,
) -> Result<(Written, Vec<AuditRow>), StoreError> {
    let values = typed_fields(kind, fields)?;
    let id = id.unwrap_or_else(new_id);
    let mut columns = String::from("id, created_at, updated_at, version");
    let mut params = String::from("$1, $2, $3, 1");
    for (n, (def, _)) in values.iter().enumerate() {
        columns.push_str(", ");
        columns.push_str(def.name);
        params.push_str(&format!(", ${}", n + 4));
    }
    let sql = format!("INSERT INTO {} ({columns}) VALUES ({params})", kind.table());
    let mut query = sqlx::query(&sql).bind(&id).bind(now).bind(now);
    for (_, value) in &values {
        query = bind_value(query, value);
    }
    query.execute(&mut *conn).await?;
    let audit = vec![AuditRow {
        action: Action::Insert,
        kind,
        id: id.clone(),
        field: None,
        old: None,
        new: snapshot(&values),
    }];
    let changed = values.iter().map(|(def, _)| def.name.to_owned()).collect();
    Ok((
        Written {
            kind,
            id,
            action: Action::Insert,
            changed,
            version: 1,
        },
        audit,
    ))
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

async fn update(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: String,
    fields: &Fields,
    expected_version: Option<i64>,
    action: Action,
    now: &str,
) -> Result<(Written, Vec<AuditRow>), StoreError> {
    let values = typed_fields(kind, fields)?;
    let defs: Vec<_> = values.iter().map(|(def, _)| *def).collect();
    let (old_values, version) = load(conn, kind, &id, &defs).await?;
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
    if changes.is_empty() && action == Action::Update {
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
    let sql = format!("UPDATE {} SET {assignments} WHERE id = $2", kind.table());
    let mut query = sqlx::query(&sql).bind(now).bind(&id);
    for (_, _, value) in &changes {
        query = bind_value(query, value);
    }
    query.execute(&mut *conn).await?;
    let audit = changes
        .iter()
        .map(|(def, old, new)| AuditRow {
            action,
            kind,
            id: id.clone(),
            field: Some(def.name.to_owned()),
            old: audit_text(def, old),
            new: audit_text(def, new),
        })
        .collect();
    let changed = changes.iter().map(|(def, _, _)| def.name.to_owned()).collect();
    Ok((
        Written {
            kind,
            id,
            action,
            changed,
            version: version + 1,
        },
        audit,
    ))
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
    let old: Vec<_> = defs.iter().copied().zip(old_values).collect();
    let audit = vec![AuditRow {
        action,
        kind,
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

async fn write_audit(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    rows: &[AuditRow],
    now: &str,
) -> Result<(), StoreError> {
    const COLUMNS: usize = 12;
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO audit_log (at, actor, channel, action, record_kind, record_id, field, \
         old_value, new_value, ip, user_agent, request_id) VALUES ",
    );
    for n in 0..rows.len() {
        if n > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=COLUMNS)
            .map(|c| format!("${}", n * COLUMNS + c))
            .collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(now)
            .bind(&ctx.actor)
            .bind(&ctx.channel)
            .bind(row.action.as_str())
            .bind(row.kind.path())
            .bind(&row.id)
            .bind(&row.field)
            .bind(&row.old)
            .bind(&row.new)
            .bind(&ctx.request.ip)
            .bind(&ctx.request.user_agent)
            .bind(&ctx.request.request_id);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Time-ordered ids keep inserts at the end of the primary-key index.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
