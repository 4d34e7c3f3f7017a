//! Meilisearch, when one machine's embedded index is not enough (`search.meili_url`).
//!
//! Follows Meilisearch's documented API: the index is created with `doc_id` as primary
//! key and its settings (searchable attributes in order of importance, filterable
//! `kind`/`owner_id`/status/stage, `updated_at_us` as the last ranking rule for recency,
//! typo tolerance from 3 and 5 letters, none on numbers and ids) are applied at open;
//! every write is a task that is waited on and whose failure is an error; filter values
//! are quoted with `"` and `\` escaped. Kinds with different hidden fields are searched as
//! one federated multi-search, each query restricted with `attributesToSearchOn`.
//! The checkpoint lives in a second index, `{uid}_meta`, so a wiped server is a rebuilt
//! one.

use std::time::Duration;

use meilisearch_sdk::client::Client;
use meilisearch_sdk::errors::{Error as MeiliError, ErrorCode};
use meilisearch_sdk::indexes::Index;
use meilisearch_sdk::search::{
    FederationOptions, MatchingStrategies, SearchQuery as MeiliQuery, SearchResult,
};
use meilisearch_sdk::settings::{MinWordSizeForTypos, Settings, TypoToleranceSettings};
use meilisearch_sdk::task_info::TaskInfo;
use meilisearch_sdk::tasks::Task;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::analysis::{self, QueryTerms};
use super::{
    Analysis, IndexBatch, IndexStats, OutboxConsumer, SearchDoc, SearchError, SearchHit,
    SearchIndex, SearchQuery, SearchScope, searchable_fields, spec,
};
use crate::domain::RecordKind;

const PRIMARY_KEY: &str = "doc_id";
const TASK_POLL: Duration = Duration::from_millis(50);
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

pub struct MeiliIndex {
    client: Client,
    index: Index,
    meta: Index,
    /// Several worker processes may write one Meilisearch index; each follows the outbox
    /// under a name of its own, so pruning waits for the slowest.
    consumer: String,
}

fn backend_error(error: impl std::fmt::Display) -> SearchError {
    SearchError::Backend(format!("meilisearch: {error}"))
}

/// The attribute holding a phone field's digit variants.
fn digits_attribute(field: &str) -> String {
    format!("{field}__digits")
}

/// The attributes a searchable field is matched through.
fn search_attributes(name: &str, analysis: Analysis) -> Vec<String> {
    match analysis {
        Analysis::Phone => vec![digits_attribute(name)],
        _ => vec![name.to_owned()],
    }
}

/// Searchable attributes, most important first (Meilisearch's `attribute` rule).
fn ordered_searchable() -> Vec<String> {
    let rank = |analysis: Analysis| match analysis {
        Analysis::Words => 0,
        Analysis::Email | Analysis::Phone => 1,
        Analysis::Code => 2,
        Analysis::MinorWords => 3,
    };
    let mut fields = searchable_fields();
    fields.sort_by_key(|(_, analysis)| rank(*analysis));
    fields
        .into_iter()
        .flat_map(|(name, analysis)| search_attributes(name, analysis))
        .collect()
}

/// `doc_id`: kind and record id, in the characters Meilisearch allows.
fn doc_id(kind: RecordKind, id: &str) -> String {
    let clean = !id.is_empty()
        && id.len() <= 400
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if clean {
        format!("{}-{id}", kind.path())
    } else {
        format!(
            "{}-h{}",
            kind.path(),
            hex::encode(Sha256::digest(id.as_bytes()))
        )
    }
}

/// A filter value as a quoted Meilisearch string.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn any_of(attribute: &str, values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("{attribute} IN [{}]", quoted.join(", "))
}

fn document(doc: &SearchDoc) -> Value {
    let mut out = Map::new();
    out.insert(PRIMARY_KEY.into(), doc_id(doc.kind, &doc.id).into());
    out.insert("kind".into(), doc.kind.path().into());
    out.insert("id".into(), doc.id.clone().into());
    out.insert("updated_at".into(), doc.updated_at.clone().into());
    out.insert("updated_at_us".into(), doc.updated_micros().into());
    out.insert("filter_status".into(), doc.filter_value("status").into());
    out.insert("filter_stage".into(), doc.filter_value("stage").into());
    for (name, value) in &doc.fields {
        out.insert(name.clone(), value.clone());
    }
    if let Some(spec) = spec(doc.kind) {
        for &(name, analysis) in spec.searchable {
            if analysis == Analysis::Phone
                && let Some(text) = doc.text(name)
            {
                out.insert(digits_attribute(name), json!(analysis::phone_terms(&text)));
            }
        }
    }
    Value::Object(out)
}

fn hit_from(result: &Map<String, Value>) -> Option<SearchDoc> {
    let kind: RecordKind = result.get("kind")?.as_str()?.parse().ok()?;
    let spec = spec(kind)?;
    let mut fields = Map::new();
    let names = spec
        .searchable
        .iter()
        .map(|(n, _)| *n)
        .chain(spec.display.iter().copied());
    for name in names.filter(|n| *n != "id") {
        if let Some(value) = result.get(name).filter(|v| !v.is_null()) {
            fields.insert(name.to_owned(), value.clone());
        }
    }
    Some(SearchDoc {
        kind,
        id: result.get("id")?.as_str()?.to_owned(),
        updated_at: result
            .get("updated_at")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        fields,
    })
}

impl MeiliIndex {
    /// Connects, creates the index and its meta index when missing, and applies the
    /// settings (waiting for each task).
    pub async fn open(url: &str, key: &str, uid: &str) -> Result<Self, SearchError> {
        let key = (!key.is_empty()).then_some(key);
        let client = Client::new(url.trim_end_matches('/'), key).map_err(backend_error)?;
        let this = Self {
            index: client.index(uid),
            meta: client.index(format!("{uid}_meta")),
            consumer: format!("meilisearch:{uid}:{}", uuid::Uuid::now_v7()),
            client,
        };
        for index in [&this.index, &this.meta] {
            let created = this
                .client
                .create_index(&index.uid, Some(PRIMARY_KEY))
                .await
                .map_err(backend_error)?;
            match this.finish(created).await {
                Ok(()) => {}
                Err(SearchError::Backend(why)) if why.contains("index_already_exists") => {}
                Err(other) => return Err(other),
            }
        }
        let mut ranking: Vec<&str> = vec!["words", "typo", "proximity", "attribute", "exactness"];
        ranking.push("updated_at_us:desc");
        let no_typos: Vec<String> = searchable_fields()
            .into_iter()
            .filter(|(_, a)| matches!(a, Analysis::Phone | Analysis::Code))
            .flat_map(|(n, a)| search_attributes(n, a))
            .collect();
        let settings = Settings::new()
            .with_searchable_attributes(ordered_searchable())
            .with_filterable_attributes(["kind", "owner_id", "filter_status", "filter_stage"])
            .with_sortable_attributes(["updated_at_us"])
            .with_ranking_rules(ranking)
            .with_typo_tolerance(TypoToleranceSettings {
                enabled: Some(true),
                disable_on_attributes: Some(no_typos),
                disable_on_words: None,
                min_word_size_for_typos: Some(MinWordSizeForTypos {
                    one_typo: Some(3),
                    two_typos: Some(5),
                }),
                disable_on_numbers: None,
            });
        let task = this
            .index
            .set_settings(&settings)
            .await
            .map_err(backend_error)?;
        this.finish(task).await?;
        Ok(this)
    }

    /// Waits for a task and turns its failure into an error.
    async fn finish(&self, task: TaskInfo) -> Result<(), SearchError> {
        let done = task
            .wait_for_completion(&self.client, Some(TASK_POLL), Some(TASK_TIMEOUT))
            .await
            .map_err(backend_error)?;
        match done {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { .. } => {
                let error = done.unwrap_failure();
                let code = match error.error_code {
                    ErrorCode::IndexAlreadyExists => "index_already_exists".to_owned(),
                    other => format!("{other:?}"),
                };
                Err(backend_error(format!("{code}: {}", error.error_message)))
            }
            other => Err(backend_error(format!("task did not finish: {other:?}"))),
        }
    }

    fn filter(query: &SearchQuery, scope: &SearchScope, kinds: &[RecordKind]) -> Option<String> {
        let kinds: Vec<String> = kinds.iter().map(|k| k.path().to_owned()).collect();
        let mut parts = vec![any_of("kind", &kinds)];
        if let Some(owners) = &scope.owner_ids {
            if owners.is_empty() {
                return None;
            }
            parts.push(any_of("owner_id", owners));
        }
        if let Some(owner) = &query.owner {
            parts.push(format!("owner_id = {}", quote(owner)));
        }
        if let Some(status) = &query.status {
            parts.push(format!("filter_status = {}", quote(&status.to_lowercase())));
        }
        if let Some(stage) = &query.stage {
            parts.push(format!("filter_stage = {}", quote(&stage.to_lowercase())));
        }
        Some(parts.join(" AND "))
    }

    async fn search_with(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
        strategy: MatchingStrategies,
    ) -> Result<Vec<(f32, SearchDoc)>, SearchError> {
        let terms = QueryTerms::parse(&query.q);
        let text = terms.plain();
        let limit = query.effective_limit();
        // Owned first: the SDK's query builder borrows everything it is given.
        let mut plans: Vec<(String, Vec<String>)> = Vec::new();
        for (kinds, hidden) in scope.kind_groups(query) {
            let Some(filter) = Self::filter(query, scope, &kinds) else {
                return Ok(Vec::new());
            };
            let attributes: Vec<String> = searchable_fields()
                .into_iter()
                .filter(|(name, _)| !hidden.iter().any(|h| h == name))
                .filter(|(name, _)| {
                    kinds.iter().any(|k| {
                        spec(*k).is_some_and(|s| s.searchable.iter().any(|(n, _)| n == name))
                    })
                })
                .flat_map(|(name, analysis)| search_attributes(name, analysis))
                .collect();
            plans.push((filter, attributes));
        }
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let attribute_refs: Vec<Vec<&str>> = plans
            .iter()
            .map(|(_, attrs)| attrs.iter().map(String::as_str).collect())
            .collect();
        let mut queries: Vec<MeiliQuery<'_, _>> = Vec::new();
        for ((filter, _), attributes) in plans.iter().zip(&attribute_refs) {
            let mut q = MeiliQuery::new(&self.index);
            q.with_query(&text)
                .with_filter(filter)
                .with_attributes_to_search_on(attributes)
                .with_show_ranking_score(true)
                .with_matching_strategy(strategy.clone());
            queries.push(q);
        }
        let hits: Vec<SearchResult<Map<String, Value>>> = if queries.len() == 1 {
            let q = queries.remove(0);
            let mut q = q;
            q.with_limit(limit);
            q.execute::<Map<String, Value>>()
                .await
                .map_err(backend_error)?
                .hits
        } else {
            let mut multi = self.client.multi_search();
            for q in &queries {
                multi.with_search_query(q.clone());
            }
            multi
                .with_federation(FederationOptions {
                    limit: Some(limit),
                    ..Default::default()
                })
                .execute::<Map<String, Value>>()
                .await
                .map_err(backend_error)?
                .hits
        };
        Ok(hits
            .into_iter()
            .filter_map(|hit| {
                let score = hit
                    .ranking_score
                    .map(|s| s as f32)
                    .or(hit.federation.as_ref().map(|f| f.weighted_ranking_score))
                    .unwrap_or(0.0);
                hit_from(&hit.result).map(|doc| (score, doc))
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl SearchIndex for MeiliIndex {
    fn backend(&self) -> &'static str {
        "meilisearch"
    }

    async fn apply(&self, batch: IndexBatch) -> Result<(), SearchError> {
        if !batch.upserts.is_empty() {
            let docs: Vec<Value> = batch.upserts.iter().map(document).collect();
            let task = self
                .index
                .add_or_replace(&docs, Some(PRIMARY_KEY))
                .await
                .map_err(backend_error)?;
            self.finish(task).await?;
        }
        if !batch.deletes.is_empty() {
            let ids: Vec<String> = batch
                .deletes
                .iter()
                .map(|(kind, id)| doc_id(*kind, id))
                .collect();
            let task = self
                .index
                .delete_documents(&ids)
                .await
                .map_err(backend_error)?;
            self.finish(task).await?;
        }
        if let Some(seq) = batch.checkpoint {
            let task = self
                .meta
                .add_or_replace(
                    &[json!({PRIMARY_KEY: "checkpoint", "seq": seq})],
                    Some(PRIMARY_KEY),
                )
                .await
                .map_err(backend_error)?;
            self.finish(task).await?;
        }
        Ok(())
    }

    async fn search(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
    ) -> Result<Vec<SearchHit>, SearchError> {
        query.validate()?;
        let terms = QueryTerms::parse(&query.q);
        let mut found = self
            .search_with(query, scope, MatchingStrategies::ALL)
            .await?;
        if found.is_empty() && terms.parts() > 1 {
            found = self
                .search_with(query, scope, MatchingStrategies::LAST)
                .await?;
        }
        Ok(found
            .into_iter()
            .map(|(score, doc)| {
                let mut hit = SearchHit {
                    kind: doc.kind,
                    id: doc.id.clone(),
                    score,
                    updated_at: doc.updated_at.clone(),
                    highlights: analysis::highlights(&doc, &terms, scope, &analysis::budget_reach),
                    fields: doc.fields,
                };
                scope.redact(&mut hit);
                hit
            })
            .collect())
    }

    async fn stats(&self) -> Result<IndexStats, SearchError> {
        let stats = self.index.get_stats().await.map_err(backend_error)?;
        let checkpoint = match self.meta.get_document::<Value>("checkpoint").await {
            Ok(doc) => doc.get("seq").and_then(Value::as_i64),
            Err(MeiliError::Meilisearch(error))
                if error.error_code == ErrorCode::DocumentNotFound =>
            {
                None
            }
            Err(error) => return Err(backend_error(error)),
        };
        Ok(IndexStats {
            backend: "meilisearch".to_owned(),
            documents: stats.number_of_documents as u64,
            checkpoint,
        })
    }

    fn outbox_consumer(&self) -> OutboxConsumer {
        OutboxConsumer {
            name: self.consumer.clone(),
            durable: false,
        }
    }

    async fn clear(&self) -> Result<(), SearchError> {
        for index in [&self.meta, &self.index] {
            let task = index.delete_all_documents().await.map_err(backend_error)?;
            self.finish(task).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_quoted_and_escaped() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        let query = SearchQuery {
            owner: Some("u\"1".into()),
            status: Some("New".into()),
            ..SearchQuery::new("x")
        };
        let scope = SearchScope {
            owner_ids: Some(vec!["u1".into(), "u2".into()]),
            ..Default::default()
        };
        let filter = MeiliIndex::filter(&query, &scope, &[RecordKind::Lead]).unwrap();
        assert_eq!(
            filter,
            r#"kind IN ["leads"] AND owner_id IN ["u1", "u2"] AND owner_id = "u\"1" AND filter_status = "new""#
        );
    }

    #[test]
    fn document_ids_use_only_the_characters_meilisearch_allows() {
        assert_eq!(doc_id(RecordKind::Lead, "0190-ab_c"), "leads-0190-ab_c");
        let odd = doc_id(RecordKind::Lead, "a/b c");
        assert!(odd.starts_with("leads-h") && odd.len() == "leads-h".len() + 64);
    }
}
