//! The security suite on the host: each module is one class of attack from docs/SECURITY.md,
//! written as the attack itself, which must fail. Tests that need what this host lacks (real
//! cgroup v2 controllers, Debian's 6.1 kernel) are in `vm_security`, run by `cargo xtask vm-test`.
// The tests print what they tried; `--show-output` shows it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod agent_proxy;
mod devices;
mod emptydir;
mod fd_escape;
mod host_users;
mod hostile_images;
mod hostile_rootfs;
mod oversized;
mod reset;
mod slowloris;
