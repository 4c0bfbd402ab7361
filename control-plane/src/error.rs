//! API errors and their Kubernetes Status form.

use podd_api::validation::ValidationErrors;
use podd_api::{Kind, Status};

use podd_store::StoreError;

/// The resource name Kubernetes' messages use (`pods "web" not found`).
fn plural(kind: &str) -> &str {
    Kind::ALL
        .into_iter()
        .find(|k| k.name() == kind)
        .map_or(kind, |k| k.plural())
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{} {name:?} not found", plural(kind))]
    NotFound { kind: &'static str, name: String },
    #[error("{} {name:?} already exists", plural(kind))]
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
    /// A request body in a media type the server does not take (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client accepts no media type the server answers with (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// A conflict other than a resourceVersion mismatch (409): an apply's field conflicts, a
    /// precondition on uid.
    #[error("{0}")]
    ConflictMsg(String),
    /// A server-side apply that would change fields other managers own (409), one cause per
    /// field.
    #[error("{message}")]
    ApplyConflict {
        message: String,
        causes: Vec<podd_api::StatusCause>,
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
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ConflictMsg(_)
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::NotAcceptable(_) => 406,
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
            ApiError::Conflict { .. }
            | ApiError::ConflictMsg(_)
            | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
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

    /// The metav1 Status this error is answered with (`kind: Status, apiVersion: v1`).
    pub fn to_status(&self) -> Status {
        let mut st = match self {
            ApiError::Invalid { kind, name, errors } => {
                podd_api::object::status_invalid(*kind, name, errors)
            }
            other => podd_api::status_failure(other.code(), other.reason(), other.to_string()),
        };
        if let ApiError::ApplyConflict { causes, .. } = self {
            st.details = Some(podd_api::StatusDetails {
                causes: Some(causes.clone()),
                ..Default::default()
            });
        }
        if let ApiError::NotFound { kind, name } | ApiError::AlreadyExists { kind, name } = self {
            let k = podd_api::Kind::ALL.into_iter().find(|k| k.name() == *kind);
            st.details = Some(podd_api::StatusDetails {
                name: Some(name.clone()),
                kind: k.map(|k| k.plural().to_string()),
                group: k.map(|k| k.group().to_string()).filter(|g| !g.is_empty()),
                ..Default::default()
            });
        }
        st
    }

    /// The Status as JSON, with its `kind` and `apiVersion`.
    pub fn to_status_json(&self) -> serde_json::Value {
        status_json(&self.to_status())
    }
}

/// A Status as JSON, with `kind: Status` and `apiVersion: v1` whatever the type's serializer
/// writes.
pub fn status_json(st: &Status) -> serde_json::Value {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), "Status".into());
        o.insert("apiVersion".into(), "v1".into());
    }
    v
}
