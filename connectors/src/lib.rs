//! Channel connectors: each module verifies and decodes one channel's wire format into
//! [`Inbound`] records. Connectors know nothing of the store or the pipeline.
//!
//! Every decoder takes the instant the request was accepted (`received_at`) instead of
//! reading the clock, so the HTTP layer stamps acceptance once and tests are deterministic.

mod inbound;
mod util;

pub mod cti_generic;
pub mod email;
pub mod form;
pub mod signature;
pub mod stripe;
pub mod twilio;
pub mod whatsapp;
pub mod zoom;

pub use inbound::{Fields, Inbound};
