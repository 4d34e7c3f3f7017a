//! Identity keys: which partition an inbound record travels in, and which keys a worker
//! locks while it deduplicates a batch.
//!
//! The partition is the record's dedup blocking key (normalised email, else phone E.164,
//! else the name key) modulo the partition count, so arrivals of one person through any
//! channel that share that key queue behind each other in one partition. A person can
//! arrive once with an email and once with a phone only: different partitions. The lock
//! keys (email and phone) close that gap in the store (see `pipeline::worker`).

use matching::Field;
use matching::blocking::soundex;
use sha2::{Digest, Sha256};

use crate::pipeline::{Draft, Pipeline};
use crate::store::inbox::InboxRow;

/// The identity of one prepared record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Email, else phone, else name key; `None` when the record names nobody.
    pub primary: Option<u64>,
    /// Email and phone keys (and the primary): what concurrent workers serialise on.
    pub locks: Vec<u64>,
}

impl Identity {
    /// The partition of this identity; records without one spread by `fallback`.
    pub fn partition(&self, partitions: u32, fallback: &str) -> u32 {
        let key = self
            .primary
            .unwrap_or_else(|| hash(&[b"x", fallback.as_bytes()]));
        (key % u64::from(partitions.max(1))) as u32
    }
}

/// The identity of a draft, as the dedup stage's matcher normalises it.
pub fn identity_of(pipeline: &Pipeline, draft: &Draft) -> Identity {
    let dedup = pipeline.dedup();
    let prepared = dedup.matcher().prepare(&dedup.record_of(draft));
    let email = prepared
        .get(Field::Email)
        .map(|e| hash(&[b"e", e.as_bytes()]));
    let phone = prepared
        .get(Field::Phone)
        .map(|p| hash(&[b"p", p.as_bytes()]));
    let mut names: Vec<[u8; 4]> = [Field::FirstName, Field::LastName]
        .iter()
        .filter_map(|&f| prepared.get(f).map(soundex))
        .collect();
    // Sorted, so a swapped first and last name is the same key.
    names.sort_unstable();
    let name = (!names.is_empty()).then(|| {
        let parts: Vec<&[u8]> = std::iter::once(b"n".as_slice())
            .chain(names.iter().map(|n| n.as_slice()))
            .collect();
        hash(&parts)
    });
    let primary = email.or(phone).or(name);
    let mut locks: Vec<u64> = [email, phone, primary].into_iter().flatten().collect();
    locks.sort_unstable();
    locks.dedup();
    Identity { primary, locks }
}

/// The identity of a raw inbound row: mapped and normalised exactly as the worker will.
/// A row the pipeline cannot prepare has none (it spreads by its id).
pub fn identity_of_row(pipeline: &Pipeline, row: &InboxRow) -> Identity {
    match pipeline.prepare(row) {
        Ok(draft) if draft.skipped.is_none() => identity_of(pipeline, &draft),
        _ => Identity::default(),
    }
}

fn hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Kept within i64 so the same number is a PostgreSQL advisory lock key.
    u64::from_be_bytes(first) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_stay_in_range_and_are_stable() {
        let identity = Identity {
            primary: Some(hash(&[b"e", b"ada@example.com"])),
            locks: Vec::new(),
        };
        let first = identity.partition(16, "x");
        assert!(first < 16);
        assert_eq!(identity.partition(16, "y"), first, "fallback unused");
        assert!(Identity::default().partition(7, "abc") < 7);
    }
}
