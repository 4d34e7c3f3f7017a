//! Canonical records and the value types they are made of.

pub mod kind;
pub mod value;

pub use kind::{FieldDef, FieldType, RecordKind};
pub use value::{InvalidValue, SqlValue};
