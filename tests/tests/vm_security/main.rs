//! The security suite in the VM (`cargo xtask vm-test`): the attacks whose defence needs real
//! cgroup v2 controllers or Debian's 6.1 kernel. Each module is one class from docs/SECURITY.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod devices;
mod emptydir;
