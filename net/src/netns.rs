//! Namespaces held without a process, and running code inside one.
//!
//! A namespace lives as long as something refers to it. `ip netns add` keeps
//! one alive by bind-mounting its nsfs file onto a plain file; podd does the
//! same for the pod sandbox's network, IPC and UTS namespaces, so a pod's
//! namespaces outlive the agent process and are found again by path after a
//! restart. Namespaces are *not* removed on drop, because they must survive
//! the agent; their owner calls `remove` when the pod is deleted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use tracing::{debug, warn};

use crate::error::{NetError, Result};

/// The default directory under which sandbox namespaces are held:
/// `/run/podd/netns/NAME`, `/run/podd/ipcns/NAME`, `/run/podd/utsns/NAME`.
pub const DEFAULT_NAMESPACE_ROOT: &str = "/run/podd";

/// The kinds of namespace a pod sandbox holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
}

impl NsKind {
    pub const SANDBOX: [NsKind; 3] = [NsKind::Net, NsKind::Ipc, NsKind::Uts];

    /// The `CLONE_NEW*` flag for `unshare`/`setns`.
    pub fn clone_flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }

    /// The file name under `/proc/PID/task/TID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }

    /// The directory under the namespace root that holds this kind.
    pub fn dir_name(self) -> &'static str {
        match self {
            NsKind::Net => "netns",
            NsKind::Ipc => "ipcns",
            NsKind::Uts => "utsns",
        }
    }
}

/// Checks a name used as a file name (namespace, lease owner, ...).
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let invalid = |reason: &str| NetError::InvalidName {
        what,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 200 {
        return Err(invalid("it is longer than 200 bytes"));
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err(invalid("it must not start with a dot"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(&format!(
            "it contains {bad:?}; use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// Runs `f` on a fresh thread that first joined the namespace held at `path`.
///
/// `setns` changes only the calling thread, and a thread that switched
/// namespaces must not go back to serving other work, so every call gets its
/// own short-lived thread. Sockets created inside `f` stay in that namespace
/// and may be returned and used from any thread.
pub fn run_in_namespace<F, R>(path: &Path, kind: NsKind, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file =
                    File::open(path).map_err(|e| NetError::io("open namespace file", path, e))?;
                nix::sched::setns(file.as_fd(), kind.clone_flag()).map_err(|e| {
                    NetError::Namespace {
                        op: "setns",
                        path: path.to_path_buf(),
                        source: io::Error::from(e),
                    }
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetError::ThreadPanicked {
                op: "running in a namespace",
            })?
    })
}

/// One namespace held by a bind mount at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedNamespace {
    kind: NsKind,
    path: PathBuf,
}

impl NamedNamespace {
    /// Creates a new namespace of `kind` held at `root/<kind dir>/name`
    /// (for a network namespace: `root/netns/name`).
    pub fn create(root: &Path, name: &str, kind: NsKind) -> Result<Self> {
        validate_name("namespace name", name)?;
        let path = root.join(kind.dir_name()).join(name);
        hold_new_namespaces(&[(kind, path.clone())], None)?;
        Ok(NamedNamespace { kind, path })
    }

    /// Adopts a namespace created earlier (for example by a previous agent
    /// process), checking that the path really holds a namespace.
    pub fn open(root: &Path, name: &str, kind: NsKind) -> Result<Self> {
        validate_name("namespace name", name)?;
        let path = root.join(kind.dir_name()).join(name);
        check_is_namespace(&path)?;
        Ok(NamedNamespace { kind, path })
    }

    pub fn kind(&self) -> NsKind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside this namespace on a helper thread.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        run_in_namespace(&self.path, self.kind, f)
    }

    /// Unmounts and removes the file; the namespace itself goes away once
    /// nothing else (a process, a socket, another mount) refers to it.
    pub fn remove(self) -> Result<()> {
        release_namespace_file(&self.path)
    }
}

/// The shared namespaces of one pod sandbox: network, IPC and UTS, created
/// together and held under `root/{netns,ipcns,utsns}/NAME`. Containers of the
/// pod `setns` into these paths; they get their own mount and PID namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNamespaces {
    name: String,
    net: PathBuf,
    ipc: PathBuf,
    uts: PathBuf,
}

impl SandboxNamespaces {
    /// Creates the three namespaces, with `hostname` set in the new UTS
    /// namespace (cut to 63 characters as Kubernetes does for long pod
    /// names, see [`pod_hostname`]). On failure nothing is left behind.
    pub fn create(root: &Path, name: &str, hostname: Option<&str>) -> Result<Self> {
        validate_name("sandbox name", name)?;
        let hostname = hostname.map(pod_hostname);
        if let Some(hostname) = hostname {
            validate_hostname(hostname)?;
        }
        let sandbox = Self::paths_for(root, name);
        hold_new_namespaces(&sandbox.kinds_and_paths(), hostname)?;
        debug!(sandbox = name, "created sandbox namespaces");
        Ok(sandbox)
    }

    /// Adopts the namespaces of a sandbox created earlier, for example by an
    /// agent process that has since restarted.
    pub fn open(root: &Path, name: &str) -> Result<Self> {
        validate_name("sandbox name", name)?;
        let sandbox = Self::paths_for(root, name);
        for (_, path) in sandbox.kinds_and_paths() {
            check_is_namespace(&path)?;
        }
        Ok(sandbox)
    }

    /// Removes whatever is left of sandbox `name` under `root`; succeeds if
    /// nothing is there. For cleanup after a crash half-way through.
    pub fn remove_by_name(root: &Path, name: &str) -> Result<()> {
        validate_name("sandbox name", name)?;
        Self::paths_for(root, name).remove()
    }

    /// The names of the sandboxes held under `root` (those with a network
    /// namespace file), for an agent that reconciles after a restart.
    pub fn list(root: &Path) -> Result<Vec<String>> {
        let dir = root.join(NsKind::Net.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetError::io("read namespace directory", &dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| NetError::io("read namespace directory", &dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn paths_for(root: &Path, name: &str) -> Self {
        SandboxNamespaces {
            name: name.to_string(),
            net: root.join(NsKind::Net.dir_name()).join(name),
            ipc: root.join(NsKind::Ipc.dir_name()).join(name),
            uts: root.join(NsKind::Uts.dir_name()).join(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn net_path(&self) -> &Path {
        &self.net
    }

    pub fn ipc_path(&self) -> &Path {
        &self.ipc
    }

    pub fn uts_path(&self) -> &Path {
        &self.uts
    }

    /// The path holding the namespace of `kind`.
    pub fn path(&self, kind: NsKind) -> &Path {
        match kind {
            NsKind::Net => &self.net,
            NsKind::Ipc => &self.ipc,
            NsKind::Uts => &self.uts,
        }
    }

    /// Each kind with its path, for a runtime that joins them all.
    pub fn kinds_and_paths(&self) -> Vec<(NsKind, PathBuf)> {
        NsKind::SANDBOX
            .iter()
            .map(|kind| (*kind, self.path(*kind).to_path_buf()))
            .collect()
    }

    /// Runs `f` in the sandbox's network namespace on a helper thread.
    pub fn run_in_net<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        run_in_namespace(&self.net, NsKind::Net, f)
    }

    /// Unmounts and removes all three files. Tries every one even if one
    /// fails, and reports the first failure.
    pub fn remove(self) -> Result<()> {
        let mut first_error = None;
        for (_, path) in self.kinds_and_paths() {
            if let Err(e) = release_namespace_file(&path) {
                warn!(path = %path.display(), error = %e, "could not release namespace file");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// The hostname Kubernetes gives a pod named `name`: at most 63 characters,
/// without a trailing '-' or '.' after the cut.
pub fn pod_hostname(name: &str) -> &str {
    if name.len() <= 63 {
        return name;
    }
    let mut end = 63;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.'])
}

fn validate_hostname(hostname: &str) -> Result<()> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 64
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidName {
            what: "hostname",
            name: hostname.to_string(),
            reason: "a hostname is 1 to 64 letters, digits, '-' or '.'".into(),
        })
    }
}

/// Creates new namespaces of the given kinds on one helper thread and holds
/// each by bind-mounting `/proc/self/task/TID/ns/KIND` onto its path.
fn hold_new_namespaces(targets: &[(NsKind, PathBuf)], hostname: Option<&str>) -> Result<()> {
    // The mount-point files first, exclusively, so two creators of the same
    // name cannot both succeed.
    let mut created: Vec<&Path> = Vec::new();
    for (_, path) in targets {
        if let Err(e) = create_mount_point(path) {
            for done in &created {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
        created.push(path);
    }

    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| bind_new_namespaces(targets, hostname))
            .join()
            .map_err(|_| NetError::ThreadPanicked {
                op: "creating namespaces",
            })?
    });
    if result.is_err() {
        for (_, path) in targets {
            if let Err(e) = release_namespace_file(path) {
                warn!(path = %path.display(), error = %e, "cleanup after a failed namespace creation");
            }
        }
    }
    result
}

/// Runs on the helper thread: unshare, set the hostname, bind-mount.
fn bind_new_namespaces(targets: &[(NsKind, PathBuf)], hostname: Option<&str>) -> Result<()> {
    let flags = targets
        .iter()
        .fold(CloneFlags::empty(), |flags, (kind, _)| {
            flags | kind.clone_flag()
        });
    nix::sched::unshare(flags).map_err(|e| NetError::Namespace {
        op: "unshare",
        path: targets[0].1.clone(),
        source: io::Error::from(e),
    })?;
    // Only ever in a UTS namespace of our own, never the host's.
    if let Some(hostname) = hostname.filter(|_| flags.contains(CloneFlags::CLONE_NEWUTS)) {
        // This thread is now in the new UTS namespace, so only the pod sees it.
        nix::unistd::sethostname(hostname).map_err(|e| NetError::Namespace {
            op: "sethostname",
            path: targets[0].1.clone(),
            source: io::Error::from(e),
        })?;
    }
    let tid = nix::unistd::gettid();
    for (kind, path) in targets {
        let source = PathBuf::from(format!("/proc/self/task/{tid}/ns/{}", kind.proc_name()));
        nix::mount::mount(
            Some(&source),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| NetError::Namespace {
            op: "bind-mount",
            path: path.clone(),
            source: io::Error::from(e),
        })?;
    }
    Ok(())
}

fn create_mount_point(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| NetError::io("create directory", parent, e))?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(NetError::Conflict {
            what: format!("namespace file {}", path.display()),
            expected: "free (another sandbox with this name exists)".into(),
        }),
        Err(e) => Err(NetError::io("create namespace file", path, e)),
    }
}

fn check_is_namespace(path: &Path) -> Result<()> {
    let stat = nix::sys::statfs::statfs(path).map_err(|e| NetError::Namespace {
        op: "statfs",
        path: path.to_path_buf(),
        source: io::Error::from(e),
    })?;
    if stat.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(NetError::Conflict {
            what: path.display().to_string(),
            expected: "a namespace bind mount (nsfs)".into(),
        });
    }
    Ok(())
}

/// Releases every namespace held under `root` (all kinds), unmounts the
/// shared directory mounts and removes the directories: the full reset of a
/// namespace root, for node decommissioning and test cleanup.
pub fn release_namespace_root(root: &Path) -> Result<()> {
    for kind in NsKind::SANDBOX {
        let dir = root.join(kind.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(NetError::io("read namespace directory", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| NetError::io("read namespace directory", &dir, e))?;
            release_namespace_file(&entry.path())?;
        }
        unmount_all(&dir)?;
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(NetError::io("remove namespace directory", &dir, e)),
        }
    }
    Ok(())
}

/// Peels every mount stacked on `path`; none is fine.
fn unmount_all(path: &Path) -> Result<()> {
    loop {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(NetError::Namespace {
                    op: "unmount",
                    path: path.to_path_buf(),
                    source: io::Error::from(e),
                });
            }
        }
    }
}

/// Unmounts (lazily, so a racing reader cannot make it fail) and removes one
/// namespace file. Missing mounts and files are fine: this is idempotent.
pub fn release_namespace_file(path: &Path) -> Result<()> {
    // A file may carry more than one mount if something went wrong earlier.
    unmount_all(path)?;
    // Unlinking matters beyond tidiness: the kernel (3.18+) then also detaches
    // the copies of this mount held by other mount namespaces (containers made
    // while the pod existed), which would otherwise keep the namespace alive.
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io("remove namespace file", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("n", "pod-1_a.b").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(201)] {
            assert!(validate_name("n", bad).is_err(), "{bad:?}");
        }
        assert!(validate_hostname("web-0").is_ok());
        assert_eq!(pod_hostname("web-0"), "web-0");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(pod_hostname(&long), "a".repeat(62));
        assert!(validate_hostname(pod_hostname(&"x".repeat(300))).is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("a_b").is_err());
    }
}
