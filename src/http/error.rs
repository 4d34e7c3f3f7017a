//! Every error answer is `application/problem+json` (RFC 9457), built here and only here.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::import::ImportError;
use crate::queue::AcceptError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    /// Fields that failed validation, each with its message (the `errors` member).
    #[error("{} field(s) are invalid", .0.len())]
    Invalid(Vec<FieldProblem>),
    /// A webhook whose signature or timestamp did not verify.
    #[error("signature missing, invalid or expired")]
    BadSignature,
    /// A channel without its secret configured is not served at all.
    #[error("{0} is not configured")]
    NotConfigured(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// A spreadsheet that cannot be imported; `row`/`column` say where, when known.
    #[error("{detail}")]
    Import {
        status: StatusCode,
        code: &'static str,
        detail: String,
        row: Option<u64>,
        column: Option<String>,
    },
}

/// One invalid field in a 422 answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// The problem document answered for every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Per-field validation errors (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
    /// For spreadsheet imports: the row the problem is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// For spreadsheet imports: the column the problem is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "2";

impl ApiError {
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Invalid(_) => "validation",
            ApiError::BadSignature => "bad-signature",
            ApiError::NotConfigured(_) => "not-configured",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::Import { code, .. } => code,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadSignature => StatusCode::UNAUTHORIZED,
            ApiError::NotConfigured(_) => StatusCode::NOT_FOUND,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Import { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
        let problem = Problem {
            kind: format!("https://leadgate.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match self {
                ApiError::Invalid(errors) => Some(errors.clone()),
                _ => None,
            },
            row: match self {
                ApiError::Import { row, .. } => *row,
                _ => None,
            },
            column: match self {
                ApiError::Import { column, .. } => column.clone(),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            ApiError::Unauthorized => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(problem)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(why) => ApiError::Unavailable(why),
            StoreError::NotFound { .. } => ApiError::NotFound,
            StoreError::UnknownField { .. } | StoreError::InvalidValue(_) => {
                ApiError::Unprocessable(error.to_string())
            }
            StoreError::VersionConflict { .. } | StoreError::Conflict(_) => {
                ApiError::Conflict(error.to_string())
            }
            StoreError::Migrate(_) | StoreError::Database(_) => {
                ApiError::Internal(error.to_string())
            }
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        let status = match &error {
            ImportError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImportError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ImportError::Mapping(_) | ImportError::SheetNotFound { .. } => StatusCode::BAD_REQUEST,
            ImportError::Io(_) | ImportError::Aborted(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ImportError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::Import {
            status,
            code: error.code(),
            detail: error.to_string(),
            row: error.row(),
            column: None,
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(error: AcceptError) -> Self {
        match error {
            AcceptError::Unavailable(why) | AcceptError::QueueUnavailable(why) => {
                ApiError::Unavailable(why)
            }
            AcceptError::ShuttingDown => ApiError::Unavailable("shutting down".into()),
            AcceptError::Store(why) => ApiError::Internal(why),
        }
    }
}
