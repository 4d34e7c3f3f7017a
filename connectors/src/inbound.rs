use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Flat, source-shaped fields of an inbound record, before mapping.
pub type Fields = Map<String, Value>;

/// One thing that arrived through a channel, as the channel said it.
///
/// `raw` keeps the exact bytes the provider sent so a record can always be re-derived
/// (a fixed mapping, a new connector version) from what was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// The channel and instance, e.g. `partner:acme`, `form:contact`, `whatsapp`.
    pub source: String,
    /// The provider's own id for this event, when it has one; replays share it.
    pub external_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub fields: Fields,
    pub raw: Vec<u8>,
}
