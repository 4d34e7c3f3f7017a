//! Search: typo-tolerant lookup across records for reps.
//!
//! One [`SearchIndex`] trait, two backends that pass one contract suite: the embedded
//! tantivy index on disk (no configuration) and Meilisearch (`search.meili_url`). The
//! index is fed from the store's outbox after commit by [`indexer::Indexer`], so it never
//! holds what the store rolled back; each backend keeps its checkpoint (the last outbox
//! seq applied) beside its documents, so a lost index is a rebuilt index.

pub mod analysis;
pub mod indexer;
pub mod meili;
pub mod tantivy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::domain::RecordKind;
use crate::store::read::Record;

/// `[search]`: where the index lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Directory of the embedded index; empty means `{data_dir}/search`.
    pub dir: String,
    /// Meilisearch base URL (`LEADGATE_MEILI_URL`); empty keeps the embedded index.
    pub meili_url: String,
    /// Meilisearch API key (`LEADGATE_MEILI_KEY`); empty for a server without a master key.
    pub meili_key: String,
    /// The Meilisearch index uid; its checkpoint lives in `{uid}_meta`.
    pub meili_index: String,
    /// How often the indexer looks at the outbox, in milliseconds.
    pub poll_millis: u64,
    /// How often the indexer reports its checkpoint and prunes the outbox rows every
    /// consumer has applied, in seconds; 0 reports without pruning (an outside consumer
    /// that does not report itself in `outbox_consumers`).
    pub outbox_prune_secs: u64,
    /// A consumer not seen for this long no longer holds pruning back; when it returns
    /// it finds rows gone and rebuilds its index from the store.
    pub outbox_consumer_ttl_hours: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            dir: String::new(),
            meili_url: String::new(),
            meili_key: String::new(),
            meili_index: "leadgate".to_owned(),
            poll_millis: 200,
            outbox_prune_secs: 30,
            outbox_consumer_ttl_hours: 168,
        }
    }
}

impl SearchConfig {
    pub fn index_dir(&self, data_dir: &Path) -> PathBuf {
        if self.dir.is_empty() {
            data_dir.join("search")
        } else {
            PathBuf::from(&self.dir)
        }
    }
}

/// Stands in for an index that could not be opened: every call says why (a `gateway`
/// keeps accepting leads while its search answers 503).
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl SearchIndex for Unavailable {
    fn backend(&self) -> &'static str {
        "unavailable"
    }

    async fn apply(&self, _: IndexBatch) -> Result<(), SearchError> {
        Err(SearchError::Backend(self.0.clone()))
    }

    async fn search(
        &self,
        _: &SearchQuery,
        _: &SearchScope,
    ) -> Result<Vec<SearchHit>, SearchError> {
        Err(SearchError::Backend(self.0.clone()))
    }

    async fn stats(&self) -> Result<IndexStats, SearchError> {
        Err(SearchError::Backend(self.0.clone()))
    }

    async fn clear(&self) -> Result<(), SearchError> {
        Err(SearchError::Backend(self.0.clone()))
    }

    fn outbox_consumer(&self) -> OutboxConsumer {
        OutboxConsumer {
            name: "unavailable".to_owned(),
            durable: false,
        }
    }
}

/// How a process uses the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// It writes (the indexer, `reindex`): a missing or damaged embedded index is replaced.
    Write,
    /// It only searches: the embedded index is opened as it is.
    Read,
}

/// Opens the configured backend: Meilisearch when a URL is set, else the embedded index.
pub async fn open(
    config: &SearchConfig,
    data_dir: &Path,
    access: Access,
) -> Result<Arc<dyn SearchIndex>, SearchError> {
    if config.meili_url.is_empty() {
        let dir = config.index_dir(data_dir);
        let index = tokio::task::spawn_blocking(move || match access {
            Access::Write => tantivy::TantivyIndex::open(&dir),
            Access::Read => tantivy::TantivyIndex::open_read_only(&dir),
        })
        .await
        .map_err(|e| SearchError::Backend(e.to_string()))??;
        Ok(Arc::new(index))
    } else {
        let index =
            meili::MeiliIndex::open(&config.meili_url, &config.meili_key, &config.meili_index)
                .await?;
        Ok(Arc::new(index))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the query is empty")]
    EmptyQuery,
    #[error("the query is {0} bytes; at most {MAX_QUERY_BYTES} are accepted")]
    QueryTooLong(usize),
    #[error("search index: {0}")]
    Backend(String),
    #[error("search index is locked by another process: {0}")]
    Locked(String),
}

/// Longest query accepted, in bytes: a name, an email or a phone number is far shorter.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most hits one query returns.
pub const MAX_LIMIT: usize = 100;

/// How a searchable field is indexed and matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    /// Words: exact, prefix (as you type) and fuzzy (typos).
    Words,
    /// Words that matter less (title, city, description): the same, weighted down.
    MinorWords,
    /// The address, its local part and domain, and the local part's pieces.
    Email,
    /// E.164 digits, the national form and digit suffixes, so any format a rep types hits.
    Phone,
    /// Identifiers (ids, invoice numbers, domains): exact and prefix, no typos.
    Code,
}

/// What one record kind contributes to the index.
pub struct KindSpec {
    pub kind: RecordKind,
    pub searchable: &'static [(&'static str, Analysis)],
    /// Shown in hits beside the searchable fields.
    pub display: &'static [&'static str],
}

use Analysis::{Code, Email, MinorWords, Phone, Words};

const SPECS: &[KindSpec] = &[
    KindSpec {
        kind: RecordKind::Lead,
        searchable: &[
            ("first_name", Words),
            ("last_name", Words),
            ("company", Words),
            ("email", Email),
            ("phone", Phone),
            ("title", MinorWords),
            ("city", MinorWords),
            ("website", Code),
            ("id", Code),
        ],
        display: &["status", "country", "score", "owner_id"],
    },
    KindSpec {
        kind: RecordKind::Contact,
        searchable: &[
            ("first_name", Words),
            ("last_name", Words),
            ("email", Email),
            ("phone", Phone),
            ("mobile_phone", Phone),
            ("title", MinorWords),
            ("id", Code),
        ],
        display: &["country", "account_id", "owner_id"],
    },
    KindSpec {
        kind: RecordKind::Account,
        searchable: &[
            ("name", Words),
            ("domain", Code),
            ("website", Code),
            ("phone", Phone),
            ("industry", MinorWords),
            ("city", MinorWords),
            ("id", Code),
        ],
        display: &["country", "owner_id"],
    },
    KindSpec {
        kind: RecordKind::Opportunity,
        searchable: &[("name", Words), ("id", Code)],
        display: &[
            "stage",
            "amount",
            "currency",
            "close_date",
            "account_id",
            "owner_id",
        ],
    },
    KindSpec {
        kind: RecordKind::Ticket,
        searchable: &[
            ("subject", Words),
            ("description", MinorWords),
            ("id", Code),
        ],
        display: &["status", "priority", "account_id", "owner_id"],
    },
    KindSpec {
        kind: RecordKind::SalesOrder,
        searchable: &[("number", Code), ("id", Code)],
        display: &["status", "total", "currency", "account_id", "owner_id"],
    },
    KindSpec {
        kind: RecordKind::Invoice,
        searchable: &[("number", Code), ("id", Code)],
        display: &[
            "status",
            "total",
            "currency",
            "due_date",
            "account_id",
            "owner_id",
        ],
    },
    KindSpec {
        kind: RecordKind::Payment,
        // The provider's reference is what finance has in hand (a Stripe `pi_…`, a bank
        // transfer's reference).
        searchable: &[("provider_ref", Code), ("id", Code)],
        display: &[
            "status",
            "amount",
            "currency",
            "received_at",
            "account_id",
            "owner_id",
        ],
    },
    KindSpec {
        kind: RecordKind::Renewal,
        searchable: &[("contract_name", Words), ("product", Words), ("id", Code)],
        display: &[
            "status",
            "end_date",
            "value",
            "currency",
            "account_id",
            "owner_id",
        ],
    },
];

/// The kinds the index holds.
pub fn indexed_kinds() -> impl Iterator<Item = RecordKind> {
    SPECS.iter().map(|spec| spec.kind)
}

pub fn spec(kind: RecordKind) -> Option<&'static KindSpec> {
    SPECS.iter().find(|spec| spec.kind == kind)
}

/// Every searchable field name with its analysis (one analysis per name across kinds).
pub fn searchable_fields() -> Vec<(&'static str, Analysis)> {
    let mut fields: Vec<(&'static str, Analysis)> = Vec::new();
    for spec in SPECS {
        for &(name, analysis) in spec.searchable {
            if !fields.iter().any(|(n, _)| *n == name) {
                fields.push((name, analysis));
            }
        }
    }
    fields
}

/// One record as the index holds it: its displayable fields (searchable ones included).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchDoc {
    pub kind: RecordKind,
    pub id: String,
    pub updated_at: String,
    pub fields: Map<String, Value>,
}

impl SearchDoc {
    /// The document of a stored record; `None` for kinds the index does not hold.
    pub fn from_record(record: &Record) -> Option<SearchDoc> {
        let spec = spec(record.kind)?;
        let mut fields = Map::new();
        let names = spec
            .searchable
            .iter()
            .map(|(name, _)| *name)
            .chain(spec.display.iter().copied());
        for name in names {
            if name == "id" {
                continue;
            }
            if let Some(value) = record.fields.get(name).filter(|v| !v.is_null()) {
                fields.insert(name.to_owned(), value.clone());
            }
        }
        Some(SearchDoc {
            kind: record.kind,
            id: record.id.clone(),
            updated_at: record.updated_at.clone(),
            fields,
        })
    }

    /// A field's text, for indexing (`id` is the record id).
    pub fn text(&self, name: &str) -> Option<String> {
        if name == "id" {
            return Some(self.id.clone());
        }
        match self.fields.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    pub fn owner_id(&self) -> Option<&str> {
        self.fields.get("owner_id").and_then(Value::as_str)
    }

    /// The value the `status` / `stage` filters compare with (lower-cased).
    pub fn filter_value(&self, name: &str) -> Option<String> {
        self.fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    }

    /// `updated_at` as microseconds since the epoch, for recency ranking.
    pub fn updated_micros(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.updated_at)
            .map(|t| t.timestamp_micros())
            .unwrap_or(0)
    }
}

/// What a rep asked for.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub q: String,
    /// Only these kinds; `None` for every indexed kind.
    pub kinds: Option<Vec<RecordKind>>,
    pub owner: Option<String>,
    pub status: Option<String>,
    pub stage: Option<String>,
    pub limit: usize,
}

impl SearchQuery {
    pub fn new(q: impl Into<String>) -> Self {
        Self {
            q: q.into(),
            limit: 20,
            ..Default::default()
        }
    }

    /// Refuses what no backend should see: an empty or oversized query.
    pub fn validate(&self) -> Result<(), SearchError> {
        if self.q.len() > MAX_QUERY_BYTES {
            return Err(SearchError::QueryTooLong(self.q.len()));
        }
        if analysis::QueryTerms::parse(&self.q).is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        Ok(())
    }

    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, MAX_LIMIT)
    }
}

/// The caller's permissions as one filter: every backend applies all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchScope {
    /// Only these kinds may be returned; `None` is unrestricted.
    pub kinds: Option<Vec<RecordKind>>,
    /// Only records whose `owner_id` is one of these; `None` is unrestricted.
    pub owner_ids: Option<Vec<String>>,
    /// Fields the caller may not read: never matched, returned or highlighted.
    pub hidden_fields: Vec<(RecordKind, String)>,
}

impl SearchScope {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_hidden(&self, kind: RecordKind, field: &str) -> bool {
        self.hidden_fields
            .iter()
            .any(|(k, f)| *k == kind && f == field)
    }

    /// The kinds a query may return: its own filter within the scope's.
    pub fn allowed_kinds(&self, query: &SearchQuery) -> Vec<RecordKind> {
        indexed_kinds()
            .filter(|kind| query.kinds.as_ref().is_none_or(|k| k.contains(kind)))
            .filter(|kind| self.kinds.as_ref().is_none_or(|k| k.contains(kind)))
            .collect()
    }

    /// The allowed kinds grouped by the fields hidden in them, so each group is one query
    /// over the same searchable fields.
    pub fn kind_groups(&self, query: &SearchQuery) -> Vec<(Vec<RecordKind>, Vec<String>)> {
        let mut groups: Vec<(Vec<RecordKind>, Vec<String>)> = Vec::new();
        for kind in self.allowed_kinds(query) {
            let mut hidden: Vec<String> = self
                .hidden_fields
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, f)| f.clone())
                .collect();
            hidden.sort();
            hidden.dedup();
            match groups.iter_mut().find(|(_, h)| *h == hidden) {
                Some((kinds, _)) => kinds.push(kind),
                None => groups.push((vec![kind], hidden)),
            }
        }
        groups
    }

    /// Removes hidden fields (and their highlights) from a hit.
    pub fn redact(&self, hit: &mut SearchHit) {
        for (kind, field) in &self.hidden_fields {
            if *kind == hit.kind {
                hit.fields.remove(field);
                hit.highlights.remove(field);
            }
        }
    }
}

/// One record found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchHit {
    #[schema(value_type = String)]
    pub kind: RecordKind,
    pub id: String,
    /// Relevance; higher is better. Comparable within one answer only.
    pub score: f32,
    pub updated_at: String,
    /// The record's displayable fields.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Field name to its text with the matched parts in `<mark>…</mark>` (HTML-escaped).
    pub highlights: BTreeMap<String, String>,
}

/// Documents to write and remove, and the outbox seq they bring the index up to.
#[derive(Debug, Clone, Default)]
pub struct IndexBatch {
    pub upserts: Vec<SearchDoc>,
    pub deletes: Vec<(RecordKind, String)>,
    pub checkpoint: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexStats {
    pub backend: String,
    pub documents: u64,
    /// The last outbox seq applied; `None` when the index has never been built.
    pub checkpoint: Option<i64>,
}

/// The name an index follows the outbox under (`outbox_consumers`): pruning waits for
/// every consumer's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConsumer {
    pub name: String,
    /// True when the name outlives the process (the embedded index keeps it in its own
    /// files, so a restart resumes under it); false for a process writing to a shared
    /// index under a name of its own, forgotten when it stops.
    pub durable: bool,
}

/// A search backend. Writes are applied in order; `apply` stores the checkpoint together
/// with the documents where the backend allows (tantivy: the commit's payload).
#[async_trait::async_trait]
pub trait SearchIndex: Send + Sync {
    fn backend(&self) -> &'static str;

    /// Writes `batch.upserts` (replacing records of the same kind and id), removes
    /// `batch.deletes`, and records `batch.checkpoint`.
    async fn apply(&self, batch: IndexBatch) -> Result<(), SearchError>;

    /// Hits for `query`, never outside `scope`, best first (relevance, then recency).
    async fn search(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
    ) -> Result<Vec<SearchHit>, SearchError>;

    async fn stats(&self) -> Result<IndexStats, SearchError>;

    /// Removes every document and the checkpoint.
    async fn clear(&self) -> Result<(), SearchError>;

    /// Who this index is among the outbox's followers.
    fn outbox_consumer(&self) -> OutboxConsumer;

    /// Tidies the index after a bulk load (the embedded index merges its segments).
    async fn compact(&self) -> Result<(), SearchError> {
        Ok(())
    }

    /// Releases what the backend holds (the embedded index's writer lock) at shutdown.
    async fn close(&self) {}

    async fn upsert(&self, docs: Vec<SearchDoc>) -> Result<(), SearchError> {
        self.apply(IndexBatch {
            upserts: docs,
            ..Default::default()
        })
        .await
    }

    async fn delete(&self, keys: Vec<(RecordKind, String)>) -> Result<(), SearchError> {
        self.apply(IndexBatch {
            deletes: keys,
            ..Default::default()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_searchable_field_exists_on_its_kind_and_has_one_analysis() {
        for spec in SPECS {
            for (name, analysis) in spec.searchable {
                assert!(
                    *name == "id" || spec.kind.field(name).is_some(),
                    "{}.{name}",
                    spec.kind
                );
                let others = SPECS
                    .iter()
                    .flat_map(|s| s.searchable.iter())
                    .filter(|(n, _)| n == name);
                for (_, other) in others {
                    assert_eq!(other, analysis, "{name} is analysed two ways");
                }
            }
            for name in spec.display {
                assert!(spec.kind.field(name).is_some(), "{}.{name}", spec.kind);
            }
        }
    }

    #[test]
    fn scope_groups_kinds_by_their_hidden_fields() {
        let scope = SearchScope {
            kinds: Some(vec![
                RecordKind::Lead,
                RecordKind::Contact,
                RecordKind::Account,
            ]),
            owner_ids: None,
            hidden_fields: vec![(RecordKind::Contact, "mobile_phone".into())],
        };
        let query = SearchQuery::new("x");
        let groups = scope.kind_groups(&query);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, vec![RecordKind::Lead, RecordKind::Account]);
        assert_eq!(groups[1].1, vec!["mobile_phone".to_owned()]);
    }
}
