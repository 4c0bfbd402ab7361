//! podd-runtime: Linux containers from OCI runtime specs, on namespaces and cgroups v2, and the
//! `podd-oci` binary that exposes them through the OCI runtime command line.
//!
//! # Using the library (the pod layer)
//!
//! Build an [`oci_spec::runtime::Spec`] in code (or load `config.json` with
//! [`spec::load_bundle`]), pick a state root and a cgroup path, and drive the lifecycle:
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
//! use podd_runtime::{Container, CreateOptions, ExecOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut spec = Spec::default(); // runc-like defaults: /proc, /dev, masked paths, caps
//! spec.set_root(Some(oci_spec::runtime::RootBuilder::default().path("/var/lib/podd/pods/U/c1/rootfs").build()?));
//! // Join the pod's network, IPC and UTS namespaces by path; get new mount, PID and cgroup ones.
//! let mut namespaces = vec![];
//! for (t, path) in [
//!     (LinuxNamespaceType::Network, Some("/run/podd/netns/U")),
//!     (LinuxNamespaceType::Ipc, Some("/proc/1234/ns/ipc")),
//!     (LinuxNamespaceType::Uts, Some("/proc/1234/ns/uts")),
//!     (LinuxNamespaceType::Mount, None),
//!     (LinuxNamespaceType::Pid, None),
//!     (LinuxNamespaceType::Cgroup, None),
//! ] {
//!     let mut b = LinuxNamespaceBuilder::default().typ(t);
//!     if let Some(p) = path { b = b.path(PathBuf::from(p)); }
//!     namespaces.push(b.build()?);
//! }
//! let linux = spec.linux().clone().unwrap_or_default();
//! spec.set_linux(Some(LinuxBuilder::default()
//!     .namespaces(namespaces)
//!     .cgroups_path(PathBuf::from("/podd/pods/U/c1")) // relative to the cgroup root below
//!     .masked_paths(linux.masked_paths().clone().unwrap_or_default())
//!     .readonly_paths(linux.readonly_paths().clone().unwrap_or_default())
//!     .build()?));
//!
//! let mut opts = CreateOptions::new("/run/podd/runtime");        // state root
//! opts.cgroup_root = Some("/sys/fs/cgroup".into());              // None: detect the cgroup2 mount
//! let mut c = Container::create("U-c1", Path::new("/var/lib/podd/pods/U/c1"), &spec, &opts)?;
//! c.start()?;                                   // the process execs now
//! // Run something else inside it (joins its namespaces and cgroup, gets its seccomp filter):
//! let mut p = spec.process().clone().unwrap();
//! p.set_args(Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]));
//! let pid = c.exec(&p, &ExecOptions::default())?; // our child: waitpid(pid) for its status
//! # let _ = pid;
//! let stats = c.stats()?;                       // cpu.stat, memory.current, memory.events, pids.current
//! # let _ = stats;
//! c.kill(nix::sys::signal::Signal::SIGTERM, false)?;
//! let code = c.wait()?;                         // init is the caller's child (CLONE_PARENT)
//! # let _ = code;
//! // Later, from any process: Container::load(root, id)?.delete(false)?
//! c.delete(false)?;                             // removes cgroup, state; runs poststop hooks
//! # Ok(()) }
//! ```
//!
//! Notes for callers:
//! - `create` forks. The forked setup processes only make system calls and allocate (glibc's
//!   fork handlers keep malloc usable); they do not log, so calling from a multi-threaded
//!   program is fine as long as no other thread holds the environment lock (hooks that run
//!   inside the container spawn a process).
//! - The container's init is a child of the caller, so a long-lived caller must reap it
//!   ([`Container::wait`] or its own `waitpid`); otherwise it stays a zombie until the caller
//!   exits. [`Container::delete`] reaps it if it can.
//! - The cgroup is `<cgroup root>/<linux.cgroupsPath>` (default `podd-oci/<id>`); limits in
//!   `linux.resources` enable the controllers they need in the ancestors' subtree_control and
//!   fail with [`Error::ControllerMissing`] where the controller is not available.

pub mod cgroups;
pub mod container;
pub mod devices;
pub mod error;
pub mod fds;
pub mod hooks;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;
#[cfg(target_arch = "x86_64")]
mod syscall_table_x86_64;

pub use container::{Container, CreateOptions, ExecOptions};
pub use error::{Error, Result};
pub use state::{OciState, Status};

/// The OCI runtime spec version reported in state.
pub const OCI_VERSION: &str = "1.0.2";
