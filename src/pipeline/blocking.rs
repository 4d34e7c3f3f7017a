//! Dedup's blocking index held in memory, for the embedded store: each blocking key's
//! members, newest first, so an arrival's candidates cost no statement and no random
//! read of the `match_keys` B-tree (the largest per-row cost left once writes were
//! batched, and the one that grew with the store).
//!
//! The store's `match_keys` stays the record, for restarts and for every other process
//! on the same file. The index takes in only committed members: it catches up from
//! `match_keys` by `seq` at the start of a write transaction. On SQLite every write
//! transaction holds the one writer lock (`BEGIN IMMEDIATE`), so rows commit in `seq`
//! order and nothing committed later can carry a lower `seq` than one already taken in.
//! (PostgreSQL's concurrent workers commit out of `seq` order; they query the store.)
//! Nothing on SQLite reads `match_keys` by key any more, so it has no index on `key`
//! there (migration 0016): its inserts were random writes into a B-tree larger than the
//! page cache.
//!
//! Members deleted or moved to another record (a merge, an unmerge) by other
//! transactions are not seen here; the caller checks the member it chose against the
//! store before acting on it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use matching::Prepared;
use matching::blocking::KeyMap;
use sqlx::{AnyConnection, Row};

use crate::store::StoreError;
use crate::store::write::WrittenKeys;

/// `match_keys` rows read per statement while catching up.
const CATCH_UP_ROWS: i64 = 50_000;

const END: u32 = u32::MAX;

#[derive(Default)]
pub struct MemoryIndex {
    /// The highest `match_keys.seq` taken in.
    caught_up: i64,
    /// A write transaction has caught up: this process's store keeps dedup here.
    in_use: bool,
    /// Per key, its newest link.
    heads: KeyMap<u32>,
    links: Vec<Link>,
    members: Vec<Member>,
    /// Per member, the visit it was last found in: an arrival's keys share members,
    /// and a stamp tells a repeat without hashing its id.
    found_in: Vec<u32>,
    visit: u32,
    /// Key rows this process's transactions committed, oldest first: taken in from here
    /// when the catch-up reaches them instead of read back from the store.
    written: VecDeque<WrittenKeys>,
}

struct Link {
    member: u32,
    /// The key's next older link, or `END`.
    older: u32,
}

pub struct Member {
    pub id: Box<str>,
    /// Loaded on first comparison (members taken in at start have none).
    pub prepared: Option<Arc<Prepared>>,
    /// Found deleted from the store: never a candidate again.
    pub gone: bool,
}

impl MemoryIndex {
    /// Takes in members committed since the last call. `fresh` holds the prepared
    /// values of members this process remembered, so they need not be read back.
    /// `own` says whether a member was written by the caller's transaction (then it
    /// and everything after it is uncommitted: SQLite's writer is that transaction);
    /// the catch-up stops there, and the next one takes them in once committed.
    pub async fn catch_up(
        &mut self,
        conn: &mut AnyConnection,
        fresh: &mut HashMap<String, Arc<Prepared>>,
        own: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        self.in_use = true;
        loop {
            // Rows below the next range this process wrote are other processes'.
            let below = self.written.front().map_or(i64::MAX, |w| w.first_seq);
            let rows = sqlx::query(
                "SELECT seq, key, member_id FROM match_keys WHERE seq > $1 AND seq < $2 \
                 ORDER BY seq LIMIT $3",
            )
            .bind(self.caught_up)
            .bind(below)
            .bind(CATCH_UP_ROWS)
            .fetch_all(&mut *conn)
            .await?;
            let read = rows.len();
            for row in rows {
                let seq: i64 = row.try_get("seq")?;
                let key: i64 = row.try_get("key")?;
                let member: String = row.try_get("member_id")?;
                if own(&member) {
                    return Ok(());
                }
                self.take_in(key as u64, &member, fresh);
                self.caught_up = seq;
            }
            if (read as i64) == CATCH_UP_ROWS {
                continue;
            }
            let Some(written) = self.written.pop_front() else {
                return Ok(());
            };
            // Read back already (another transaction caught up before this one was
            // handed over), or not where it should be: the store has the rows.
            if written.first_seq <= self.caught_up {
                continue;
            }
            for (key, member) in written.rows() {
                self.take_in(key, member, fresh);
            }
            self.caught_up = written.last_seq;
        }
    }

    /// Hands over the key rows of a transaction this process committed: the catch-up
    /// takes them in from here rather than reading them back. Only committed rows may
    /// come here; rows the index has read already are dropped.
    pub fn committed(&mut self, written: WrittenKeys) {
        let after_last = self
            .written
            .back()
            .map_or(self.caught_up, |last| last.last_seq);
        if written.first_seq > after_last {
            self.written.push_back(written);
        } else if written.last_seq > self.caught_up {
            // Out of order: let the store say what was written.
            self.written.clear();
        }
    }

    /// A member's keys are written one after another, so a key row names either the
    /// member of the row before or a new one.
    fn take_in(&mut self, key: u64, member: &str, fresh: &mut HashMap<String, Arc<Prepared>>) {
        let at = match self.members.last() {
            Some(last) if *last.id == *member => self.members.len() - 1,
            _ => {
                let prepared = fresh.remove(member);
                self.members.push(Member {
                    id: member.into(),
                    prepared,
                    gone: false,
                });
                self.found_in.push(0);
                self.members.len() - 1
            }
        };
        let link = self.links.len() as u32;
        let older = self.heads.insert(key, link).unwrap_or(END);
        self.links.push(Link {
            member: at as u32,
            older,
        });
    }

    /// Members under `key`, newest first, as positions for [`Self::member`].
    pub fn with_key(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let mut next = self.heads.get(&key).copied().unwrap_or(END);
        std::iter::from_fn(move || {
            if next == END {
                return None;
            }
            let link = &self.links[next as usize];
            next = link.older;
            Some(link.member as usize)
        })
    }

    /// Starts a visit: [`Self::first_found`] answers true once per member until the next.
    pub fn new_visit(&mut self) {
        self.visit = self.visit.wrapping_add(1);
        if self.visit == 0 {
            self.found_in.fill(0);
            self.visit = 1;
        }
    }

    /// Whether this visit meets the member at `at` for the first time.
    pub fn first_found(&mut self, at: usize) -> bool {
        let fresh = self.found_in[at] != self.visit;
        self.found_in[at] = self.visit;
        fresh
    }

    pub fn in_use(&self) -> bool {
        self.in_use
    }

    /// Members taken in so far; the next one taken in gets this position.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn member(&self, at: usize) -> &Member {
        &self.members[at]
    }

    pub fn member_mut(&mut self, at: usize) -> &mut Member {
        &mut self.members[at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(rows: &[(u64, &str)]) -> MemoryIndex {
        let mut index = MemoryIndex::default();
        let mut fresh = HashMap::new();
        for (key, member) in rows {
            index.take_in(*key, member, &mut fresh);
        }
        index
    }

    fn ids(index: &MemoryIndex, key: u64) -> Vec<&str> {
        index
            .with_key(key)
            .map(|at| &*index.member(at).id)
            .collect()
    }

    /// An in-memory `match_keys` as the migrations make it on SQLite.
    async fn keys_table() -> AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        sqlx::query(
            "CREATE TABLE match_keys (seq INTEGER PRIMARY KEY AUTOINCREMENT, key INTEGER NOT NULL, \
             member_id TEXT NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .expect("table");
        conn
    }

    #[tokio::test]
    async fn a_catch_up_stops_at_the_callers_own_uncommitted_members() {
        let mut conn = keys_table().await;
        let add = |rows: &'static str| sqlx::query(rows);
        add("INSERT INTO match_keys (key, member_id) VALUES (1, 'a'), (2, 'a'), (1, 'b')")
            .execute(&mut conn)
            .await
            .expect("committed");
        // `c` is the caller's own, written in its transaction and not committed.
        add("INSERT INTO match_keys (key, member_id) VALUES (1, 'c'), (3, 'c')")
            .execute(&mut conn)
            .await
            .expect("own");
        let mut index = MemoryIndex::default();
        let mut fresh = HashMap::new();
        index
            .catch_up(&mut conn, &mut fresh, |member| member == "c")
            .await
            .expect("catch up");
        assert_eq!(ids(&index, 1), ["b", "a"]);
        assert_eq!(index.caught_up, 3);
        // Committed now: the next transaction's catch-up takes it in.
        index
            .catch_up(&mut conn, &mut fresh, |_| false)
            .await
            .expect("catch up");
        assert_eq!(ids(&index, 1), ["c", "b", "a"]);
        assert_eq!(ids(&index, 3), ["c"]);
    }

    #[tokio::test]
    async fn committed_rows_handed_over_are_taken_in_between_other_processes_rows() {
        let mut conn = keys_table().await;
        // Another process's row, this process's transaction (seq 2 and 3), another's.
        sqlx::query(
            "INSERT INTO match_keys (key, member_id) VALUES (1, 'a'), (1, 'b'), (2, 'b'), (3, 'c')",
        )
        .execute(&mut conn)
        .await
        .expect("rows");
        // Gone from the table, so only the hand-over can bring `b` in.
        sqlx::query("DELETE FROM match_keys WHERE member_id = 'b'")
            .execute(&mut conn)
            .await
            .expect("delete");
        let mut index = MemoryIndex::default();
        let mut fresh = HashMap::new();
        index.committed(WrittenKeys {
            first_seq: 2,
            last_seq: 3,
            members: vec![("b".into(), vec![1, 2])],
        });
        index
            .catch_up(&mut conn, &mut fresh, |_| false)
            .await
            .expect("catch up");
        assert_eq!(ids(&index, 1), ["b", "a"]);
        assert_eq!(ids(&index, 2), ["b"]);
        assert_eq!(ids(&index, 3), ["c"]);
        assert_eq!(index.caught_up, 4);
        // A hand-over of rows read already adds nothing.
        index.committed(WrittenKeys {
            first_seq: 4,
            last_seq: 4,
            members: vec![("c".into(), vec![3])],
        });
        index
            .catch_up(&mut conn, &mut fresh, |_| false)
            .await
            .expect("catch up");
        assert_eq!(ids(&index, 3), ["c"]);
        assert_eq!(index.members.len(), 3);
    }

    #[test]
    fn a_key_lists_its_members_newest_first_and_a_member_once_per_run_of_rows() {
        let index = index_of(&[(1, "a"), (2, "a"), (1, "b"), (3, "b"), (1, "c"), (2, "c")]);
        assert_eq!(index.members.len(), 3);
        assert_eq!(ids(&index, 1), ["c", "b", "a"]);
        assert_eq!(ids(&index, 2), ["c", "a"]);
        assert_eq!(ids(&index, 3), ["b"]);
        assert!(ids(&index, 4).is_empty());
    }

    #[test]
    fn a_visit_finds_each_member_once_and_the_next_visit_finds_it_again() {
        let mut index = index_of(&[(1, "a"), (2, "a"), (1, "b")]);
        index.new_visit();
        assert!(index.first_found(0));
        assert!(!index.first_found(0));
        assert!(index.first_found(1));
        index.new_visit();
        assert!(index.first_found(0));
    }
}
