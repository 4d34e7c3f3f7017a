//! The embedded index: tantivy on disk under the data directory, used with no
//! configuration. Every searchable field is its own tantivy field, so a field the caller
//! may not read is simply left out of the query; its values are pre-analysed terms
//! (folded words, phone variants, email parts), the same analysis the query uses.
//!
//! Scores are constant per kind of match (exact > prefix > one typo > two typos, minor
//! fields weighted down), summed over the query's words, then ties go to the most recently
//! updated record. The checkpoint is the commit's payload, so documents and checkpoint
//! are durable together.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ::tantivy::collector::TopDocs;
use ::tantivy::directory::{Directory, INDEX_WRITER_LOCK, MmapDirectory};
use ::tantivy::indexer::{LogMergePolicy, NoMergePolicy};
use ::tantivy::query::{
    BooleanQuery, ConstScoreQuery, DisjunctionMaxQuery, Occur, Query, TermQuery, TermSetQuery,
};
use ::tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, Value as _,
};
use ::tantivy::{DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score};
use ::tantivy::{SegmentReader, TantivyDocument, TantivyError, Term};
use serde::{Deserialize, Serialize};

use super::analysis::{self, Compound, MIN_PHONE_DIGITS, QueryTerms, typo_budget};
use word::{FieldMatch, WordQuery};

mod word;
use super::{
    Analysis, IndexBatch, IndexStats, OutboxConsumer, SearchDoc, SearchError, SearchHit,
    SearchIndex, SearchQuery, SearchScope, indexed_kinds, searchable_fields, spec,
};
use crate::domain::RecordKind;

/// Bumped when the schema or the analysis changes: an older index is rebuilt.
const SCHEMA_VERSION: u32 = 1;
/// Candidates a name query re-ranks by closeness (at least).
const RERANK_CANDIDATES: usize = 50;
/// Indexing memory, split over the writer's threads.
const WRITER_HEAP_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    schema: u32,
    checkpoint: Option<i64>,
    /// The name this index follows the outbox under; kept with the index, so a restart
    /// resumes under it and a new or rebuilt-from-nothing directory gets a new one.
    #[serde(default)]
    consumer: Option<String>,
}

struct Fields {
    key: Field,
    kind: Field,
    owner: Field,
    status: Field,
    stage: Field,
    updated: Field,
    doc: Field,
    searchable: Vec<(&'static str, Analysis, Field)>,
}

/// The embedded index; cheap to clone (one shared index, reader and writer).
#[derive(Clone)]
pub struct TantivyIndex(Arc<Embedded>);

impl std::ops::Deref for TantivyIndex {
    type Target = Embedded;

    fn deref(&self) -> &Embedded {
        &self.0
    }
}

pub struct Embedded {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    /// Taken on the first write, so a process that only searches never holds the lock.
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
    consumer: String,
}

fn backend_error(error: impl std::fmt::Display) -> SearchError {
    SearchError::Backend(error.to_string())
}

fn build_schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_text_field("_key", STRING);
    builder.add_text_field("_kind", STRING);
    builder.add_text_field("_owner", STRING);
    builder.add_text_field("_status", STRING);
    builder.add_text_field("_stage", STRING);
    builder.add_i64_field("_updated", FAST | INDEXED);
    builder.add_text_field("_doc", STORED);
    for (name, _) in searchable_fields() {
        builder.add_text_field(name, STRING);
    }
    builder.build()
}

fn fields_of(schema: &Schema) -> Result<Fields, SearchError> {
    let field = |name: &str| schema.get_field(name).map_err(backend_error);
    let mut searchable = Vec::new();
    for (name, analysis) in searchable_fields() {
        searchable.push((name, analysis, field(name)?));
    }
    Ok(Fields {
        key: field("_key")?,
        kind: field("_kind")?,
        owner: field("_owner")?,
        status: field("_status")?,
        stage: field("_stage")?,
        updated: field("_updated")?,
        doc: field("_doc")?,
        searchable,
    })
}

fn doc_key(kind: RecordKind, id: &str) -> String {
    format!("{}:{id}", kind.path())
}

impl TantivyIndex {
    /// Opens the index in `dir`. A missing, unreadable or outdated index is replaced by an
    /// empty one (with a log line); its checkpoint is then `None`, which makes the indexer
    /// rebuild it from the store.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        if !dir.join("meta.json").exists() {
            tracing::warn!(dir = %dir.display(), "search index is missing; it will be rebuilt from the store");
            return Self::create(dir, ReloadPolicy::Manual);
        }
        match Self::open_existing(dir, ReloadPolicy::Manual) {
            Ok(index) => Ok(index),
            Err(error) => {
                // Never remove an index another process is writing.
                let directory = MmapDirectory::open(dir).map_err(backend_error)?;
                let lock = directory.acquire_lock(&INDEX_WRITER_LOCK).map_err(|_| {
                    SearchError::Locked(format!(
                        "{} is unreadable ({error}) and another process holds it",
                        dir.display()
                    ))
                })?;
                tracing::warn!(dir = %dir.display(), %error, "search index is unreadable; it will be rebuilt from the store");
                std::fs::remove_dir_all(dir).map_err(backend_error)?;
                drop(lock);
                Self::create(dir, ReloadPolicy::Manual)
            }
        }
    }

    /// Opens the index to search only: a damaged one is left alone (an error), nothing is
    /// locked (the CLI's `search`, a `gateway` process beside a `worker`).
    pub fn open_read_only(dir: &Path) -> Result<Self, SearchError> {
        if !dir.join("meta.json").exists() {
            // An empty index with no checkpoint: the writing process will build it.
            return Self::create(dir, ReloadPolicy::OnCommitWithDelay);
        }
        // Another process commits: follow its commits as they land.
        Self::open_existing(dir, ReloadPolicy::OnCommitWithDelay)
    }

    /// `Manual` for the writing process, which reloads right after each of its commits (a
    /// delayed watcher reload could land after it and bring back an older view).
    fn open_existing(dir: &Path, policy: ReloadPolicy) -> Result<Self, SearchError> {
        let index = Index::open_in_dir(dir).map_err(backend_error)?;
        if index.schema() != build_schema() {
            return Err(SearchError::Backend(
                "schema differs from this version".into(),
            ));
        }
        let payload = read_payload(&index)?;
        if payload.as_ref().is_some_and(|p| p.schema != SCHEMA_VERSION) {
            return Err(SearchError::Backend("index of another version".into()));
        }
        let opened = Self::with_index(dir, index, policy)?;
        // Opening every segment's files now finds a damaged segment before a query does.
        let searcher = opened.reader.searcher();
        for segment in searcher.segment_readers() {
            for (_, _, field) in &opened.fields.searchable {
                segment.inverted_index(*field).map_err(backend_error)?;
            }
            segment
                .fast_fields()
                .i64("_updated")
                .map_err(backend_error)?;
        }
        Ok(opened)
    }

    fn create(dir: &Path, policy: ReloadPolicy) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir).map_err(backend_error)?;
        let directory = MmapDirectory::open(dir).map_err(backend_error)?;
        let index =
            Index::create(directory, build_schema(), Default::default()).map_err(backend_error)?;
        Self::with_index(dir, index, policy)
    }

    fn with_index(dir: &Path, index: Index, policy: ReloadPolicy) -> Result<Self, SearchError> {
        let reader = index
            .reader_builder()
            .reload_policy(policy)
            .try_into()
            .map_err(backend_error)?;
        let fields = fields_of(&index.schema())?;
        let consumer = read_payload(&index)?
            .and_then(|p| p.consumer)
            .unwrap_or_else(|| format!("tantivy:{}", uuid::Uuid::now_v7()));
        Ok(Self(Arc::new(Embedded {
            dir: dir.to_path_buf(),
            index,
            reader,
            writer: Mutex::new(None),
            fields,
            consumer,
        })))
    }
}

impl Embedded {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn with_writer<T>(
        &self,
        work: impl FnOnce(&mut IndexWriter) -> Result<T, SearchError>,
    ) -> Result<T, SearchError> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| backend_error("writer lock poisoned"))?;
        if guard.is_none() {
            let threads = std::thread::available_parallelism()
                .map_or(1, usize::from)
                .clamp(1, 4);
            let writer = self
                .index
                .writer_with_num_threads(threads, WRITER_HEAP_BYTES)
                .map_err(|error| match error {
                    TantivyError::LockFailure(..) => SearchError::Locked(format!(
                        "{} (is a leadgate server running on this data directory?)",
                        self.dir.display()
                    )),
                    other => backend_error(other),
                })?;
            *guard = Some(writer);
        }
        let writer = guard
            .as_mut()
            .ok_or_else(|| backend_error("no index writer"))?;
        work(writer)
    }

    fn commit(&self, writer: &mut IndexWriter, checkpoint: Option<i64>) -> Result<(), SearchError> {
        let payload = serde_json::to_string(&Payload {
            schema: SCHEMA_VERSION,
            checkpoint,
            consumer: Some(self.consumer.clone()),
        })
        .map_err(backend_error)?;
        let mut prepared = writer.prepare_commit().map_err(backend_error)?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(backend_error)?;
        self.reader.reload().map_err(backend_error)?;
        Ok(())
    }

    fn document(&self, doc: &SearchDoc) -> Result<TantivyDocument, SearchError> {
        let f = &self.fields;
        let mut out = TantivyDocument::new();
        out.add_text(f.key, doc_key(doc.kind, &doc.id));
        out.add_text(f.kind, doc.kind.path());
        if let Some(owner) = doc.owner_id() {
            out.add_text(f.owner, owner);
        }
        if let Some(status) = doc.filter_value("status") {
            out.add_text(f.status, status);
        }
        if let Some(stage) = doc.filter_value("stage") {
            out.add_text(f.stage, stage);
        }
        out.add_i64(f.updated, doc.updated_micros());
        out.add_text(f.doc, serde_json::to_string(doc).map_err(backend_error)?);
        if let Some(spec) = spec(doc.kind) {
            for &(name, analysis) in spec.searchable {
                let Some(text) = doc.text(name) else { continue };
                let Some(field) = self.field(name) else {
                    continue;
                };
                for term in analysis::field_terms(analysis, &text) {
                    out.add_text(field, term);
                }
            }
        }
        Ok(out)
    }

    fn field(&self, name: &str) -> Option<Field> {
        self.fields
            .searchable
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, f)| *f)
    }

    fn apply_blocking(&self, batch: IndexBatch) -> Result<(), SearchError> {
        let docs = batch
            .upserts
            .iter()
            .map(|doc| self.document(doc).map(|d| (doc_key(doc.kind, &doc.id), d)))
            .collect::<Result<Vec<_>, _>>()?;
        self.with_writer(|writer| {
            for (kind, id) in &batch.deletes {
                writer.delete_term(Term::from_field_text(self.fields.key, &doc_key(*kind, id)));
            }
            for (key, doc) in docs {
                writer.delete_term(Term::from_field_text(self.fields.key, &key));
                writer.add_document(doc).map_err(backend_error)?;
            }
            let checkpoint = match batch.checkpoint {
                Some(seq) => Some(seq),
                None => read_payload(&self.index)?.and_then(|p| p.checkpoint),
            };
            self.commit(writer, checkpoint)
        })
    }

    fn search_blocking(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
    ) -> Result<Vec<SearchHit>, SearchError> {
        query.validate()?;
        let terms = QueryTerms::parse(&query.q);
        let limit = query.effective_limit();
        // Name queries fetch more candidates than they return and re-rank them by how
        // likely each is what the rep meant (see `channel_cost`); exact phone/email/code
        // lookups need not.
        let candidates = if terms.words.is_empty() {
            limit
        } else {
            (limit * 5).max(RERANK_CANDIDATES)
        };
        let searcher = self.reader.searcher();
        let mut found = Vec::new();
        // The pass that answered, so highlights mark what it matched.
        let mut answered = (true, 0);
        // Every word within its typo budget; when nothing matches, every word with one
        // typo more; then any word.
        for (all_words, extra_typo) in [(true, 0), (true, 1), (false, 0)] {
            if (extra_typo > 0 && terms.words.is_empty()) || (!all_words && terms.parts() < 2) {
                continue;
            }
            let Some(built) = self.build_query(&terms, query, scope, all_words, extra_typo) else {
                return Ok(Vec::new());
            };
            let collector =
                TopDocs::with_limit(candidates).tweak_score(move |segment: &SegmentReader| {
                    let updated = segment
                        .fast_fields()
                        .i64("_updated")
                        .ok()
                        .map(|column| column.first_or_default_col(0));
                    move |doc: DocId, score: Score| {
                        (score, updated.as_ref().map_or(0, |c| c.get_val(doc)))
                    }
                });
            found = searcher.search(&built, &collector).map_err(backend_error)?;
            if !found.is_empty() {
                answered = (all_words, extra_typo);
                break;
            }
        }
        let (all_words, extra_typo) = answered;
        let beside_others = all_words && terms.parts() > 1;
        let highlight_reach = |word: &str, analysis: Analysis| {
            // Words of a compound are matched as on their own (`compound_query`).
            let with_others = beside_others && terms.single_words().any(|w| w == word);
            reach(word, analysis, extra_typo, with_others)
        };
        let mut ranked = found
            .into_iter()
            .map(|((score, updated), address)| {
                let doc = self.stored(&searcher, address)?;
                let reading = if terms.words.is_empty() {
                    Reading::default()
                } else {
                    channel_cost(&doc, &terms, scope)
                };
                Ok((score, reading, updated, doc))
            })
            .collect::<Result<Vec<_>, SearchError>>()?;
        // The likeliest meant first; the index's score (field weights, whole emails and
        // codes) among equally likely ones, then the newest.
        ranked.sort_by(|a, b| {
            a.1.cost
                .total_cmp(&b.1.cost)
                .then(b.0.total_cmp(&a.0))
                .then(b.2.cmp(&a.2))
        });
        let mut ranked = spread_copies(ranked, |entry| &entry.1);
        ranked.truncate(limit);
        Ok(ranked
            .into_iter()
            .map(|(score, _, _, doc)| {
                let mut hit = SearchHit {
                    kind: doc.kind,
                    id: doc.id.clone(),
                    score,
                    updated_at: doc.updated_at.clone(),
                    highlights: analysis::highlights(&doc, &terms, scope, &highlight_reach),
                    fields: doc.fields,
                };
                scope.redact(&mut hit);
                hit
            })
            .collect())
    }

    fn stored(
        &self,
        searcher: &::tantivy::Searcher,
        address: DocAddress,
    ) -> Result<SearchDoc, SearchError> {
        let stored: TantivyDocument = searcher.doc(address).map_err(backend_error)?;
        let json = stored
            .get_first(self.fields.doc)
            .and_then(|v| v.as_str())
            .ok_or_else(|| backend_error("a document without its stored fields"))?;
        serde_json::from_str(json).map_err(backend_error)
    }

    /// The whole query: filters, then per group of kinds sharing hidden fields, the kinds
    /// and the words over the fields visible in them. `None` when nothing can match.
    fn build_query(
        &self,
        terms: &QueryTerms,
        query: &SearchQuery,
        scope: &SearchScope,
        all_words: bool,
        extra_typo: u8,
    ) -> Option<Box<dyn Query>> {
        let f = &self.fields;
        let filter = |field: Field, value: &str| -> (Occur, Box<dyn Query>) {
            let term = TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            );
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(term), 0.0)),
            )
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(owner) = &query.owner {
            clauses.push(filter(f.owner, owner));
        }
        if let Some(status) = &query.status {
            clauses.push(filter(f.status, &status.to_lowercase()));
        }
        if let Some(stage) = &query.stage {
            clauses.push(filter(f.stage, &stage.to_lowercase()));
        }
        if let Some(owners) = &scope.owner_ids {
            if owners.is_empty() {
                return None;
            }
            clauses.push((Occur::Must, any_of(f.owner, owners)));
        }
        let mut groups: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let every_kind = indexed_kinds().count();
        for (kinds, hidden) in scope.kind_groups(query) {
            // Only records of an indexed kind have searchable terms, so a group of every
            // indexed kind needs no kind filter.
            let kind_filter = (kinds.len() < every_kind).then(|| {
                let paths: Vec<&str> = kinds.iter().map(|k| k.path()).collect();
                any_of(f.kind, &paths)
            });
            let visible: Vec<(&'static str, Analysis, Field)> = f
                .searchable
                .iter()
                .filter(|(name, _, _)| !hidden.iter().any(|h| h == name))
                .filter(|(name, _, _)| {
                    kinds.iter().any(|k| {
                        spec(*k).is_some_and(|s| s.searchable.iter().any(|(n, _)| n == name))
                    })
                })
                .copied()
                .collect();
            let Some(text) = text_query(terms, &visible, all_words, extra_typo) else {
                continue;
            };
            let mut group = vec![(Occur::Must, text)];
            if let Some(kind_filter) = kind_filter {
                group.push((Occur::Must, kind_filter));
            }
            groups.push((Occur::Should, Box::new(BooleanQuery::new(group))));
        }
        if groups.is_empty() {
            return None;
        }
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(groups))));
        Some(Box::new(BooleanQuery::new(clauses)))
    }
}

/// Past this many values a filter is one `TermSetQuery` rather than a union of postings.
const UNION_OF_TERMS_UP_TO: usize = 64;

/// Records with any of `values` in `field`, scoring 0. A union of the values' postings,
/// which the query's words seek into: a `TermSetQuery` marks every record with any of
/// them in a bitset as large as the segment, per query — a million for the kind `leads`,
/// all of a phone lookup's 1.1 ms — and is kept for long lists of values.
fn any_of<S: AsRef<str>>(field: Field, values: &[S]) -> Box<dyn Query> {
    let terms = values
        .iter()
        .map(|value| Term::from_field_text(field, value.as_ref()));
    let filter: Box<dyn Query> = if values.len() > UNION_OF_TERMS_UP_TO {
        Box::new(TermSetQuery::new(terms))
    } else {
        let union = terms
            .map(|term| {
                let term = TermQuery::new(term, IndexRecordOption::Basic);
                (Occur::Should, Box::new(term) as Box<dyn Query>)
            })
            .collect();
        Box::new(BooleanQuery::new(union))
    };
    Box::new(ConstScoreQuery::new(filter, 0.0))
}

/// What a record makes of the query: how unlikely it is that a rep looking for it typed
/// the query ([`channel_cost`]) and, for each query word, the record's word it was read
/// as ("ramond ard" read as raymond / bard).
#[derive(Debug, Default, Clone, PartialEq)]
struct Reading {
    cost: f32,
    words: Vec<String>,
}

/// How unlikely it is that a rep looking for this record typed the query's words: for
/// each word, the cheapest [`analysis::typo_cost`] against the record's words, more for
/// a word found only in a minor field or an email. Ranks candidates by what the rep most
/// likely meant rather than by the edit count alone: "smiht" is "Smith" (a swap) before
/// "Smint" (a wrong letter), and two omitted letters before one wrong one.
fn channel_cost(doc: &SearchDoc, terms: &QueryTerms, scope: &SearchScope) -> Reading {
    // A word the record matched some other way (an id, a code) or not at all.
    const UNMATCHED: f32 = 3.0 * analysis::typo_cost::WRONG_LETTER;
    // ln 2: a title, city, description or email holds the word less often by intent.
    const MINOR_FIELD: f32 = 0.7;
    let Some(spec) = spec(doc.kind) else {
        return Reading {
            cost: UNMATCHED * terms.words.len() as f32,
            words: Vec::new(),
        };
    };
    let mut words: Vec<(String, f32)> = Vec::new();
    for &(name, analysis) in spec.searchable {
        let extra = match analysis {
            Analysis::Words => 0.0,
            Analysis::MinorWords | Analysis::Email => MINOR_FIELD,
            Analysis::Phone | Analysis::Code => continue,
        };
        if scope.is_hidden(doc.kind, name) {
            continue;
        }
        if let Some(text) = doc.text(name) {
            words.extend(analysis::words(&text).into_iter().map(|w| (w, extra)));
        }
    }
    let mut reading = Reading::default();
    for q in &terms.words {
        let (cost, word) = words
            .iter()
            .map(|(w, extra)| (analysis::typo_cost(q, w) + extra, w))
            .fold((UNMATCHED, None), |best, (cost, w)| {
                if cost < best.0 { (cost, Some(w)) } else { best }
            });
        reading.cost += cost;
        reading.words.push(word.cloned().unwrap_or_default());
    }
    reading
}

/// Among records equally likely meant (the same cost, ranked next to each other), shows
/// each reading of the query once before any second record of it: "ramond ard" with
/// equally cheap Raymond Bard, Card, Bard, Ward gives Bard, Card, Ward, then the second
/// Bard. Within the tie every record is as likely the one looked for, so this moves none
/// of them ahead of a likelier one; it only puts more different names in front of the rep.
/// `ranked` is in cost order; within a tie the order is otherwise kept.
fn spread_copies<T>(ranked: Vec<T>, reading: impl Fn(&T) -> &Reading) -> Vec<T> {
    // (the tie's number, the how-manieth of its reading the entry is within the tie)
    let mut keys = Vec::with_capacity(ranked.len());
    let mut tie = 0usize;
    let mut seen: Vec<(&[String], usize)> = Vec::new();
    for (i, entry) in ranked.iter().enumerate() {
        let this = reading(entry);
        if i > 0 && reading(&ranked[i - 1]).cost != this.cost {
            tie += 1;
            seen.clear();
        }
        let round = match seen.iter_mut().find(|(w, _)| *w == this.words.as_slice()) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((this.words.as_slice(), 0));
                0
            }
        };
        keys.push((tie, round));
    }
    let mut keyed: Vec<((usize, usize), T)> = keys.into_iter().zip(ranked).collect();
    // Stable: the index's order stays within each round.
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, entry)| entry).collect()
}

fn read_payload(index: &Index) -> Result<Option<Payload>, SearchError> {
    let metas = index.load_metas().map_err(backend_error)?;
    match metas.payload {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(backend_error),
    }
}

/// A word's typo budget in a pass that allows `extra_typo` more (never past two, never
/// for a word too short for any).
fn pass_budget(word: &str, extra_typo: u8) -> u8 {
    match typo_budget(word) {
        0 => 0,
        budget => (budget + extra_typo).min(2),
    }
}

/// Edits at which a query word matches a word of a field analysed as `analysis` in a
/// pass (`extra_typo`, and whether the word stands beside other required words): what
/// [`word_query`] asks the index for, and so what highlights mark.
fn reach(word: &str, analysis: Analysis, extra_typo: u8, with_others: bool) -> u8 {
    let budget = pass_budget(word, extra_typo);
    match analysis {
        // Alone, a three- or four-letter word two edits away from a name is most names;
        // beside the query's other words, which the record must also have, it is a
        // handful, and `channel_cost` ranks them.
        Analysis::Words if budget == 1 && with_others => 2,
        // So, a step shorter, for a two-letter word one edit away: a three-letter name
        // with a letter left out ("laura ls" for Laura Las).
        Analysis::Words if budget == 0 && with_others && word.chars().count() == 2 => 1,
        Analysis::Words | Analysis::MinorWords => budget,
        Analysis::Email if budget >= 2 => 1,
        Analysis::Email | Analysis::Code | Analysis::Phone => 0,
    }
}

/// What one query word matches in the visible fields, best kind of match counted.
fn word_query(
    word: &str,
    fields: &[(&'static str, Analysis, Field)],
    extra_typo: u8,
    with_others: bool,
) -> Option<Box<dyn Query>> {
    let budget = pass_budget(word, extra_typo);
    let length = word.chars().count();
    let numeric = word.chars().all(|c| c.is_ascii_digit());
    let mut options: Vec<FieldMatch> = Vec::new();
    for &(_, analysis, field) in fields {
        let mut option = FieldMatch::new(field);
        match analysis {
            Analysis::Words | Analysis::MinorWords => {
                let weight = if analysis == Analysis::Words {
                    1.0
                } else {
                    0.5
                };
                let edits = reach(word, analysis, extra_typo, with_others);
                option.exact = Some(4.0 * weight);
                if length >= 2 {
                    option.prefix = Some(3.0 * weight);
                }
                // Edits beyond the word's own budget count least.
                if edits >= 1 {
                    option.one_edit = Some(if budget >= 1 { 2.0 * weight } else { 0.5 });
                }
                if edits >= 2 {
                    option.two_edits = Some(if budget >= 2 { 1.0 * weight } else { 0.5 });
                }
            }
            Analysis::Email => {
                option.exact = Some(3.0);
                if length >= 3 {
                    option.prefix = Some(2.5);
                    option.redundant_after = word::EMAIL_SEPARATORS;
                }
                if reach(word, analysis, extra_typo, with_others) >= 1 {
                    option.one_edit = Some(1.5);
                }
            }
            Analysis::Code => {
                option.exact = Some(4.0);
                if length >= 3 {
                    option.prefix = Some(3.0);
                }
            }
            Analysis::Phone if numeric && length >= MIN_PHONE_DIGITS => {
                option.exact = Some(4.0);
                if length >= 6 {
                    option.prefix = Some(3.0);
                }
            }
            Analysis::Phone => continue,
        }
        options.push(option);
    }
    WordQuery::new(word, options).map(|q| Box::new(q) as Box<dyn Query>)
}

/// `text` whole (`exact`) or as the start of a longer term (`prefix`) in every field
/// `wanted`.
fn whole_or_start(
    text: &str,
    fields: &[(&'static str, Analysis, Field)],
    wanted: impl Fn(Analysis) -> bool,
    exact: Score,
    prefix: Option<Score>,
) -> Option<WordQuery> {
    let options = fields
        .iter()
        .filter(|(_, analysis, _)| wanted(*analysis))
        .map(|&(_, _, field)| FieldMatch {
            exact: Some(exact),
            prefix,
            ..FieldMatch::new(field)
        })
        .collect();
    WordQuery::new(text, options)
}

/// A phone number in any format: exact digit forms, or the start of one as it is typed.
fn phone_query(digits: &str, fields: &[(&'static str, Analysis, Field)]) -> Option<Box<dyn Query>> {
    let prefix = (digits.len() >= 6).then_some(6.0);
    let wanted = |a| matches!(a, Analysis::Phone | Analysis::Code);
    whole_or_start(digits, fields, wanted, 8.0, prefix).map(|q| Box::new(q) as Box<dyn Query>)
}

fn email_query(email: &str, fields: &[(&'static str, Analysis, Field)]) -> Option<Box<dyn Query>> {
    let prefix = (email.len() >= 3).then_some(6.0);
    let wanted = |a| a == Analysis::Email;
    whole_or_start(email, fields, wanted, 8.0, prefix).map(|q| Box::new(q) as Box<dyn Query>)
}

/// A token with inner punctuation: whole against emails and codes, or all its words.
fn compound_query(
    compound: &Compound,
    fields: &[(&'static str, Analysis, Field)],
    extra_typo: u8,
) -> Option<Box<dyn Query>> {
    let mut options: Vec<Box<dyn Query>> = Vec::new();
    let wanted = |a| matches!(a, Analysis::Email | Analysis::Code);
    if let Some(whole) = whole_or_start(&compound.raw, fields, wanted, 8.0, Some(6.0)) {
        options.push(Box::new(whole));
    }
    let words: Option<Vec<(Occur, Box<dyn Query>)>> = compound
        .words
        .iter()
        .map(|w| word_query(w, fields, extra_typo, false).map(|q| (Occur::Must, q)))
        .collect();
    if let Some(words) = words {
        options.push(Box::new(BooleanQuery::new(words)));
    }
    (!options.is_empty()).then(|| Box::new(DisjunctionMaxQuery::new(options)) as Box<dyn Query>)
}

fn text_query(
    terms: &QueryTerms,
    fields: &[(&'static str, Analysis, Field)],
    all_words: bool,
    extra_typo: u8,
) -> Option<Box<dyn Query>> {
    if let Some(digits) = &terms.phone {
        return phone_query(digits, fields);
    }
    let occur = if all_words {
        Occur::Must
    } else {
        Occur::Should
    };
    let parts = terms
        .emails
        .iter()
        .map(|email| email_query(email, fields))
        .chain(
            terms
                .compounds
                .iter()
                .map(|c| compound_query(c, fields, extra_typo)),
        )
        .chain(
            terms
                .single_words()
                .map(|word| word_query(word, fields, extra_typo, all_words && terms.parts() > 1)),
        );
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for part in parts {
        match part {
            Some(q) => clauses.push((occur, q)),
            None if all_words => return None,
            None => {}
        }
    }
    match clauses.len() {
        0 => None,
        _ => Some(Box::new(BooleanQuery::new(clauses))),
    }
}

#[async_trait::async_trait]
impl SearchIndex for TantivyIndex {
    fn backend(&self) -> &'static str {
        "tantivy"
    }

    async fn apply(&self, batch: IndexBatch) -> Result<(), SearchError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_blocking(batch))
            .await
            .map_err(backend_error)?
    }

    async fn search(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let this = self.clone();
        let (query, scope) = (query.clone(), scope.clone());
        tokio::task::spawn_blocking(move || this.search_blocking(&query, &scope))
            .await
            .map_err(backend_error)?
    }

    async fn stats(&self) -> Result<IndexStats, SearchError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // A commit writes its checkpoint to disk before this process's searcher is
            // reloaded; the writer is held across both, so waiting for it never reports a
            // checkpoint ahead of what searches see (`/readyz` lag 0 with a stale answer).
            let _writer = this
                .writer
                .lock()
                .map_err(|_| backend_error("writer lock poisoned"))?;
            let checkpoint = read_payload(&this.index)?.and_then(|p| p.checkpoint);
            Ok(IndexStats {
                backend: "tantivy".to_owned(),
                documents: this.reader.searcher().num_docs(),
                checkpoint,
            })
        })
        .await
        .map_err(backend_error)?
    }

    fn outbox_consumer(&self) -> OutboxConsumer {
        OutboxConsumer {
            name: self.consumer.clone(),
            durable: true,
        }
    }

    async fn close(&self) {
        let this = self.clone();
        let closed = tokio::task::spawn_blocking(move || {
            let writer = this.writer.lock().ok().and_then(|mut w| w.take());
            if let Some(writer) = writer
                && let Err(error) = writer.wait_merging_threads()
            {
                tracing::warn!(%error, "search index: merging segments at shutdown failed");
            }
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "search index did not close cleanly");
        }
    }

    async fn compact(&self) -> Result<(), SearchError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.0.compact())
            .await
            .map_err(backend_error)?
    }

    async fn clear(&self) -> Result<(), SearchError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.with_writer(|writer| {
                writer.delete_all_documents().map_err(backend_error)?;
                this.commit(writer, None)
            })
        })
        .await
        .map_err(backend_error)?
    }
}

impl Embedded {
    /// Documents the index holds.
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Segments the index is made of (each is searched separately).
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// Merges every segment into one, after a bulk load: a fuzzy word is looked up in
    /// each segment's term dictionary, so fewer segments answer faster.
    pub fn compact(&self) -> Result<(), SearchError> {
        // Background merges first, so none holds a segment the full merge wants.
        let running = self
            .writer
            .lock()
            .map_err(|_| backend_error("writer lock poisoned"))?
            .take();
        if let Some(writer) = running {
            writer.wait_merging_threads().map_err(backend_error)?;
        }
        self.with_writer(|writer| {
            writer.set_merge_policy(Box::new(NoMergePolicy));
            let ids = self.index.searchable_segment_ids().map_err(backend_error)?;
            let merged = if ids.len() > 1 {
                writer.merge(&ids).wait().map(drop).map_err(backend_error)
            } else {
                Ok(())
            };
            writer.set_merge_policy(Box::new(LogMergePolicy::default()));
            merged?;
            self.reader.reload().map_err(backend_error)
        })
    }

    /// Searches on the calling thread (benchmarks and the CLI).
    pub fn search_now(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
    ) -> Result<Vec<SearchHit>, SearchError> {
        self.search_blocking(query, scope)
    }

    /// Applies a batch on the calling thread (benchmarks and bulk rebuilds).
    pub fn apply_now(&self, batch: IndexBatch) -> Result<(), SearchError> {
        self.apply_blocking(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(id: &str) -> SearchDoc {
        let mut fields = serde_json::Map::new();
        fields.insert("first_name".into(), "Ada".into());
        SearchDoc {
            kind: RecordKind::Lead,
            id: id.to_owned(),
            updated_at: "2025-01-01T00:00:00.000000Z".into(),
            fields,
        }
    }

    #[test]
    fn a_short_word_matched_two_edits_off_is_highlighted() {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyIndex::open(&dir.path().join("search")).unwrap();
        let mut kong = lead("kong");
        kong.fields.insert("last_name".into(), "Kong".into());
        kong.fields.insert("title".into(), "Kong expert".into());
        index
            .apply_blocking(IndexBatch {
                upserts: vec![kong],
                deletes: vec![],
                checkpoint: None,
            })
            .unwrap();
        let all = SearchScope::everything();
        // Beside another word, in the first pass; alone, in the one-more-typo pass.
        for q in ["ada kxnb", "kxnb"] {
            let hits = index.search_blocking(&SearchQuery::new(q), &all).unwrap();
            assert_eq!(hits.len(), 1, "{q}");
            assert_eq!(
                hits[0].highlights.get("last_name").map(String::as_str),
                Some("<mark>Kong</mark>"),
                "{q}: {:?}",
                hits[0].highlights
            );
        }
        // A title is not searched two edits off, so not marked so either.
        let hits = index
            .search_blocking(&SearchQuery::new("ada kxnb"), &all)
            .unwrap();
        assert!(
            !hits[0].highlights.contains_key("title"),
            "{:?}",
            hits[0].highlights
        );
    }

    /// The prefix walk over an email field skips the addresses and local parts that go on
    /// past a `.`, `+`, `_` or `@` (`word::EMAIL_SEPARATORS`): a record is still found by
    /// the start of its address, of any piece of its local part and of its domain.
    #[test]
    fn an_email_is_found_by_the_start_of_each_of_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyIndex::open(&dir.path().join("search")).unwrap();
        let mut docs = Vec::new();
        for (id, email) in [
            ("dot", "marigold.xu@acme-labs.io"),
            ("underscore", "quillon_vantrew12@zephyrine.com"),
            ("plus", "oberyn+crm@dornish.example"),
            ("hyphen", "kestrel-fawn@heron.example"),
        ] {
            let mut doc = lead(id);
            doc.fields.insert("email".into(), email.into());
            docs.push(doc);
        }
        index
            .apply_blocking(IndexBatch {
                upserts: docs,
                deletes: vec![],
                checkpoint: None,
            })
            .unwrap();
        let all = SearchScope::everything();
        for (q, id) in [
            ("mari", "dot"),
            ("marigold", "dot"),
            ("marigold.x", "dot"),
            ("xu", "dot"),
            ("acm", "dot"),
            ("acme-labs", "dot"),
            ("quil", "underscore"),
            ("quillon", "underscore"),
            ("vantrew", "underscore"),
            ("vantrew1", "underscore"),
            ("zephyr", "underscore"),
            ("ober", "plus"),
            ("oberyn", "plus"),
            ("oberyn+crm@dor", "plus"),
            ("dorn", "plus"),
            ("kestrel", "hyphen"),
            ("kestrel-f", "hyphen"),
            ("kes", "hyphen"),
            ("fawn", "hyphen"),
            ("hero", "hyphen"),
        ] {
            let hits = index.search_blocking(&SearchQuery::new(q), &all).unwrap();
            let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            assert_eq!(ids.first(), Some(&id), "{q}: {ids:?}");
        }
    }

    /// An index of leads `(id, first name, last name)`, in its own directory.
    fn index_of_names(names: &[(&str, &str, &str)]) -> (tempfile::TempDir, TantivyIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyIndex::open(&dir.path().join("search")).unwrap();
        let docs = names
            .iter()
            .map(|(id, first, last)| {
                let mut doc = lead(id);
                doc.fields.insert("first_name".into(), (*first).into());
                doc.fields.insert("last_name".into(), (*last).into());
                doc
            })
            .collect();
        index
            .apply_blocking(IndexBatch {
                upserts: docs,
                deletes: vec![],
                checkpoint: None,
            })
            .unwrap();
        (dir, index)
    }

    fn hits_of(index: &TantivyIndex, q: &str) -> Vec<SearchHit> {
        index
            .search_blocking(&SearchQuery::new(q), &SearchScope::everything())
            .unwrap()
    }

    fn ids_of(index: &TantivyIndex, q: &str) -> Vec<String> {
        hits_of(index, q).into_iter().map(|h| h.id).collect()
    }

    /// "epr" is "prer" with its first `r` left out and the `p` and `e` it brought together
    /// swapped: two mistakes, though three edits as optimal string alignment counts them.
    #[test]
    fn a_name_two_mistakes_off_in_any_order_is_found_and_ranked_by_them() {
        let (_dir, index) = index_of_names(&[
            ("prer", "Abigail", "Prer"),
            ("per", "Abigail", "Per"),
            ("brian", "Abigail", "Brian"),
        ]);
        // One swap ("per") is likelier than an omission and a swap ("prer").
        assert_eq!(ids_of(&index, "abigail epr"), ["per", "prer"]);
        // A swap, then an extra letter typed between the swapped ones.
        let hits = hits_of(&index, "abigail brinka");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, "brian");
        assert_eq!(
            hits[0].highlights.get("last_name").map(String::as_str),
            Some("<mark>Brian</mark>")
        );
    }

    /// A two-letter word has no typo budget of its own; beside another word the record
    /// must also have, it may be a three-letter name with a letter left out.
    #[test]
    fn a_two_letter_word_beside_another_finds_the_name_it_left_a_letter_out_of() {
        let (_dir, index) = index_of_names(&[
            ("las", "Laura", "Las"),
            ("ls", "Laura", "Ls"),
            ("lee", "Laura", "Lee"),
            ("other", "Brian", "Las"),
        ]);
        // The exact two-letter name first, then the one a letter longer; "Lee" is two
        // edits off and "Brian Las" lacks the first name.
        assert_eq!(ids_of(&index, "laura ls"), ["ls", "las"]);
        // Alone, a two-letter word stays exact (or a prefix): it would match most names.
        assert!(!ids_of(&index, "ls").contains(&"las".to_owned()));
    }

    #[test]
    fn equally_likely_readings_are_each_shown_once_before_their_copies() {
        let reading = |cost: f32, surname: &str| Reading {
            cost,
            words: vec!["raymond".into(), surname.into()],
        };
        let ranked = vec![
            ("exact", reading(0.0, "ard")),
            ("exact copy", reading(0.0, "ard")),
            ("bard 1", reading(6.0, "bard")),
            ("bard 2", reading(6.0, "bard")),
            ("card", reading(6.0, "card")),
            ("bard 3", reading(6.0, "bard")),
            ("ward", reading(6.0, "ward")),
            ("later", reading(6.26, "nard")),
        ];
        let spread: Vec<&str> = spread_copies(ranked, |(_, r)| r)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        // A cheaper reading's copies stay ahead of a dearer reading: only ties move.
        assert_eq!(
            spread,
            [
                "exact",
                "exact copy",
                "bard 1",
                "card",
                "ward",
                "bard 2",
                "bard 3",
                "later"
            ]
        );
    }

    #[test]
    fn rebuild_then_replay_keeps_every_document() {
        for round in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let index = TantivyIndex::open(&dir.path().join("search")).unwrap();
            let apply = |upserts: Vec<SearchDoc>, checkpoint| {
                index
                    .apply_blocking(IndexBatch {
                        upserts,
                        deletes: vec![],
                        checkpoint,
                    })
                    .unwrap()
            };
            index
                .with_writer(|w| {
                    w.delete_all_documents().map_err(backend_error)?;
                    index.commit(w, None)
                })
                .unwrap();
            apply(vec![lead("a"), lead("b")], None);
            apply(vec![], Some(0));
            index.0.compact().unwrap();
            apply(vec![lead("a")], Some(5));
            apply(vec![lead("b")], Some(11));
            assert_eq!(index.reader.searcher().num_docs(), 2, "round {round}");
        }
    }
}
