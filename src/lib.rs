//! leadgate: the integration gateway and ingestion pipeline of a CRM.

pub mod access;
pub mod billing;
pub mod config;
pub mod domain;
pub mod http;
pub mod import;
pub mod lifecycle;
pub mod mailbox;
pub mod mapping;
pub mod nurture;
pub mod outbound;
pub mod pipeline;
pub mod queue;
pub mod search;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use connectors::Inbound;
