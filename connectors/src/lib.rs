//! Channel connectors: each module verifies and decodes one channel's wire format into
//! [`Inbound`] records. Connectors know nothing of the store or the pipeline.

mod inbound;

pub use inbound::{Fields, Inbound};
