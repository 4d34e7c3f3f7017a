//! Spreadsheet imports: read a file, map its columns to lead fields, and submit its rows
//! to the durable inbox as `import:<id>` / `row:<n>`.

pub mod cells;
pub mod columns;
pub mod error;
pub mod job;
pub mod reader;
pub mod undo;
pub mod zoom_report;

pub use error::ImportError;
