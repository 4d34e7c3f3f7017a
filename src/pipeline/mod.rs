//! The pipeline: what an inbox row becomes. Until mappings, normalisation, dedup,
//! scoring and assignment land, inbound fields pass through onto a new lead.

mod passthrough;
pub mod worker;

use serde_json::Value;

use crate::store::Change;
use crate::store::inbox::InboxRow;

pub use passthrough::PassThrough;

/// The writes one inbox row turns into, and the lineage recorded on the row.
#[derive(Debug, Clone)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub result: Value,
}

/// A row that cannot be processed as it stands; kept on the row, retryable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PipelineError(pub String);

/// Turns one inbox row into a plan of writes. Implementations do not write.
pub trait Pipeline: Send + Sync + 'static {
    fn plan(&self, row: &InboxRow) -> Result<Plan, PipelineError>;
}
