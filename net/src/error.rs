//! The crate's error type: each variant names what failed, on what, and why.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid CIDR {cidr:?}: {reason}")]
    InvalidCidr { cidr: String, reason: String },

    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
    },

    #[error("netlink {op} on {target} failed: {source}")]
    Netlink {
        op: &'static str,
        target: String,
        #[source]
        source: io::Error,
    },

    #[error("{op} for namespace {path} failed: {source}")]
    Namespace {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{op} {path} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "no free pod IP left in {cidr} ({leases} leases held); delete pods, or run reconcile to free leases of pods that are gone"
    )]
    IpamExhausted { cidr: String, leases: usize },

    #[error("lease file {path} is corrupt: {reason}; remove it if no pod uses that IP")]
    CorruptLease { path: PathBuf, reason: String },

    #[error("{what} already exists and is not {expected}; remove it or pick another name")]
    Conflict { what: String, expected: String },

    #[error("a namespace helper thread panicked while {op}")]
    ThreadPanicked { op: &'static str },
}

impl NetError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn netlink(op: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        NetError::Netlink {
            op,
            target: target.into(),
            source,
        }
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetError::Netlink { source, .. }
            | NetError::Namespace { source, .. }
            | NetError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
