//! The crate's error type: every message names the image or path involved and, where it helps, the fix.

use std::io;
use std::path::PathBuf;

/// Errors from reading, verifying, pulling, unpacking and mounting images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error(
        "image {image}: not found in {location} (available: {}); check the image name and tag",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NotFound {
        image: String,
        location: String,
        available: Vec<String>,
    },

    #[error(
        "image {image}: blob {blob} is corrupted: expected digest {expected}, got {actual}; re-fetch or rebuild the image"
    )]
    DigestMismatch {
        image: String,
        blob: String,
        expected: String,
        actual: String,
    },

    #[error(
        "image {image}: blob {blob} has size {actual} bytes, but its descriptor says {expected}; re-fetch or rebuild the image"
    )]
    SizeMismatch {
        image: String,
        blob: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "image {image}: layer {layer} uncompresses to {actual}, but the config's diff_id is {expected}; the image is corrupted"
    )]
    DiffIdMismatch {
        image: String,
        layer: String,
        expected: String,
        actual: String,
    },

    #[error(
        "image {image}: blob {blob} has unsupported media type {media_type:?} (supported: {supported}); convert the image to OCI or Docker v2 with tar, tar+gzip or tar+zstd layers"
    )]
    UnsupportedMediaType {
        image: String,
        blob: String,
        media_type: String,
        supported: &'static str,
    },

    #[error("image {image}: blob {blob} is missing from {location}; the layout is incomplete")]
    MissingBlob {
        image: String,
        blob: String,
        location: String,
    },

    #[error("image {image}: {what} is not valid: {reason}")]
    Invalid {
        image: String,
        what: String,
        reason: String,
    },

    #[error("image {image}: layer {layer} cannot be unpacked: {reason}")]
    Layer {
        image: String,
        layer: String,
        reason: String,
    },

    #[error(
        "image {image}: layer {layer} is over the {what} ({limit}); unpacking stopped and nothing of the layer was kept; {hint}"
    )]
    LimitExceeded {
        image: String,
        layer: String,
        what: String,
        limit: u64,
        hint: String,
    },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("mounting the overlay rootfs at {}: {source}", target.display())]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("image {image}: registry {registry}: {reason}")]
    Registry {
        image: String,
        registry: String,
        reason: String,
    },

    #[error("user {user:?} of image {image}: {reason}")]
    User {
        image: String,
        user: String,
        reason: String,
    },
}

impl ImageError {
    pub(crate) fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
