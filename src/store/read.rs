//! Reads of records, timelines and audit trails.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Store, StoreError};
use crate::domain::value::stored_to_json;
use crate::domain::{FieldType, RecordKind};

/// A record as answers show it: system columns plus its fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Record {
    #[schema(value_type = String)]
    pub kind: RecordKind,
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

/// One audit row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub channel: String,
    pub action: String,
    pub record_kind: String,
    pub record_id: String,
    pub field: Option<String>,
    #[schema(value_type = Object)]
    pub old_value: Value,
    #[schema(value_type = Object)]
    pub new_value: Value,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// What `Store::list` returns; fields and the sort column are checked against the kind
/// before they get here, so only their static names reach the SQL text.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filters: Vec<(&'static crate::domain::FieldDef, String)>,
    pub owners: Option<Vec<String>>,
    pub sort: &'static str,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

fn select_list(kind: RecordKind) -> String {
    let mut columns = String::from("id, created_at, updated_at, version");
    for def in kind.fields() {
        columns.push_str(", ");
        columns.push_str(def.name);
    }
    columns
}

fn decode_record(kind: RecordKind, row: &AnyRow) -> Result<Record, StoreError> {
    let mut fields = Map::new();
    for (n, def) in kind.fields().iter().enumerate() {
        if def.secret {
            continue;
        }
        let index = n + 4;
        let value = match def.ty {
            FieldType::Integer | FieldType::Bool => {
                stored_to_json(def.ty, None, row.try_get::<Option<i64>, _>(index)?)
            }
            _ => stored_to_json(def.ty, row.try_get::<Option<String>, _>(index)?, None),
        };
        fields.insert(def.name.to_owned(), value);
    }
    Ok(Record {
        kind,
        id: row.try_get(0)?,
        created_at: row.try_get(1)?,
        updated_at: row.try_get(2)?,
        version: row.try_get(3)?,
        fields,
    })
}

pub(crate) fn decode_audit(row: &AnyRow) -> Result<AuditEntry, StoreError> {
    let json = |text: Option<String>| {
        text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
            .unwrap_or(Value::Null)
    };
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        channel: row.try_get("channel")?,
        action: row.try_get("action")?,
        record_kind: row.try_get("record_kind")?,
        record_id: row.try_get("record_id")?,
        field: row.try_get("field")?,
        old_value: json(row.try_get("old_value")?),
        new_value: json(row.try_get("new_value")?),
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        request_id: row.try_get("request_id")?,
    })
}

/// A record's fields read inside a transaction (the pipeline reads what it will change).
pub async fn fields_in(
    conn: &mut sqlx::AnyConnection,
    kind: RecordKind,
    id: &str,
) -> Result<Option<Map<String, Value>>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE id = $1",
        select_list(kind),
        kind.table()
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| decode_record(kind, &row).map(|record| record.fields))
        .transpose()
}

impl Store {
    pub async fn get(&self, kind: RecordKind, id: &str) -> Result<Option<Record>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE id = $1",
            select_list(kind),
            kind.table()
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| decode_record(kind, &row)).transpose()
    }

    /// Records of a kind whose `field` equals `value` (exact lookups by indexed keys).
    pub async fn find_by(
        &self,
        kind: RecordKind,
        field: &str,
        value: &str,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError> {
        let def = kind.field(field).ok_or_else(|| StoreError::UnknownField {
            kind,
            field: field.to_owned(),
        })?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1 ORDER BY id LIMIT $2",
            select_list(kind),
            kind.table(),
            def.name
        );
        let rows = sqlx::query(&sql)
            .bind(value)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|row| decode_record(kind, row)).collect()
    }

    /// A page of records: equality filters, an owner set (the caller's reach; `None` is
    /// unrestricted), one sort column, newest-first by default.
    pub async fn list(
        &self,
        kind: RecordKind,
        query: &ListQuery,
    ) -> Result<Vec<Record>, StoreError> {
        enum Param {
            Text(String),
            Number(i64),
        }
        let mut params: Vec<Param> = Vec::new();
        let mut placeholder = |param: Param| {
            params.push(param);
            format!("${}", params.len())
        };
        let mut filter_values = Vec::with_capacity(query.filters.len());
        for (def, value) in &query.filters {
            filter_values.push(match def.ty {
                FieldType::Integer | FieldType::Bool => Param::Number(match value.as_str() {
                    "true" => 1,
                    "false" => 0,
                    other => other
                        .parse::<i64>()
                        .map_err(|_| crate::domain::InvalidValue {
                            field: def.name.to_owned(),
                            reason: "expected a number".to_owned(),
                        })?,
                }),
                _ => Param::Text(value.clone()),
            });
        }
        let direction = if query.descending { "DESC" } else { "ASC" };
        let order = format!("{} {direction}, id {direction}", query.sort);
        let filters = |placeholder: &mut dyn FnMut(Param) -> String| -> Vec<String> {
            query
                .filters
                .iter()
                .zip(&filter_values)
                .map(|((def, _), value)| {
                    let param = match value {
                        Param::Text(text) => Param::Text(text.clone()),
                        Param::Number(n) => Param::Number(*n),
                    };
                    format!("{} = {}", def.name, placeholder(param))
                })
                .collect()
        };
        let columns = select_list(kind);
        let table = kind.table();
        let sql = match &query.owners {
            Some(owners) if owners.is_empty() => return Ok(Vec::new()),
            // A few owners (a manager's team): the newest rows of each owner from the
            // (owner, sort) index, merged. One `IN` over the owners would read every row
            // they own to sort them (64 ms median for a team of 20 at a million leads).
            Some(owners) if (2..=64).contains(&owners.len()) => {
                // Only the sort key and id per owner (covered by the (owner_id, updated_at,
                // id, status) index for the default sort, with or without a status filter);
                // whole rows for the page only. Both backends merge the owners'
                // index-ordered cursors and stop once the page is full, but each needs its
                // own spelling for it. SQLite merges a compound that carries the ORDER BY
                // and LIMIT itself; arms that are limited subqueries it would sort again,
                // and an ORDER BY around the compound sorts every arm's rows (`limit` per
                // owner: 1.87 ms with a status filter for a team of 20 at a million leads,
                // against 0.6 ms merged). PostgreSQL merges limited arms (Merge Append);
                // arms without their own limit it may plan as a parallel scan of all of
                // them and a sort (36 ms for the same list).
                let keys = if query.sort == "id" {
                    "id".to_owned()
                } else {
                    format!("id, {}", query.sort)
                };
                let limited_arms = self.backend == super::Backend::Postgres;
                let wanted = query.limit + query.offset;
                let parts: Vec<String> = owners
                    .iter()
                    .enumerate()
                    .map(|(n, owner)| {
                        let mut conditions = filters(&mut placeholder);
                        conditions.push(format!(
                            "owner_id = {}",
                            placeholder(Param::Text(owner.clone()))
                        ));
                        let arm = format!(
                            "SELECT {keys} FROM {table} WHERE {}",
                            conditions.join(" AND ")
                        );
                        if limited_arms {
                            format!(
                                "SELECT * FROM ({arm} ORDER BY {order} LIMIT {}) AS owner{n}",
                                placeholder(Param::Number(wanted))
                            )
                        } else {
                            arm
                        }
                    })
                    .collect();
                format!(
                    "SELECT {columns} FROM {table} WHERE id IN (SELECT id FROM ({} \
                     ORDER BY {order} LIMIT {} OFFSET {}) AS merged) ORDER BY {order}",
                    parts.join(" UNION ALL "),
                    placeholder(Param::Number(query.limit)),
                    placeholder(Param::Number(query.offset))
                )
            }
            owners => {
                let mut conditions = filters(&mut placeholder);
                if let Some(owners) = owners {
                    let list: Vec<String> = owners
                        .iter()
                        .map(|o| placeholder(Param::Text(o.clone())))
                        .collect();
                    conditions.push(format!("owner_id IN ({})", list.join(", ")));
                }
                format!(
                    "SELECT {columns} FROM {table}{}{} ORDER BY {order} LIMIT {} OFFSET {}",
                    if conditions.is_empty() { "" } else { " WHERE " },
                    conditions.join(" AND "),
                    placeholder(Param::Number(query.limit)),
                    placeholder(Param::Number(query.offset))
                )
            }
        };
        let mut statement = sqlx::query(&sql);
        for param in params {
            statement = match param {
                Param::Text(text) => statement.bind(text),
                Param::Number(n) => statement.bind(n),
            };
        }
        let rows = statement.fetch_all(self.pool()).await?;
        rows.iter().map(|row| decode_record(kind, row)).collect()
    }

    /// Records of a kind in id order after `after` (a full scan in pages, for reindexing).
    pub async fn scan(
        &self,
        kind: RecordKind,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
            select_list(kind),
            kind.table()
        );
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|row| decode_record(kind, row)).collect()
    }

    pub async fn count(&self, kind: RecordKind) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {}", kind.table());
        Ok(sqlx::query_scalar(&sql).fetch_one(self.pool()).await?)
    }

    /// The activities on a record's timeline, newest first.
    pub async fn timeline(
        &self,
        kind: RecordKind,
        id: &str,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError> {
        let Some(column) = kind.timeline_column() else {
            return Ok(Vec::new());
        };
        let activity = RecordKind::Activity;
        let sql = format!(
            "SELECT {} FROM {} WHERE {column} = $1 ORDER BY occurred_at DESC, id DESC LIMIT $2",
            select_list(activity),
            activity.table()
        );
        let rows = sqlx::query(&sql)
            .bind(id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| decode_record(activity, row))
            .collect()
    }

    /// The audit trail of one record, oldest first.
    pub async fn audit_of(
        &self,
        kind: RecordKind,
        id: &str,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = super::audit::AuditLookup::Record.query(
            &super::audit::AUDIT_COLUMNS,
            "",
            None,
            "ORDER BY seq LIMIT $3",
        );
        let rows = sqlx::query(&sql)
            .bind(kind.path())
            .bind(id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_audit).collect()
    }
}
