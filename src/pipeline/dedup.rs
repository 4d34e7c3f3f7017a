//! Dedup: candidates from the matcher's blocking keys (kept in the store, so every worker
//! and every restart sees the same memory), each compared field by field with the matcher;
//! above the merge threshold the arrival merges, between the thresholds a steward decides,
//! below it is new.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use matching::blocking::KeyMap;
use matching::{Band, MatchConfig, Matcher, Prepared, Record, blocking};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use super::Draft;
use super::blocking::MemoryIndex;
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::StoreError;
use crate::store::write::{Journal, MatchMember, Placeholders, new_id};

/// Lead fields the matcher compares, and the matcher's name for each.
const MATCH_FIELDS: &[(&str, &str)] = &[
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("email", "email"),
    ("phone", "phone"),
    ("company", "company"),
    ("street", "street"),
    ("street2", "address2"),
    ("city", "city"),
    ("postal_code", "postcode"),
    ("region", "state"),
    ("country", "country"),
    ("birth_date", "dob"),
];

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    New,
    Merge {
        into: String,
        score: f64,
    },
    Review {
        with: String,
        score: f64,
        breakdown: Value,
    },
}

/// An arriving record, prepared for matching once.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub record: Record,
    pub prepared: Arc<Prepared>,
    pub keys: Vec<u64>,
    /// Its candidates in the blocking index, found and compared ahead of its turn.
    pub ranked: Option<Ranked>,
}

/// An arrival's candidates from the in-memory blocking index, found and compared while
/// the batch before it was being written ([`Dedup::rank_ahead`]), so the comparisons
/// run on the core the store's writes leave idle. Its turn adds what the ranking could
/// not see: members of its own transaction, and members gone since.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// The index's member count once the batch before is taken in; any other count
    /// (another process's members came in between) voids the ranking.
    expects: usize,
    /// The id of the member at `expects - 1`.
    last: Option<Box<str>>,
    /// Per arrival key, the index positions its scan meets, newest first.
    scanned: Vec<Vec<u32>>,
    /// Scores at or above the review threshold, by index position, sorted.
    scores: Vec<(u32, f64)>,
}

impl Ranked {
    fn fits(&self, index: &MemoryIndex) -> bool {
        index.member_count() == self.expects
            && self.last.as_deref() == self.expects.checked_sub(1).map(|at| &*index.member(at).id)
    }
}

/// A ranking's findings for one arrival: per key the index positions its scan meets, and
/// the scores at or above the review threshold by position.
type Scans = (Vec<Vec<u32>>, Vec<(u32, f64)>);

/// The members a transaction remembered, as the next batch's ranking sees them before
/// they are committed: once committed they are the blocking index's next members, in
/// this order.
pub struct Ahead {
    /// Prepared values of the members with keys, in order.
    members: Vec<Arc<Prepared>>,
    /// Positions in `members` by key, oldest first.
    by_key: KeyMap<Vec<u32>>,
    last: Option<Box<str>>,
}

pub struct Dedup {
    matcher: Matcher,
    /// Members' prepared (normalised) values by member id. Members never change their
    /// values, so the cache needs no invalidation; it only saves re-normalising (phone
    /// parsing above all) a candidate every time it is compared.
    ///
    /// On SQLite the memory index keeps members' prepared values instead, and this map
    /// only hands those of newly remembered members to its next catch-up.
    prepared: std::sync::Mutex<HashMap<String, Arc<Prepared>>>,
    memory: tokio::sync::Mutex<MemoryIndex>,
}

/// Prepared members kept at most (about 250 bytes each); the cache starts over past this.
const PREPARED_CACHE: usize = 1_000_000;

/// Members whose values one statement loads.
const MEMBERS_PER_STATEMENT: usize = 64;

impl Dedup {
    pub fn new(config: MatchConfig) -> Result<Self, matching::ConfigError> {
        Ok(Self {
            matcher: Matcher::new(config)?,
            prepared: Default::default(),
            memory: Default::default(),
        })
    }

    /// Whether a change to `field` changes what the matcher compares.
    pub fn compares(field: &str) -> bool {
        MATCH_FIELDS.iter().any(|(name, _)| *name == field)
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// The matcher's view of a draft: raw values, which it normalises its own way.
    pub fn record_of(&self, draft: &Draft) -> Record {
        let mut object = serde_json::Map::new();
        for (field, name) in MATCH_FIELDS {
            if let Some(text) = draft.text(field) {
                object.insert((*name).to_owned(), Value::String(text));
            }
        }
        serde_json::from_value(Value::Object(object)).unwrap_or_default()
    }

    /// Compares the arrival with every remembered member sharing a blocking key.
    /// Members of this transaction (`journal`) count as much as stored ones: two rows
    /// of one batch for the same person become one record.
    pub async fn decide(
        &self,
        conn: &mut AnyConnection,
        journal: &mut Journal,
        arrival: &Arrival,
    ) -> Result<Outcome, StoreError> {
        let (prepared, keys) = (&*arrival.prepared, &arrival.keys);
        if keys.is_empty() {
            return Ok(Outcome::New);
        }
        let blocking = &self.matcher.config().blocking;
        let in_memory = conn.backend_name() == "SQLite";
        let mut index = match in_memory {
            true => Some(self.memory.lock().await),
            false => None,
        };
        let mut candidates = if let Some(index) = index.as_deref_mut() {
            if !journal.blocking_caught_up() {
                let mut fresh = self.take_fresh();
                index
                    .catch_up(conn, &mut fresh, |member| {
                        journal.pending_member(member).is_some()
                    })
                    .await?;
                journal.set_blocking_caught_up();
            }
            let ranked = arrival
                .ranked
                .as_ref()
                .filter(|ranked| ranked.fits(index))
                .and_then(|ranked| self.candidates_from_ranking(index, journal, keys, ranked));
            match ranked {
                Some(candidates) => candidates,
                None => {
                    let found = from_memory(&mut *index, journal, keys, blocking);
                    self.fill_from_memory(conn, index, found).await?
                }
            }
        } else {
            let members = from_store(conn, journal, keys, blocking).await?;
            self.fill_prepared(conn, members).await?
        };
        loop {
            let mut best: Option<(f64, usize)> = None;
            for (at, candidate) in candidates.iter().enumerate() {
                let floor = best.map_or(self.matcher.config().review, |(score, _)| score);
                let score = match candidate.score {
                    Some(ranked) => (ranked >= floor).then_some(ranked),
                    None => self
                        .matcher
                        .total_above(prepared, &candidate.prepared, floor),
                };
                if let Some(score) = score
                    && best.is_none_or(|(top, _)| score > top)
                {
                    best = Some((score, at));
                }
            }
            let Some((score, at)) = best else {
                return Ok(Outcome::New);
            };
            let candidate = &candidates[at];
            let id = match &candidate.record {
                Some(id) => id.clone(),
                None => {
                    // Chosen from memory: the store says whether it still belongs to a
                    // record, and to which (a merge or an unmerge may have moved it).
                    let member = match (&candidate.member, index.as_deref()) {
                        (CandidateMember::Id(id), _) => id.clone(),
                        (CandidateMember::Slot(slot), Some(index)) => {
                            index.member(*slot).id.clone()
                        }
                        (CandidateMember::Slot(_), None) => {
                            return Err(StoreError::Conflict(
                                "a dedup candidate from memory without the memory index".into(),
                            ));
                        }
                    };
                    let record: Option<String> =
                        sqlx::query_scalar("SELECT record_id FROM match_members WHERE id = $1")
                            .bind(&*member)
                            .fetch_optional(&mut *conn)
                            .await?;
                    match record {
                        Some(record) => record,
                        None => {
                            if let (CandidateMember::Slot(slot), Some(index)) =
                                (&candidate.member, index.as_deref_mut())
                            {
                                index.member_mut(*slot).gone = true;
                            }
                            // `remove`, not `swap_remove`: ties go to the earlier candidate.
                            candidates.remove(at);
                            continue;
                        }
                    }
                }
            };
            return Ok(match self.matcher.band(score) {
                Band::Merge => Outcome::Merge { into: id, score },
                Band::Review => Outcome::Review {
                    with: id,
                    score,
                    breakdown: self.breakdown(prepared, &candidate.prepared),
                },
                Band::New => Outcome::New,
            });
        }
    }

    /// After a write transaction committed: its key rows, from its journal, go to the
    /// memory index as they are (it would read them back from the store otherwise: ten
    /// rows per member). Call it only once the commit succeeded.
    pub async fn committed(&self, journal: &mut Journal) {
        if let Some(written) = journal.take_written_keys() {
            self.memory.lock().await.committed(written);
        }
    }

    /// The members `journal`'s transaction remembered, for ranking the next batch while
    /// it commits; `None` when a member's prepared values are not at hand.
    pub fn ahead_of(&self, journal: &Journal) -> Option<Ahead> {
        let fresh = self.prepared.lock().ok()?;
        let mut ahead = Ahead {
            members: Vec::new(),
            by_key: KeyMap::default(),
            last: None,
        };
        for member in journal.members().iter().filter(|m| !m.keys.is_empty()) {
            let at = ahead.members.len() as u32;
            ahead.members.push(fresh.get(&member.id)?.clone());
            for key in &member.keys {
                ahead.by_key.entry(*key).or_default().push(at);
            }
            ahead.last = Some(member.id.as_str().into());
        }
        Some(ahead)
    }

    /// Finds and compares, on every core, each arrival's candidates in the in-memory
    /// blocking index and in `ahead` (the transaction before, not yet committed), so
    /// that its turn in [`Self::decide`] only compares members of its own transaction.
    /// Call it while nothing else holds the index (a blocking thread, between batches).
    pub fn rank_ahead(&self, drafts: &mut [Result<Draft, super::PipelineError>], ahead: &Ahead) {
        use rayon::prelude::*;
        let index = self.memory.blocking_lock();
        if !index.in_use() {
            return;
        }
        let base = index.member_count();
        let expects = base + ahead.members.len();
        let last = ahead
            .last
            .clone()
            .or_else(|| base.checked_sub(1).map(|at| index.member(at).id.clone()));
        drafts
            .par_iter_mut()
            .with_min_len(16)
            .filter_map(|draft| draft.as_mut().ok()?.arrival.as_mut())
            .for_each(|arrival| {
                arrival.ranked =
                    self.rank(&index, ahead, base, arrival)
                        .map(|(scanned, scores)| Ranked {
                            expects,
                            last: last.clone(),
                            scanned,
                            scores,
                        });
            });
    }

    /// One arrival's scans of the index (`ahead`'s members counted in from `base`) and
    /// its scores at or above the review threshold; `None` when a member's values are
    /// not in memory.
    fn rank(
        &self,
        index: &MemoryIndex,
        ahead: &Ahead,
        base: usize,
        arrival: &Arrival,
    ) -> Option<Scans> {
        let config = self.matcher.config();
        let mut scanned = Vec::with_capacity(arrival.keys.len());
        let mut positions = Vec::new();
        for key in &arrival.keys {
            let limit = scan_limit(*key, &config.blocking);
            let mut scan: Vec<u32> = ahead
                .by_key
                .get(key)
                .into_iter()
                .flat_map(|at| at.iter().rev())
                .take(limit)
                .map(|at| (base + *at as usize) as u32)
                .collect();
            let rest = limit - scan.len();
            scan.extend(index.with_key(*key).take(rest).map(|at| at as u32));
            positions.extend_from_slice(&scan);
            scanned.push(scan);
        }
        positions.sort_unstable();
        positions.dedup();
        let mut scores = Vec::new();
        for at in positions {
            let prepared = match (at as usize).checked_sub(base) {
                Some(ahead_at) => &ahead.members[ahead_at],
                None => {
                    let member = index.member(at as usize);
                    if member.gone {
                        continue;
                    }
                    member.prepared.as_ref()?
                }
            };
            if let Some(score) =
                self.matcher
                    .total_above(&arrival.prepared, prepared, config.review)
            {
                scores.push((at, score));
            }
        }
        Some((scanned, scores))
    }

    /// Candidates as [`from_memory`] and [`Self::fill_from_memory`] find them, in the
    /// same order, the index's scored by the ranking: this transaction's members (newest
    /// first) per key, then the ranked scan of the index within what the key's scan
    /// limit leaves. `None` when a member chosen has no values in memory.
    fn candidates_from_ranking(
        &self,
        index: &mut MemoryIndex,
        journal: &Journal,
        keys: &[u64],
        ranked: &Ranked,
    ) -> Option<Vec<Candidate>> {
        let blocking = &self.matcher.config().blocking;
        let fresh = self.prepared.lock().ok()?;
        index.new_visit();
        let mut seen_pending: Vec<&str> = Vec::new();
        let mut candidates = Vec::new();
        for (key, scan) in keys.iter().zip(&ranked.scanned) {
            let limit = scan_limit(*key, blocking);
            let mut taken = 0;
            for pending in journal.members_with_key(*key).take(limit) {
                taken += 1;
                if seen_pending.contains(&pending.id.as_str()) {
                    continue;
                }
                seen_pending.push(&pending.id);
                let Some(prepared) = fresh.get(&pending.id) else {
                    continue;
                };
                let written = journal.pending_member(&pending.id).is_some_and(|(_, w)| w);
                candidates.push(Candidate {
                    member: CandidateMember::Id(pending.id.clone().into_boxed_str()),
                    record: (!written).then(|| pending.record_id.clone()),
                    prepared: prepared.clone(),
                    score: None,
                });
            }
            for &at in scan.iter().take(limit - taken) {
                let slot = at as usize;
                if index.member(slot).gone || !index.first_found(slot) {
                    continue;
                }
                let Ok(scored) = ranked.scores.binary_search_by_key(&at, |(at, _)| *at) else {
                    continue;
                };
                candidates.push(Candidate {
                    member: CandidateMember::Slot(slot),
                    record: None,
                    prepared: index.member(slot).prepared.clone()?,
                    score: Some(ranked.scores[scored].1),
                });
            }
        }
        Some(candidates)
    }

    /// Prepared values of members this process remembered and the memory index has not
    /// taken in yet; what is left after a catch-up was rolled back or has no keys.
    fn take_fresh(&self) -> HashMap<String, Arc<Prepared>> {
        self.prepared
            .lock()
            .map(|mut fresh| std::mem::take(&mut *fresh))
            .unwrap_or_default()
    }

    /// Candidates found in memory with their prepared values, loading those the index
    /// lacks (members taken in at start) from the store.
    async fn fill_from_memory(
        &self,
        conn: &mut AnyConnection,
        index: &mut MemoryIndex,
        found: Vec<Found<'_>>,
    ) -> Result<Vec<Candidate>, StoreError> {
        let missing: Vec<&str> = found
            .iter()
            .filter_map(|found| match found {
                Found::Memory(slot) if index.member(*slot).prepared.is_none() => {
                    Some(&*index.member(*slot).id)
                }
                _ => None,
            })
            .collect();
        let mut loaded = self.load_prepared(conn, &missing).await?;
        let fresh = self.prepared.lock().ok();
        let mut candidates = Vec::with_capacity(found.len());
        for found in found {
            match found {
                Found::Journal(member, written) => {
                    let Some(prepared) = fresh.as_ref().and_then(|f| f.get(&member.id)) else {
                        continue;
                    };
                    candidates.push(Candidate {
                        member: CandidateMember::Id(member.id.clone().into_boxed_str()),
                        record: (!written).then(|| member.record_id.clone()),
                        prepared: prepared.clone(),
                        score: None,
                    });
                }
                Found::Memory(slot) => {
                    let member = index.member_mut(slot);
                    if member.prepared.is_none() {
                        member.prepared = loaded.remove(&*member.id);
                    }
                    let Some(prepared) = member.prepared.clone() else {
                        // Its values are gone from the store: so is the member.
                        member.gone = true;
                        continue;
                    };
                    candidates.push(Candidate {
                        member: CandidateMember::Slot(slot),
                        record: None,
                        prepared,
                        score: None,
                    });
                }
            }
        }
        Ok(candidates)
    }

    /// Candidates found in the store with their prepared values, from the cache or, for
    /// those it lacks, from the store.
    async fn fill_prepared(
        &self,
        conn: &mut AnyConnection,
        members: Vec<StoredMember>,
    ) -> Result<Vec<Candidate>, StoreError> {
        let mut missing = Vec::new();
        let mut cached = HashMap::with_capacity(members.len());
        if let Ok(cache) = self.prepared.lock() {
            for member in &members {
                match cache.get(&member.id) {
                    Some(prepared) => {
                        cached.insert(member.id.clone(), prepared.clone());
                    }
                    None => missing.push(member.id.as_str()),
                }
            }
        }
        let loaded = self.load_prepared(conn, &missing).await?;
        if let Ok(mut cache) = self.prepared.lock() {
            if cache.len() + loaded.len() > PREPARED_CACHE {
                cache.clear();
            }
            for (member, prepared) in &loaded {
                cache.insert(member.clone(), prepared.clone());
            }
        }
        cached.extend(loaded);
        Ok(members
            .into_iter()
            .filter_map(|member| {
                let prepared = cached.get(&member.id)?.clone();
                Some(Candidate {
                    member: CandidateMember::Id(member.id.into_boxed_str()),
                    record: member.record_id,
                    prepared,
                    score: None,
                })
            })
            .collect())
    }

    /// Members' values read from the store and prepared, in a few statements.
    async fn load_prepared(
        &self,
        conn: &mut AnyConnection,
        members: &[&str],
    ) -> Result<HashMap<String, Arc<Prepared>>, StoreError> {
        let mut missing = members.to_vec();
        missing.sort_unstable();
        missing.dedup();
        let mut loaded = HashMap::with_capacity(missing.len());
        let placeholders = Placeholders::of(conn);
        for chunk in missing.chunks(MEMBERS_PER_STATEMENT) {
            // Padded to a power of two (repeating the last id), so a few statement
            // shapes serve every count and stay in the connection's statement cache.
            let width = chunk.len().next_power_of_two();
            let sql = format!(
                "SELECT id, match_values FROM match_members WHERE id IN ({})",
                placeholders.list(width)
            );
            let mut query = sqlx::query(&sql);
            for n in 0..width {
                query = query.bind(chunk[n.min(chunk.len() - 1)]);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let member: String = row.try_get("id")?;
                let values: String = row.try_get("match_values")?;
                let Ok(other) = serde_json::from_str::<Record>(&values) else {
                    continue;
                };
                loaded.insert(member, Arc::new(self.matcher.prepare(&other)));
            }
        }
        Ok(loaded)
    }

    /// Field-by-field comparison, as stewards see it, of values already prepared (the
    /// arrival's and the candidate's): preparing them again parsed phone numbers anew.
    fn breakdown(&self, a: &Prepared, b: &Prepared) -> Value {
        let score = self.matcher.score(a, b);
        json!({
            "total": score.total,
            "names_swapped": score.names_swapped,
            "fields": score.fields.iter().map(|f| json!({
                "field": f.field.name(),
                "similarity": f.similarity,
                "agreement": format!("{:?}", f.agreement).to_lowercase(),
                "weight": f.weight,
            })).collect::<Vec<_>>(),
        })
    }

    /// The arrival as the matcher sees it: its values, prepared once, and its keys.
    pub fn arrival(&self, draft: &Draft) -> Arrival {
        let record = self.record_of(draft);
        let prepared = Arc::new(self.matcher.prepare(&record));
        let mut keys = Vec::new();
        blocking::keys(&prepared, &mut keys);
        Arrival {
            record,
            prepared,
            keys,
            ranked: None,
        }
    }

    /// Remembers the arrival as a member of `record_id`, under its blocking keys; the
    /// journal writes it with the transaction.
    pub fn remember(
        &self,
        journal: &mut Journal,
        kind: RecordKind,
        record_id: &str,
        source_id: &str,
        arrival: &Arrival,
    ) -> Result<(), StoreError> {
        let member = new_id();
        let values = serde_json::to_string(&arrival.record)
            .map_err(|e| StoreError::Conflict(format!("match values: {e}")))?;
        if let Ok(mut cache) = self.prepared.lock() {
            if cache.len() >= PREPARED_CACHE {
                cache.clear();
            }
            cache.insert(member.clone(), arrival.prepared.clone());
        }
        journal.push_member(MatchMember {
            id: member,
            record_kind: kind.path(),
            record_id: record_id.to_owned(),
            source_id: source_id.to_owned(),
            values,
            created_at: now_timestamp(),
            keys: arrival.keys.clone(),
        });
        Ok(())
    }
}

/// A member to compare the arrival with.
struct Candidate {
    member: CandidateMember,
    /// Its record, when known to be current (`None`: ask the store before acting).
    record: Option<String>,
    prepared: Arc<Prepared>,
    /// Its score, when the ranking compared it ahead (at or above the review threshold).
    score: Option<f64>,
}

/// Which member a candidate is: its id, or its place in the memory index (whose id is
/// read only for the one candidate chosen).
enum CandidateMember {
    Id(Box<str>),
    Slot(usize),
}

/// A member found under one of the arrival's keys, before its values are at hand.
enum Found<'j> {
    /// This transaction's, and whether it is written to the store already (then a
    /// delete or merge later in the transaction may have moved it).
    Journal(&'j MatchMember, bool),
    Memory(usize),
}

/// Members sharing a key with the arrival: per key this transaction's members (newest
/// first), then the index's, up to the key's scan limit together.
fn from_memory<'j>(
    index: &mut MemoryIndex,
    journal: &'j Journal,
    keys: &[u64],
    blocking: &matching::BlockingConfig,
) -> Vec<Found<'j>> {
    index.new_visit();
    // This transaction's members under the arrival's keys are few: a list is enough.
    let mut seen_pending: Vec<&str> = Vec::new();
    let mut slots = Vec::new();
    let mut found = Vec::new();
    for key in keys {
        let limit = scan_limit(*key, blocking);
        let mut taken = 0;
        for pending in journal.members_with_key(*key).take(limit) {
            taken += 1;
            if !seen_pending.contains(&pending.id.as_str()) {
                seen_pending.push(&pending.id);
                let written = journal.pending_member(&pending.id).is_some_and(|(_, w)| w);
                found.push(Found::Journal(pending, written));
            }
        }
        slots.clear();
        slots.extend(index.with_key(*key).take(limit - taken));
        for &slot in &slots {
            if !index.member(slot).gone && index.first_found(slot) {
                found.push(Found::Memory(slot));
            }
        }
    }
    found
}

/// A member found in the store, with its record when that is current.
struct StoredMember {
    id: String,
    record_id: Option<String>,
}

/// Members sharing a key with the arrival, as the store has them: each key's most
/// recent members up to its scan limit, keys in order, newest first within a key. One
/// statement for all keys (a `UNION ALL` of per-key scans): a statement per key cost a
/// round trip to the store's thread each.
async fn from_store(
    conn: &mut AnyConnection,
    journal: &Journal,
    keys: &[u64],
    blocking: &matching::BlockingConfig,
) -> Result<Vec<StoredMember>, StoreError> {
    let placeholders = Placeholders::of(conn);
    let arms: Vec<String> = (0..keys.len())
        .map(|arm| {
            format!(
                "SELECT CAST({arm} AS BIGINT) AS arm, seq, member_id FROM (SELECT seq, member_id FROM match_keys \
                 WHERE key = {} ORDER BY seq DESC LIMIT {}) AS k{arm}",
                placeholders.nth(arm * 2 + 1),
                placeholders.nth(arm * 2 + 2),
            )
        })
        .collect();
    let sql = format!(
        "SELECT c.arm, c.member_id, m.record_id FROM ({}) AS c \
         JOIN match_members m ON m.id = c.member_id ORDER BY c.arm, c.seq DESC",
        arms.join(" UNION ALL ")
    );
    let mut query = sqlx::query(&sql);
    for key in keys {
        query = query
            .bind(*key as i64)
            .bind(scan_limit(*key, blocking) as i64);
    }
    let stored = query.fetch_all(&mut *conn).await?;
    // Per key: this transaction's members (newest first), then stored ones, up to the
    // key's scan limit together. Members this transaction wrote already are among the
    // stored rows too; they count once, as the transaction's.
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    let mut rows = stored.iter().peekable();
    for (arm, key) in keys.iter().enumerate() {
        let limit = scan_limit(*key, blocking);
        let mut taken = 0;
        for pending in journal.members_with_key(*key).take(limit) {
            taken += 1;
            if seen.insert(pending.id.clone()) {
                let written = journal.pending_member(&pending.id).is_some_and(|(_, w)| w);
                members.push(StoredMember {
                    id: pending.id.clone(),
                    record_id: (!written).then(|| pending.record_id.clone()),
                });
            }
        }
        while let Some(row) =
            rows.next_if(|row| row.try_get::<i64, _>("arm").ok() == Some(arm as i64))
        {
            let member: String = row.try_get("member_id")?;
            if taken == limit || journal.pending_member(&member).is_some() {
                continue;
            }
            taken += 1;
            if seen.insert(member.clone()) {
                members.push(StoredMember {
                    id: member,
                    record_id: Some(row.try_get("record_id")?),
                });
            }
        }
    }
    Ok(members)
}

/// Names-only keys (low bit set) make the largest blocks; scan fewer of them.
fn scan_limit(key: u64, blocking: &matching::BlockingConfig) -> usize {
    if key & 1 == 1 {
        blocking.name_scan
    } else {
        blocking.max_scan
    }
}

/// Members of `from` now belong to `to` (after a merge of two stored records).
pub async fn move_members(
    conn: &mut AnyConnection,
    kind: RecordKind,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE match_members SET record_id = $1 WHERE record_kind = $2 AND record_id = $3",
    )
    .bind(to)
    .bind(kind.path())
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn open_review(
    conn: &mut AnyConnection,
    kind: RecordKind,
    existing: &str,
    arrived: &str,
    score: f64,
    breakdown: &Value,
    inbound_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO review_pairs (id, record_kind, record_a, record_b, score, breakdown, status, \
         inbound_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8) \
         ON CONFLICT (record_kind, record_a, record_b) DO NOTHING",
    )
    .bind(new_id())
    .bind(kind.path())
    .bind(existing)
    .bind(arrived)
    .bind(score)
    .bind(breakdown.to_string())
    .bind(inbound_id)
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Remembers that `a` and `b` are two people, so the pair is not proposed again.
pub async fn remember_distinct(
    conn: &mut AnyConnection,
    kind: RecordKind,
    a: &str,
    b: &str,
    actor: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO review_pairs (id, record_kind, record_a, record_b, score, breakdown, status, \
         decided_by, decided_at, created_at) VALUES ($1, $2, $3, $4, 0, '{}', 'not_a_duplicate', $5, $6, $6) \
         ON CONFLICT (record_kind, record_a, record_b) DO UPDATE SET status = 'not_a_duplicate', \
         decided_by = $5, decided_at = $6",
    )
    .bind(new_id())
    .bind(kind.path())
    .bind(a)
    .bind(b)
    .bind(actor)
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn draft(first: &str, last: &str, email: &str, phone: &str) -> Draft {
        let mut draft = Draft::new(RecordKind::Lead);
        for (field, value) in [
            ("first_name", first),
            ("last_name", last),
            ("email", email),
            ("phone", phone),
            ("city", "Leeds"),
            ("country", "GB"),
        ] {
            draft.set(field, value.to_owned());
        }
        draft
    }

    /// People of the first batch, variants of them and of each other in the second.
    fn first_batch() -> Vec<Draft> {
        vec![
            draft(
                "Rosalind",
                "Franklin",
                "rosalind@kings.example",
                "+44 20 7946 0000",
            ),
            draft(
                "Maurice",
                "Wilkins",
                "maurice@kings.example",
                "+44 20 7946 0001",
            ),
            draft(
                "Raymond",
                "Gosling",
                "ray@kings.example",
                "+44 20 7946 0002",
            ),
        ]
    }

    fn second_batch() -> Vec<Draft> {
        vec![
            // A duplicate of a committed member, one of a member still in the batch
            // before (not committed while ranking), a new person and a duplicate of
            // that new person later in the same batch.
            draft(
                "Rosalind",
                "Franklyn",
                "rosalind@kings.example",
                "020 7946 0000",
            ),
            draft(
                "Raymond",
                "Gosling",
                "ray@kings.example",
                "+44 20 7946 0002",
            ),
            draft(
                "Aaron",
                "Klug",
                "aaron@birkbeck.example",
                "+44 20 7946 0100",
            ),
            draft(
                "Aaron",
                "Klugg",
                "aaron@birkbeck.example",
                "+44 20 7946 0100",
            ),
            draft("Sam", "Okafor", "sam@okafor.example", "+44 20 7946 0200"),
        ]
    }

    async fn scratch_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let store = Store::connect(&url, 1).await.expect("store");
        store.migrate().await.expect("migrate");
        store
    }

    /// Decides and remembers each draft as a new or merged record in one transaction;
    /// answers the outcomes and the journal, flushed but not committed.
    async fn decide_all(
        dedup: &Dedup,
        conn: &mut AnyConnection,
        journal: &mut Journal,
        drafts: &[Draft],
        first_row: usize,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for (n, draft) in (first_row..).zip(drafts) {
            let arrival = draft
                .arrival
                .clone()
                .unwrap_or_else(|| dedup.arrival(draft));
            let outcome = dedup.decide(conn, journal, &arrival).await.expect("decide");
            let record = match &outcome {
                Outcome::Merge { into, .. } => into.clone(),
                _ => format!("lead-{n}"),
            };
            dedup
                .remember(
                    journal,
                    RecordKind::Lead,
                    &record,
                    &format!("row-{n}"),
                    &arrival,
                )
                .expect("remember");
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Ranks `drafts` against the index and the members of `journal`'s transaction, as
    /// the harness does while that transaction commits; then commits it.
    async fn rank_then_commit(
        dedup: &Arc<Dedup>,
        mut tx: crate::store::WriteTx,
        mut journal: Journal,
        drafts: Vec<Draft>,
    ) -> Vec<Draft> {
        let ahead = dedup.ahead_of(&journal).expect("members' values at hand");
        let mut next: Vec<Result<Draft, super::super::PipelineError>> = drafts
            .into_iter()
            .map(|mut draft| {
                draft.arrival = Some(dedup.arrival(&draft));
                Ok(draft)
            })
            .collect();
        let ranker = dedup.clone();
        let next = tokio::task::spawn_blocking(move || {
            ranker.rank_ahead(&mut next, &ahead);
            next
        })
        .await
        .expect("ranking");
        journal.flush(&mut tx).await.expect("flush");
        tx.commit().await.expect("commit");
        dedup.committed(&mut journal).await;
        next.into_iter().map(|d| d.expect("draft")).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn arrivals_ranked_while_the_batch_before_commits_are_decided_as_unranked_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let store = scratch_store(&dir).await;
        let dedup = Arc::new(Dedup::new(MatchConfig::default()).expect("dedup"));
        // Rosalind committed before; Maurice and Raymond in the batch being written.
        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        decide_all(&dedup, &mut tx, &mut journal, &first_batch()[..1], 0).await;
        journal.flush(&mut tx).await.expect("flush");
        tx.commit().await.expect("commit");
        dedup.committed(&mut journal).await;
        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        decide_all(&dedup, &mut tx, &mut journal, &first_batch()[1..], 1).await;
        let ranked = rank_then_commit(&dedup, tx, journal, second_batch()).await;
        let unranked: Vec<Draft> = ranked
            .iter()
            .cloned()
            .map(|mut draft| {
                if let Some(arrival) = draft.arrival.as_mut() {
                    arrival.ranked = None;
                }
                draft
            })
            .collect();
        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        // The first decision catches the index up; the rankings fit it then.
        let first = decide_all(&dedup, &mut tx, &mut journal, &ranked[..1], 10).await;
        {
            let index = dedup.memory.lock().await;
            assert!(
                ranked.iter().all(|d| d
                    .arrival
                    .as_ref()
                    .and_then(|a| a.ranked.as_ref())
                    .is_some_and(|r| r.fits(&index))),
                "every arrival ranked against the index as it stands"
            );
        }
        let with = [
            first,
            decide_all(&dedup, &mut tx, &mut journal, &ranked[1..], 11).await,
        ]
        .concat();
        drop(tx);
        // The same decisions without the ranking, in a fresh transaction (the one above
        // rolled back).
        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        let without = decide_all(&dedup, &mut tx, &mut journal, &unranked, 10).await;
        let kinds: Vec<&str> = with
            .iter()
            .map(|o| match o {
                Outcome::New => "new",
                Outcome::Merge { .. } => "merge",
                Outcome::Review { .. } => "review",
            })
            .collect();
        assert_eq!(kinds, ["merge", "merge", "new", "merge", "new"], "{with:?}");
        assert_eq!(with, without);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_ranking_is_void_when_other_members_came_in_before_its_turn() {
        let dir = tempfile::tempdir().expect("dir");
        let store = scratch_store(&dir).await;
        let dedup = Arc::new(Dedup::new(MatchConfig::default()).expect("dedup"));
        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        decide_all(&dedup, &mut tx, &mut journal, &first_batch(), 0).await;
        let ranked = rank_then_commit(&dedup, tx, journal, second_batch()[4..].to_vec()).await;
        // Another writer (a process of its own: this one's index has not seen it)
        // remembers Sam before the ranked batch's turn.
        let other = Dedup::new(MatchConfig::default()).expect("dedup");
        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        let sam = draft("Sam", "Okafor", "sam@okafor.example", "+44 20 7946 0200");
        other
            .remember(
                &mut journal,
                RecordKind::Lead,
                "lead-sam",
                "other-row",
                &other.arrival(&sam),
            )
            .expect("remember");
        journal.flush(&mut tx).await.expect("flush");
        tx.commit().await.expect("commit");

        let mut tx = store.begin_write().await.expect("tx");
        let mut journal = Journal::default();
        assert!(
            ranked[0]
                .arrival
                .as_ref()
                .is_some_and(|a| a.ranked.is_some())
        );
        let outcomes = decide_all(&dedup, &mut tx, &mut journal, &ranked, 10).await;
        assert!(
            matches!(&outcomes[0], Outcome::Merge { into, .. } if into == "lead-sam"),
            "{outcomes:?}"
        );
    }
}
