//! The runtime's error type.

use std::path::PathBuf;

/// Everything that can go wrong while creating, running or removing a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A system call failed outside of a path context.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// Resolving or creating a container-side path inside the rootfs failed (pathrs: symlinks
    /// stay inside the root, magic links are refused).
    #[error("{what} {path} inside the container's root: {why}", path = path.display(), why = chain(source))]
    InRoot {
        /// What was being done.
        what: &'static str,
        /// The container-side path.
        path: PathBuf,
        /// Why it failed.
        source: pathrs::error::Error,
    },
    /// config.json could not be read or parsed.
    #[error("invalid bundle config {path}: {message}", path = path.display())]
    BadConfig {
        /// The config.json path.
        path: PathBuf,
        /// The parse or validation message.
        message: String,
    },
    /// The spec is well-formed but asks for something unsupported or inconsistent.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A container id that is empty or has characters that cannot name a directory.
    #[error("invalid container id {0:?}: use letters, digits, '.', '_', '-' (max 1024 chars)")]
    InvalidId(String),
    /// `create` of an id that exists.
    #[error("container {0:?} already exists; delete it first")]
    AlreadyExists(String),
    /// An id that does not exist under the state root.
    #[error("container {id:?} does not exist under {root}", root = root.display())]
    NotFound {
        /// The id.
        id: String,
        /// The state root that was searched.
        root: PathBuf,
    },
    /// An operation that the container's status does not allow.
    #[error("container {id:?} is {status}: cannot {op}{hint}")]
    BadStatus {
        /// The id.
        id: String,
        /// Its current status.
        status: crate::state::Status,
        /// The refused operation.
        op: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A cgroup controller the spec needs is not available.
    #[error(
        "cgroup controller {controller:?} is not available in {root} (available: {available:?}), \
         but the spec sets {setting}; run on a host whose cgroup v2 tree has the {controller} \
         controller, or remove that limit from linux.resources",
        root = root.display()
    )]
    ControllerMissing {
        /// The controller name, e.g. "memory".
        controller: String,
        /// The cgroup root that was checked.
        root: PathBuf,
        /// The controllers listed in the root's cgroup.controllers.
        available: String,
        /// The spec setting that needs the controller.
        setting: String,
    },
    /// No cgroup v2 hierarchy was found.
    #[error(
        "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified; pass --cgroup-root"
    )]
    NoCgroup2,
    /// A hook failed.
    #[error("{kind} hook {path} failed: {message}", path = path.display())]
    Hook {
        /// prestart, createRuntime, ...
        kind: &'static str,
        /// The hook's executable.
        path: PathBuf,
        /// Exit status or spawn error.
        message: String,
    },
    /// The container's init process reported a failure while setting up.
    #[error("container init failed: {0}")]
    Init(String),
    /// Seccomp filter compilation or loading failed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A timeout waiting for something.
    #[error("timed out {0}")]
    Timeout(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wrap an `io::Error` with what and where.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}

/// An error with its sources, "outer: inner: ..." (pathrs' own Display names only the step).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Wrap a pathrs error with what and which container-side path.
pub(crate) fn root_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(pathrs::error::Error) -> Error {
    let path = path.into();
    move |source| Error::InRoot { what, path, source }
}

/// Wrap a `nix::Error` with a description.
pub(crate) fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Sys { what, source }
}
