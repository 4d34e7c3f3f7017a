//! What can go wrong reading a spreadsheet, each case with a message a user can act on.

/// A whole-file failure: nothing (more) is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("unsupported file type `{0}`: send xlsx, xlsm, xlsb, xls, ods, csv or tsv")]
    UnsupportedType(String),
    #[error("the file is corrupt or not a {format} file: {detail}")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error("the workbook is password-protected: remove the password and upload it again")]
    PasswordProtected,
    #[error(
        "the file would expand to more than {limit} bytes when decompressed ({detail}); refused as a possible zip bomb"
    )]
    TooLarge { limit: u64, detail: String },
    #[error("more than {limit} rows: split the file")]
    TooManyRows { limit: u64 },
    #[error("row {row} has more than {limit} columns")]
    TooManyColumns { row: u64, limit: usize },
    #[error("no sheet named `{wanted}`; the workbook has: {available}")]
    SheetNotFound { wanted: String, available: String },
    #[error("the sheet is empty: no header row and no data")]
    Empty,
    #[error("the sheet has a header row (row {header_row}) but no data rows")]
    HeaderOnly { header_row: u64 },
    #[error("mapping: {0}")]
    Mapping(String),
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("stopped: {0}")]
    Aborted(String),
    #[error("store: {0}")]
    Store(String),
}

impl From<std::io::Error> for ImportError {
    fn from(error: std::io::Error) -> Self {
        ImportError::Io(error.to_string())
    }
}

impl From<crate::store::StoreError> for ImportError {
    fn from(error: crate::store::StoreError) -> Self {
        ImportError::Store(error.to_string())
    }
}

impl ImportError {
    /// The row a read error is about, when there is one.
    pub fn row(&self) -> Option<u64> {
        match self {
            ImportError::TooManyColumns { row, .. } => Some(*row),
            ImportError::HeaderOnly { header_row } => Some(*header_row),
            _ => None,
        }
    }

    /// A short machine-readable code, stored on the import and answered in problems.
    pub fn code(&self) -> &'static str {
        match self {
            ImportError::UnsupportedType(_) => "unsupported-type",
            ImportError::Corrupt { .. } => "corrupt",
            ImportError::PasswordProtected => "password-protected",
            ImportError::TooLarge { .. } => "too-large",
            ImportError::TooManyRows { .. } => "too-many-rows",
            ImportError::TooManyColumns { .. } => "too-many-columns",
            ImportError::SheetNotFound { .. } => "sheet-not-found",
            ImportError::Empty => "empty",
            ImportError::HeaderOnly { .. } => "header-only",
            ImportError::Mapping(_) => "mapping",
            ImportError::Io(_) => "io",
            ImportError::Aborted(_) => "aborted",
            ImportError::Store(_) => "store",
        }
    }
}
