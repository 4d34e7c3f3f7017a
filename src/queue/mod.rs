//! The inbound queue. Embedded: the store's inbox, written by group commit, drained by
//! an in-process worker pool.

mod group_commit;

pub use group_commit::{AcceptError, Accepter};
