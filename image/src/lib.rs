//! podd-image: OCI images for podd containers.
//!
//! - [`Layout`]: read images from an OCI image layout directory; [`ImageStore::import_archive`]
//!   from an oci-archive tarball; [`registry::pull`] (via [`ImageStore::prepare`]) from an
//!   OCI/Docker v2 registry over HTTP or HTTPS. Every blob's digest and size is verified.
//! - [`ImageStore`]: a content-addressed store where each layer (tar, tar+gzip, tar+zstd) is
//!   unpacked once, keyed by its diff_id, with OCI whiteouts turned into overlayfs whiteouts.
//! - [`OverlayRootfs`]: a container's rootfs, an overlayfs over the image's layers, owned and torn
//!   down by one value.
//! - [`config`]: the image's Entrypoint/Cmd/Env/WorkingDir/User and Kubernetes' merge rules.
//! - [`busybox`]: the busybox images `podd image seed-busybox` builds from the host's busybox.
//! - `testing` (feature `testing`, for tests only): hostile layers and a loopback registry.

// Every [dependencies] entry is used by the library (dev-dependencies are the tests').
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod busybox;
pub mod config;
pub mod digest;
pub mod error;
pub mod layout;
pub mod media;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod unpack;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ImageDefaults, MergedProcess, ResolvedUser, merge, resolve_user};
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use layout::{LayerRef, Layout, LayoutRef, ResolvedImage};
pub use media::Compression;
pub use registry::RegistryOptions;
pub use rootfs::OverlayRootfs;
pub use store::{GcStats, ImageSource, ImageStore, PullPolicy, StoreLimits, UnpackedImage};
