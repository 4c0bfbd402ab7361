//! The content-addressed image store: verified blobs, and each layer unpacked once.
//!
//! ```text
//! <root>/oci-layout, index.json    the store is itself an OCI layout (pulled images are tagged here)
//! <root>/blobs/sha256/<hex>         verified blobs (pulls and oci-archive imports)
//! <root>/layers/<diff_id hex>/      one unpacked layer, keyed by its uncompressed digest
//! <root>/locks/                     flock files that serialise concurrent unpacks and index writes
//! <root>/tmp/                       in-flight downloads and unpacks (renamed into place when done)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, MediaType};

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::layout::{self, LayerRef, Layout, LayoutRef, ResolvedImage};
use crate::media::Compression;
use crate::registry::{self, RegistryOptions};
use crate::unpack;

/// Where a container's image comes from, as written in a pod's `image` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `oci:PATH[:REF]`: an OCI image layout directory.
    Layout { path: PathBuf, reference: String },
    /// `oci-archive:PATH[:REF]`: a tar of an OCI image layout.
    Archive { path: PathBuf, reference: String },
    /// Anything else: a registry reference (`HOST[:PORT]/REPO[:TAG|@DIGEST]`).
    Registry(String),
}

impl FromStr for ImageSource {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<ImageSource> {
        let split = |rest: &str| -> Result<(PathBuf, String)> {
            let (path, reference) = rest.split_once(':').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(ImageError::InvalidReference {
                    reference: s.to_string(),
                    reason: "the path is empty; write oci:PATH[:NAME:TAG] or oci-archive:PATH[:NAME:TAG]".into(),
                });
            }
            Ok((PathBuf::from(path), reference.to_string()))
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, reference) = split(rest)?;
            Ok(ImageSource::Layout { path, reference })
        } else if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, reference) = split(rest)?;
            Ok(ImageSource::Archive { path, reference })
        } else if s.is_empty() {
            Err(ImageError::InvalidReference {
                reference: s.to_string(),
                reason: "the image is empty; set the container's image".into(),
            })
        } else {
            Ok(ImageSource::Registry(s.to_string()))
        }
    }
}

/// Kubernetes' imagePullPolicy, for registry images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy of a container: its `imagePullPolicy` (which the API server defaults), or,
    /// when absent, the same default ([`podd_api::defaults::image_pull_policy`]: `Always` for
    /// an image tagged `latest` or untagged, else `IfNotPresent`). The one place a node
    /// decides it.
    pub fn for_container(c: &podd_api::Container) -> Result<PullPolicy> {
        let image = c.image.as_deref().unwrap_or_default();
        let policy = c
            .image_pull_policy
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| podd_api::defaults::image_pull_policy(image));
        PullPolicy::parse(policy, image)
    }

    /// An `imagePullPolicy` value; `image` is named in the error.
    pub fn parse(policy: &str, image: &str) -> Result<PullPolicy> {
        match policy {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(ImageError::InvalidReference {
                reference: image.to_string(),
                reason: format!(
                    "imagePullPolicy {other:?} is not one of Always, IfNotPresent, Never"
                ),
            }),
        }
    }
}

/// An image whose layers are all unpacked in the store, ready for an overlay rootfs.
#[derive(Debug, Clone)]
pub struct UnpackedImage {
    pub name: String,
    pub manifest_digest: Digest,
    pub config: ImageConfiguration,
    /// What a container status reports as its `imageID`: `<registry>/<repository>@<manifest
    /// digest>` for an image pulled from a registry, `podd-local://<name>@<config digest>`
    /// for a node-local one (imported, seeded, or from an OCI layout).
    pub image_id: String,
    /// The unpacked layer directories, bottom layer first.
    pub layer_dirs: Vec<PathBuf>,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub layers_removed: usize,
    pub tmp_removed: usize,
}

/// Caps on what the store unpacks, against decompression bombs and layers with millions of
/// files. The defaults fit real images; raise them for a trusted image that needs more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Unpacked bytes of one layer (the uncompressed tar, and the file data written).
    pub max_layer_bytes: u64,
    /// Unpacked bytes of all the layers one `unpack` of an image adds to the store.
    pub max_image_bytes: u64,
    /// Tar entries in one layer.
    pub max_layer_entries: u64,
    /// Bytes of one entry path or link target.
    pub max_path_len: u64,
}

impl StoreLimits {
    pub const DEFAULT_MAX_LAYER_BYTES: u64 = unpack::UnpackLimits::DEFAULT_MAX_BYTES;
    pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 32 << 30;
    pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = unpack::UnpackLimits::DEFAULT_MAX_ENTRIES;
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_layer_bytes: Self::DEFAULT_MAX_LAYER_BYTES,
            max_image_bytes: Self::DEFAULT_MAX_IMAGE_BYTES,
            max_layer_entries: Self::DEFAULT_MAX_LAYER_ENTRIES,
            max_path_len: unpack::UnpackLimits::DEFAULT_MAX_PATH_LEN,
        }
    }
}

/// The mode of every directory of the store: only root may reach image content (a layer may
/// hold setuid-root binaries and device nodes).
const STORE_DIR_MODE: u32 = 0o700;

/// The image store rooted at one directory (default [`ImageStore::DEFAULT_ROOT`]).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: StoreLimits,
}

impl ImageStore {
    pub const DEFAULT_ROOT: &'static str = "/var/lib/podd/images";

    /// Opens (creating if needed) the store at `root`. The path must not contain `:` or `,`,
    /// which overlayfs mount options cannot carry.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore> {
        Self::open_with(root, StoreLimits::default())
    }

    /// [`ImageStore::open`] with limits other than the defaults.
    pub fn open_with(root: impl Into<PathBuf>, limits: StoreLimits) -> Result<ImageStore> {
        let root = root.into();
        let root_str = root.to_string_lossy();
        if root_str.contains(':') || root_str.contains(',') {
            return Err(ImageError::io(
                "opening the image store",
                &root,
                io::Error::other(
                    "the path contains ':' or ',', which overlayfs cannot take; choose another directory",
                ),
            ));
        }
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|e| ImageError::io("creating the image store's parent", parent, e))?;
        }
        for sub in ["", "blobs", "blobs/sha256", "layers", "locks", "tmp"] {
            private_dir(&root.join(sub))?;
        }
        let store = ImageStore { root, limits };
        let marker = store.root.join("oci-layout");
        if !marker.exists() {
            write_atomic(&store, &marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.layout().index_path().exists() {
            let empty = empty_index();
            let data = serde_json::to_vec(&empty)
                .map_err(io::Error::other)
                .map_err(|e| {
                    ImageError::io("encoding the store index", store.layout().index_path(), e)
                })?;
            write_atomic(&store, &store.layout().index_path(), &data)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The store as an OCI layout (its blobs and pulled images).
    pub fn layout(&self) -> Layout {
        Layout::at(self.root.clone())
    }

    /// Where the layer with this uncompressed digest is (or will be) unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes an exclusive flock on `locks/<name>`, released when the guard drops.
    pub(crate) fn lock(&self, name: &str) -> Result<Flock<File>> {
        let path = self.root.join("locks").join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io("opening the lock file", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| ImageError::io("locking", &path, io::Error::from(e)))
    }

    /// Reads an image from an OCI layout directory (verifying manifest and config).
    pub fn resolve_layout(&self, dir: &Path, reference: &str) -> Result<ResolvedImage> {
        let label = label("oci", dir, reference);
        let r = LayoutRef::parse(reference)?;
        Layout::open(dir)?.resolve(&label, &r)
    }

    /// Imports an oci-archive: its blobs are verified while copied into the store, then the image
    /// is resolved from them. A failed import leaves no files behind.
    pub fn import_archive(&self, archive: &Path, reference: &str) -> Result<ResolvedImage> {
        let label = label("oci-archive", archive, reference);
        let staging = tempfile::Builder::new()
            .prefix("archive-")
            .tempdir_in(self.tmp_dir())
            .map_err(|e| ImageError::io("creating a staging directory in", self.tmp_dir(), e))?;
        extract_archive(&label, archive, staging.path())?;
        let staged = Layout::open(staging.path())?;
        let r = LayoutRef::parse(reference)?;
        let image = staged.resolve(&label, &r)?;
        // Every staged blob was verified on extraction; move the image's blobs into the store.
        let mut digests = vec![image.manifest_digest.clone()];
        digests.push(layout::parse_digest(
            &label,
            image.manifest.config().digest().as_ref(),
        )?);
        digests.extend(image.layers.iter().map(|l| l.digest.clone()));
        for d in &digests {
            let to = self.layout().blob_path(d);
            if !to.exists() {
                let from = staged.blob_path(d);
                fs::rename(&from, &to).map_err(|e| {
                    ImageError::io("moving a verified blob into the store", &from, e)
                })?;
            }
        }
        Ok(ResolvedImage {
            blobs: self.layout(),
            ..image
        })
    }

    /// An image previously pulled into the store, by its registry reference.
    pub fn resolve_local(&self, reference: &str) -> Result<ResolvedImage> {
        let layout = self.layout();
        let index = layout.read_index()?;
        let found = index
            .manifests()
            .iter()
            .find(|d| layout::ref_name(d).as_deref() == Some(reference))
            .ok_or_else(|| ImageError::NotFound {
                image: reference.to_string(),
                location: format!("the local image store {}", self.root.display()),
                available: index
                    .manifests()
                    .iter()
                    .filter_map(layout::ref_name)
                    .collect(),
            })?;
        layout.resolve_descriptor(reference, found)
    }

    /// Copies the image `reference` of the OCI layout at `dir` into the store under `name`, so
    /// that pods run it by that name with no registry (air-gapped nodes; the quickstart's
    /// seeded busybox images). Every blob is verified on the way in.
    pub fn import_layout(&self, dir: &Path, reference: &str, name: &str) -> Result<ResolvedImage> {
        let image = self.resolve_layout(dir, reference)?;
        let src = Layout::open(dir)?;
        let config = layout::parse_digest(&image.name, image.manifest.config().digest().as_ref())?;
        let mut digests = vec![image.manifest_digest.clone(), config];
        digests.extend(image.layers.iter().map(|l| l.digest.clone()));
        let mut manifest_size = 0;
        for d in &digests {
            let from = src.blob_path(d);
            let file = File::open(&from).map_err(|e| ImageError::io("reading", &from, e))?;
            let size = file
                .metadata()
                .map_err(|e| ImageError::io("reading", &from, e))?
                .len();
            if *d == image.manifest_digest {
                manifest_size = size;
            }
            // Streamed through the hasher: a layer is never held in memory.
            self.put_blob_from(&image.name, d, size, file)?;
        }
        let desc = oci_spec::image::DescriptorBuilder::default()
            .media_type(oci_spec::image::MediaType::ImageManifest)
            .digest(
                image
                    .manifest_digest
                    .to_string()
                    .parse::<oci_spec::image::Digest>()
                    .map_err(|e| ImageError::Invalid {
                        image: image.name.clone(),
                        what: "manifest digest".into(),
                        reason: e.to_string(),
                    })?,
            )
            .size(manifest_size)
            .build()
            .map_err(|e| ImageError::Invalid {
                image: image.name.clone(),
                what: "manifest descriptor".into(),
                reason: e.to_string(),
            })?;
        self.tag(name, desc)?;
        self.resolve_local(name)
    }

    /// Records `reference` -> manifest in the store's index.json (replacing an older entry).
    pub(crate) fn tag(&self, reference: &str, manifest: Descriptor) -> Result<()> {
        let _lock = self.lock("index.lock")?;
        let layout = self.layout();
        let index = layout.read_index()?;
        let mut entries: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| layout::ref_name(d).as_deref() != Some(reference))
            .cloned()
            .collect();
        let mut desc = manifest;
        let mut ann = desc.annotations().clone().unwrap_or_default();
        ann.insert(layout::REF_NAME.to_string(), reference.to_string());
        desc.set_annotations(Some(ann));
        entries.push(desc);
        let mut new_index = index.clone();
        new_index.set_manifests(entries);
        let data = serde_json::to_vec_pretty(&new_index)
            .map_err(|e| ImageError::io("encoding", layout.index_path(), io::Error::other(e)))?;
        write_atomic(self, &layout.index_path(), &data)
    }

    /// Writes a blob into the store after checking it against `digest` and `size`.
    pub(crate) fn put_blob(
        &self,
        image: &str,
        digest: &Digest,
        size: u64,
        data: &[u8],
    ) -> Result<()> {
        layout::verify(image, digest, size, data)?;
        let path = self.layout().blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        write_atomic(self, &path, data)
    }

    /// Streams a blob into the store: through the hasher into a temp file in `tmp/`, renamed
    /// into `blobs/` only if its size and digest match. Reads at most `size + 1` bytes.
    pub(crate) fn put_blob_from(
        &self,
        image: &str,
        digest: &Digest,
        size: u64,
        reader: impl Read,
    ) -> Result<()> {
        let path = self.layout().blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(|e| ImageError::io("creating a temp file in", self.tmp_dir(), e))?;
        let mut hashing = HashingReader::new(reader.take(size.saturating_add(1)));
        let mut out = io::BufWriter::with_capacity(256 * 1024, tmp.as_file());
        io::copy(&mut hashing, &mut out)
            .and_then(|_| out.flush())
            .map_err(|e| ImageError::io("copying a blob to", tmp.path().to_path_buf(), e))?;
        drop(out);
        let (actual, actual_size) = hashing
            .finish()
            .map_err(|e| ImageError::io("reading blob", &path, e))?;
        layout::check_blob(image, digest, size, &actual, actual_size)?;
        tmp.persist(&path)
            .map_err(|e| ImageError::io("storing blob", &path, e.error))?;
        Ok(())
    }

    /// Unpacks every layer of `image` not already in the store (each layer once, even when
    /// several threads or processes ask at the same time).
    pub fn unpack(&self, image: &ResolvedImage) -> Result<UnpackedImage> {
        let mut layer_dirs = Vec::with_capacity(image.layers.len());
        // What this image may still add to the store (layers already there cost nothing).
        let mut image_budget = self.limits.max_image_bytes;
        for layer in &image.layers {
            layer_dirs.push(self.ensure_layer(image, layer, &mut image_budget)?);
        }
        Ok(UnpackedImage {
            name: image.name.clone(),
            manifest_digest: image.manifest_digest.clone(),
            config: image.config.clone(),
            image_id: format!(
                "podd-local://{}@{}",
                image.name,
                image.manifest.config().digest()
            ),
            layer_dirs,
        })
    }

    fn ensure_layer(
        &self,
        image: &ResolvedImage,
        layer: &LayerRef,
        image_budget: &mut u64,
    ) -> Result<PathBuf> {
        let dir = self.layer_dir(&layer.diff_id);
        if dir.is_dir() {
            return Ok(dir);
        }
        let _lock = self.lock(&format!("layer-{}.lock", layer.diff_id.hex()))?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let started = std::time::Instant::now();
        // The temp dir is removed on drop, so a failed unpack leaves nothing behind.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("layer-{}-", &layer.diff_id.hex()[..12]))
            .tempdir_in(self.tmp_dir())
            .map_err(|e| {
                ImageError::io("creating a temporary layer directory in", self.tmp_dir(), e)
            })?;
        let per_image = *image_budget < self.limits.max_layer_bytes;
        let limits = unpack::UnpackLimits {
            max_bytes: (*image_budget).min(self.limits.max_layer_bytes),
            max_entries: self.limits.max_layer_entries,
            max_path_len: self.limits.max_path_len,
        };
        // When the image's remaining budget is the tighter cap, a byte overrun names that limit.
        let image_limit = per_image.then_some(self.limits.max_image_bytes);
        let stats = unpack_layer_blob(image, layer, tmp.path(), &limits, image_limit)?;
        *image_budget = image_budget.saturating_sub(stats.bytes);
        if let Err(e) = fs::rename(tmp.path(), &dir) {
            // Another unpacker finished first (only possible without the lock); theirs is as good.
            if !dir.is_dir() {
                return Err(ImageError::io("moving the unpacked layer to", &dir, e));
            }
        }
        // Renamed away (or a duplicate); TempDir's drop removes whatever is still there.
        drop(tmp);
        tracing::debug!(image = %image.name, layer = %layer.digest, entries = stats.entries,
            elapsed_ms = started.elapsed().as_millis() as u64, "unpacked layer");
        Ok(dir)
    }

    /// Removes unpacked layers that none of `keep` uses (pass the images of every container
    /// that exists), and temp entries older than `tmp_min_age` (left by a crash). Each layer is
    /// removed under its unpack lock. Call it when no container start is in flight, as a layer
    /// that `unpack` just returned is not yet in `keep`.
    pub fn gc(&self, keep: &[&UnpackedImage], tmp_min_age: std::time::Duration) -> Result<GcStats> {
        let keep: std::collections::HashSet<&PathBuf> =
            keep.iter().flat_map(|i| &i.layer_dirs).collect();
        let mut stats = GcStats::default();
        let layers = self.root.join("layers");
        let read = fs::read_dir(&layers).map_err(|e| ImageError::io("listing", &layers, e))?;
        for entry in read {
            let entry = entry.map_err(|e| ImageError::io("listing", &layers, e))?;
            let dir = entry.path();
            if keep.contains(&dir) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let _lock = self.lock(&format!("layer-{name}.lock"))?;
            // Rename first so no reader ever sees a half-removed layer.
            let doomed = self.tmp_dir().join(format!("gc-{name}"));
            fs::rename(&dir, &doomed).map_err(|e| ImageError::io("retiring layer", &dir, e))?;
            fs::remove_dir_all(&doomed)
                .map_err(|e| ImageError::io("removing layer", &doomed, e))?;
            // The lock file stays: removing it could let two unpackers lock different inodes.
            stats.layers_removed += 1;
        }
        let tmp = self.tmp_dir();
        let read = fs::read_dir(&tmp).map_err(|e| ImageError::io("listing", &tmp, e))?;
        for entry in read.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= tmp_min_age);
            if old {
                let p = entry.path();
                let r = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if r.is_ok() {
                    stats.tmp_removed += 1;
                }
            }
        }
        Ok(stats)
    }

    /// Gets an image from any source into the store and unpacks it: the pod layer's entry point.
    ///
    /// `Always` pulls; when the registry cannot be reached or does not have the name and the
    /// image is in the local store, the local image is used: a node-local image (`podd image
    /// seed-busybox`, `podd image import`) counts as present for `Always` when no registry
    /// serves its name, so manifests that default to `Always` (no tag) still run it.
    pub async fn prepare(
        &self,
        image: &str,
        policy: PullPolicy,
        opts: &RegistryOptions,
    ) -> Result<UnpackedImage> {
        let resolved = match image.parse::<ImageSource>()? {
            ImageSource::Layout { path, reference } => {
                let store = self.clone();
                blocking(move || store.resolve_layout(&path, &reference)).await?
            }
            ImageSource::Archive { path, reference } => {
                let store = self.clone();
                blocking(move || store.import_archive(&path, &reference)).await?
            }
            ImageSource::Registry(reference) => {
                let local = self.resolve_local(&reference);
                let pulled = match (policy, local) {
                    (
                        PullPolicy::Never,
                        Err(ImageError::NotFound {
                            image,
                            location,
                            available,
                        }),
                    ) => {
                        return Err(ImageError::NotFound {
                            image: format!(
                                "{image} (imagePullPolicy Never: pull it first or change the policy)"
                            ),
                            location,
                            available,
                        });
                    }
                    (PullPolicy::IfNotPresent | PullPolicy::Never, Ok(img)) => {
                        return self.unpack_blocking(img).await;
                    }
                    (PullPolicy::Never, Err(e)) => return Err(e),
                    (policy, local) => match registry::pull(self, &reference, opts).await {
                        Ok(img) => img,
                        Err(e @ (ImageError::NotFound { .. } | ImageError::Registry { .. }))
                            if policy == PullPolicy::Always && local.is_ok() =>
                        {
                            tracing::info!(
                                image = %reference,
                                error = %e,
                                "imagePullPolicy Always: no registry serves the image; using the node-local copy"
                            );
                            return self.unpack_blocking(local?).await;
                        }
                        Err(e) => return Err(e),
                    },
                };
                let mut unpacked = self.unpack_blocking(pulled).await?;
                if let Ok(r) = registry::parse_reference(&reference) {
                    unpacked.image_id = format!(
                        "{}/{}@{}",
                        r.registry(),
                        r.repository(),
                        unpacked.manifest_digest
                    );
                }
                return Ok(unpacked);
            }
        };
        self.unpack_blocking(resolved).await
    }

    async fn unpack_blocking(&self, image: ResolvedImage) -> Result<UnpackedImage> {
        let store = self.clone();
        blocking(move || store.unpack(&image)).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ImageError::io(
            "image work",
            PathBuf::new(),
            io::Error::other(e),
        ))
    })
}

fn label(transport: &str, path: &Path, reference: &str) -> String {
    if reference.is_empty() {
        format!("{transport}:{}", path.display())
    } else {
        format!("{transport}:{}:{reference}", path.display())
    }
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .expect("a valid empty index")
}

/// Writes `data` to `path` through a temp file in the store and a rename, so readers never see
/// a partial file.
fn write_atomic(store: &ImageStore, path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(store.tmp_dir())
        .map_err(|e| ImageError::io("creating a temp file in", store.tmp_dir(), e))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_data())
        .map_err(|e| ImageError::io("writing", tmp.path().to_path_buf(), e))?;
    tmp.persist(path)
        .map_err(|e| ImageError::io("writing", path, e.error))?;
    Ok(())
}

/// Decompresses and unpacks one layer blob into `dest`, verifying the blob's digest and size
/// and the uncompressed digest (diff_id) over the whole stream.
fn unpack_layer_blob(
    image: &ResolvedImage,
    layer: &LayerRef,
    dest: &Path,
    limits: &unpack::UnpackLimits,
    image_limit: Option<u64>,
) -> Result<unpack::UnpackStats> {
    let path = image.blobs.blob_path(&layer.digest);
    let file = File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ImageError::MissingBlob {
                image: image.name.clone(),
                blob: layer.digest.to_string(),
                location: image.blobs.root().display().to_string(),
            }
        } else {
            ImageError::io("opening layer blob", &path, e)
        }
    })?;
    let io_err = |e: io::Error| ImageError::Layer {
        image: image.name.clone(),
        layer: layer.digest.to_string(),
        reason: format!("{e} (is the blob truncated or not {}?)", layer.media_type),
    };
    // Never past the declared size (+1 to see a longer blob): the blob may be anything.
    let mut blob = HashingReader::new(BufReader::with_capacity(
        256 * 1024,
        file.take(layer.size.saturating_add(1)),
    ));
    let unpacked = {
        let decoder: Box<dyn Read + '_> = match layer.compression {
            Compression::None => Box::new(&mut blob),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob)),
            Compression::Zstd => Box::new(ZstdFrames::new(&mut blob)),
        };
        // The tail after the tar's end is hashed too (it is part of the diff_id), but never
        // more than the limit: a bomb can hide behind the end-of-archive blocks.
        let mut tar_stream = HashingReader::new(decoder.take(limits.max_bytes.saturating_add(1)));
        let result = unpack::unpack_tar_limited(&mut tar_stream, dest, limits);
        if let Err(unpack::UnpackError::Limit { kind, limit }) = result {
            // Stop here: reading the rest of a bomb to check its digest is what it wants.
            return Err(limit_error(image, layer, kind, limit, image_limit));
        }
        // Verify the digests before reporting a tar error: a corrupted blob is the better message.
        let diff = tar_stream.finish();
        (result, diff)
    };
    let (blob_digest, blob_size) = blob.finish().map_err(io_err)?;
    layout::check_blob(
        &image.name,
        &layer.digest,
        layer.size,
        &blob_digest,
        blob_size,
    )?;
    let (result, diff) = unpacked;
    let (diff_id, diff_size) = diff.map_err(io_err)?;
    if diff_size > limits.max_bytes {
        return Err(limit_error(
            image,
            layer,
            unpack::LimitKind::Bytes,
            limits.max_bytes,
            image_limit,
        ));
    }
    let stats = result.map_err(|e| match e {
        unpack::UnpackError::Entry(e) => ImageError::Layer {
            image: image.name.clone(),
            layer: layer.digest.to_string(),
            reason: e.0,
        },
        unpack::UnpackError::Limit { kind, limit } => {
            limit_error(image, layer, kind, limit, image_limit)
        }
    })?;
    if diff_id != layer.diff_id {
        return Err(ImageError::DiffIdMismatch {
            image: image.name.clone(),
            layer: layer.digest.to_string(),
            expected: layer.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    Ok(stats)
}

fn limit_error(
    image: &ResolvedImage,
    layer: &LayerRef,
    kind: unpack::LimitKind,
    limit: u64,
    image_limit: Option<u64>,
) -> ImageError {
    let (what, limit, hint) = match (kind, image_limit) {
        (unpack::LimitKind::Bytes, Some(image_limit)) => (
            "per-image limit on unpacked bytes (all its new layers together)",
            image_limit,
            "if the image is trusted, raise StoreLimits::max_image_bytes (podd agent --image-max-image-bytes)",
        ),
        (unpack::LimitKind::Bytes, None) => (
            "per-layer limit on unpacked bytes",
            limit,
            "if the image is trusted, raise StoreLimits::max_layer_bytes (podd agent --image-max-layer-bytes)",
        ),
        (unpack::LimitKind::Entries, _) => (
            "per-layer limit on tar entries",
            limit,
            "if the image is trusted, raise StoreLimits::max_layer_entries (podd agent --image-max-layer-entries)",
        ),
        (unpack::LimitKind::PathLen, _) => (
            "limit on the bytes of one path",
            limit,
            "a path longer than PATH_MAX cannot be unpacked; rebuild the image",
        ),
    };
    ImageError::LimitExceeded {
        image: image.name.clone(),
        layer: layer.digest.to_string(),
        what: what.into(),
        limit,
        hint: hint.into(),
    }
}

/// Creates `dir` with mode 0700 (set at creation, so there is no window with a looser mode),
/// or tightens an existing one that is looser. Refuses a symlink.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match fs::DirBuilder::new().mode(STORE_DIR_MODE).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ImageError::io("creating the image store directory", dir, e)),
    }
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| ImageError::io("checking the image store directory", dir, e))?;
    if !meta.is_dir() {
        return Err(ImageError::io(
            "opening the image store",
            dir,
            io::Error::other("not a directory (a symlink is not accepted); remove it"),
        ));
    }
    if meta.permissions().mode() & 0o7777 != STORE_DIR_MODE {
        tracing::info!(dir = %dir.display(), "tightening the image store directory to 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(STORE_DIR_MODE))
            .map_err(|e| ImageError::io("setting the mode of", dir, e))?;
    }
    Ok(())
}

/// A zstd stream of one or more frames; skippable frames (zstd:chunked keeps its table of
/// contents in one) are passed over.
struct ZstdFrames<R: Read> {
    input: Option<io::BufReader<R>>,
    frame:
        Option<ruzstd::decoding::StreamingDecoder<FrameInput<R>, ruzstd::decoding::FrameDecoder>>,
}

/// A frame's input: the 4 magic bytes already read, then the rest of the stream.
type FrameInput<R> = io::Chain<io::Cursor<[u8; 4]>, io::BufReader<R>>;

impl<R: Read> ZstdFrames<R> {
    fn new(inner: R) -> Self {
        ZstdFrames {
            input: Some(io::BufReader::new(inner)),
            frame: None,
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
        loop {
            if let Some(frame) = self.frame.as_mut() {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let frame = self.frame.take().expect("a frame");
                self.input = Some(frame.into_inner().into_inner().1);
            }
            let mut input = self.input.take().expect("the input");
            if input.fill_buf()?.is_empty() {
                self.input = Some(input);
                return Ok(0);
            }
            let mut magic = [0u8; 4];
            input.read_exact(&mut magic)?;
            if (0x184D_2A50..=0x184D_2A5F).contains(&u32::from_le_bytes(magic)) {
                let mut len = [0u8; 4];
                input.read_exact(&mut len)?;
                let len = u64::from(u32::from_le_bytes(len));
                let skipped = io::copy(&mut (&mut input).take(len), &mut io::sink())?;
                if skipped != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "zstd: truncated skippable frame",
                    ));
                }
                self.input = Some(input);
                continue;
            }
            let frame =
                ruzstd::decoding::StreamingDecoder::new(io::Cursor::new(magic).chain(input))
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
                    })?;
            self.frame = Some(frame);
        }
    }
}

/// Copies an oci-archive's entries into `dest`, hashing every blob as it is written; only the
/// layout's own files are accepted.
fn extract_archive(label: &str, archive: &Path, dest: &Path) -> Result<()> {
    let file =
        File::open(archive).map_err(|e| ImageError::io("opening the oci-archive", archive, e))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    let bad = |reason: String| ImageError::Invalid {
        image: label.to_string(),
        what: "oci-archive".into(),
        reason,
    };
    fs::create_dir_all(dest.join("blobs/sha256"))
        .map_err(|e| ImageError::io("creating", dest, e))?;
    let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let rel = unpack::clean_path(&path).map_err(|e| bad(e.0))?;
        let rel_str = rel.to_string_lossy().into_owned();
        if entry.header().entry_type().is_dir() {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(bad(format!(
                "unexpected entry {rel_str} (only regular files belong in a layout)"
            )));
        }
        match rel_str.as_str() {
            "oci-layout" | "index.json" => {
                let out = dest.join(&rel);
                let mut f = File::create(&out).map_err(|e| ImageError::io("writing", &out, e))?;
                io::copy(&mut entry, &mut f).map_err(|e| ImageError::io("writing", &out, e))?;
            }
            _ => {
                let Some(hex) = rel_str.strip_prefix("blobs/sha256/") else {
                    // Other files (e.g. a Docker manifest.json) are not part of the OCI layout.
                    continue;
                };
                let expected: Digest = format!("sha256:{hex}")
                    .parse()
                    .map_err(|e: crate::digest::BadDigest| bad(e.to_string()))?;
                let out = dest.join(&rel);
                let mut f = File::create(&out).map_err(|e| ImageError::io("writing", &out, e))?;
                let mut reader = HashingReader::new(&mut entry);
                io::copy(&mut reader, &mut f).map_err(|e| ImageError::io("writing", &out, e))?;
                let (actual, _) = reader
                    .finish()
                    .map_err(|e| ImageError::io("reading", archive, e))?;
                if actual != expected {
                    return Err(ImageError::DigestMismatch {
                        image: label.to_string(),
                        blob: expected.to_string(),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_reads_many_frames_and_skips_skippable_ones() {
        use ruzstd::encoding::{CompressionLevel, compress_to_vec};
        let mut stream = compress_to_vec(&b"hello "[..], CompressionLevel::Fastest);
        stream.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        stream.extend_from_slice(&3u32.to_le_bytes());
        stream.extend_from_slice(b"toc");
        stream.extend(compress_to_vec(&b"world"[..], CompressionLevel::Fastest));
        let mut out = String::new();
        ZstdFrames::new(&stream[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
        let mut bad = stream.clone();
        bad.truncate(bad.len() - 3);
        assert!(
            ZstdFrames::new(&bad[..])
                .read_to_string(&mut String::new())
                .is_err()
        );
    }

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        let container = |policy: Option<&str>, image: &str| podd_api::Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(String::from),
            ..Default::default()
        };
        let p = |policy: Option<&str>, image: &str| {
            PullPolicy::for_container(&container(policy, image)).unwrap()
        };
        assert_eq!(p(None, "reg:5000/app"), PullPolicy::Always);
        assert_eq!(p(None, "reg:5000/app:latest"), PullPolicy::Always);
        assert_eq!(p(None, "reg:5000/app:v1"), PullPolicy::IfNotPresent);
        assert_eq!(
            p(None, &format!("reg/app@{}", Digest::of(b"x"))),
            PullPolicy::IfNotPresent
        );
        assert_eq!(p(None, "oci:/x:busybox"), PullPolicy::IfNotPresent);
        assert_eq!(p(Some("Never"), "reg/app"), PullPolicy::Never);
        assert_eq!(p(Some(""), "reg/app:v2"), PullPolicy::IfNotPresent);
        assert!(PullPolicy::for_container(&container(Some("Sometimes"), "x")).is_err());
    }

    #[test]
    fn parses_sources() {
        assert_eq!(
            "oci:/x/y:busybox:latest".parse::<ImageSource>().unwrap(),
            ImageSource::Layout {
                path: "/x/y".into(),
                reference: "busybox:latest".into()
            }
        );
        assert_eq!(
            "oci-archive:/x.tar".parse::<ImageSource>().unwrap(),
            ImageSource::Archive {
                path: "/x.tar".into(),
                reference: String::new()
            }
        );
        assert_eq!(
            "127.0.0.1:5000/busybox:1".parse::<ImageSource>().unwrap(),
            ImageSource::Registry("127.0.0.1:5000/busybox:1".into())
        );
        assert!("".parse::<ImageSource>().is_err());
        assert!("oci:".parse::<ImageSource>().is_err());
    }
}
