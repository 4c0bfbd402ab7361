//! API errors and their Kubernetes Status form.

use podd_api::validation::ValidationErrors;
use podd_api::{Kind, Status};
use podd_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error(
        "the object has been modified: {kind} {name:?} is at resourceVersion {actual}, the request had {expected}; read it again and retry"
    )]
    Conflict {
        kind: &'static str,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("{} {name:?} is invalid: {errors}", kind.name())]
    Invalid {
        kind: Kind,
        name: String,
        errors: ValidationErrors,
    },
    #[error("resource version too old: {0}; relist and watch from the list's resourceVersion")]
    Expired(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFoundPath(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A request body or a stored object over its size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Over a cap on open watches (429); the client may retry after `retry_after_seconds`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_seconds: u32,
    },
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    Timeout(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NotFoundPath(_) => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::Expired(_) => 410,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Unavailable(_) => 503,
            ApiError::TooLarge(_) => 413,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Timeout(_) => 408,
            ApiError::Store(StoreError::Compacted { .. }) => 410,
            ApiError::Store(StoreError::Conflict { .. }) => 409,
            ApiError::Store(StoreError::AlreadyExists { .. }) => 409,
            ApiError::Store(StoreError::NotFound { .. }) => 404,
            ApiError::Store(_) | ApiError::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NotFoundPath(_) => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Expired(_) => "Expired",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Store(StoreError::Compacted { .. }) => "Expired",
            ApiError::Store(StoreError::Conflict { .. }) => "Conflict",
            ApiError::Store(StoreError::AlreadyExists { .. }) => "AlreadyExists",
            ApiError::Store(StoreError::NotFound { .. }) => "NotFound",
            ApiError::Store(_) | ApiError::Internal(_) => "InternalError",
        }
    }

    pub fn to_status(&self) -> Status {
        match self {
            ApiError::Invalid { kind, name, errors } => Status::invalid(*kind, name, errors),
            other => Status::failure(other.code(), other.reason(), other.to_string()),
        }
    }
}
