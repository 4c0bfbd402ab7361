//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/...`): finding an image by name,
//! tag or digest, and reading its manifest and config with every digest and size verified.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::media::{self, Compression};

/// The annotation that names an index entry (a tag, or a full `name:tag`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Which image of a layout: `NAME[:TAG]`, `NAME@sha256:...`, `sha256:...`, or the only one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutRef {
    /// The layout holds exactly one image; take it.
    Only,
    /// A name with a tag (default `latest`); `raw` is what the user wrote.
    Name {
        raw: String,
        name: String,
        tag: String,
    },
    /// A manifest digest.
    Digest(Digest),
}

impl LayoutRef {
    pub fn parse(s: &str) -> Result<LayoutRef> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Ok(LayoutRef::Only);
        }
        let digest_part = if s.starts_with("sha256:") {
            Some(s)
        } else {
            s.split_once('@').map(|(_, d)| d)
        };
        if let Some(d) = digest_part {
            return d
                .parse()
                .map(LayoutRef::Digest)
                .map_err(|e| bad(&e.to_string()));
        }
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (s, "latest"),
        };
        if name.is_empty()
            || tag.is_empty()
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("expected NAME[:TAG] or NAME@sha256:DIGEST"));
        }
        Ok(LayoutRef::Name {
            raw: s.to_string(),
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// Whether an index entry whose ref.name annotation is `annotation` is this reference.
    /// `tag_only` allows a bare-tag annotation (`latest`), as skopeo and buildah write them.
    fn matches(&self, annotation: &str, tag_only: bool) -> bool {
        match self {
            LayoutRef::Name { raw, name, tag } => {
                let full = format!("{name}:{tag}");
                annotation == full
                    || annotation == raw
                    || annotation.ends_with(&format!("/{full}"))
                    || (tag_only && annotation == tag)
            }
            _ => false,
        }
    }
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The digest of the blob as stored (compressed).
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub compression: Compression,
    /// The digest of the uncompressed tar (the config's `rootfs.diff_ids`); the store key.
    pub diff_id: Digest,
}

/// An image whose manifest and config were read and verified; its layers are not unpacked yet.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// What the user asked for, used in every message.
    pub name: String,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// Bottom layer first.
    pub layers: Vec<LayerRef>,
    /// The layout whose `blobs/` hold the layer blobs.
    pub blobs: Layout,
}

/// A directory in OCI image layout form (an external layout, or the store itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens a layout directory, checking its `oci-layout` marker.
    pub fn open(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        let marker = root.join("oci-layout");
        let text = fs::read_to_string(&marker).map_err(|e| {
            ImageError::io(
                "reading the oci-layout marker (is this an OCI image layout directory?)",
                &marker,
                e,
            )
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ImageError::Invalid {
                image: root.display().to_string(),
                what: "oci-layout".into(),
                reason: e.to_string(),
            })?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(ImageError::Invalid {
                image: root.display().to_string(),
                what: "oci-layout".into(),
                reason: format!("unsupported imageLayoutVersion in {text}"),
            });
        }
        Ok(Layout { root })
    }

    /// A layout at `root` without checking the marker (the store writes its own).
    pub(crate) fn at(root: PathBuf) -> Layout {
        Layout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let mut data = Vec::new();
        fs::File::open(&path)
            .and_then(|f| f.take(MAX_METADATA_BLOB + 1).read_to_end(&mut data))
            .map_err(|e| ImageError::io("reading the image index", &path, e))?;
        if data.len() as u64 > MAX_METADATA_BLOB {
            return Err(ImageError::Invalid {
                image: self.root.display().to_string(),
                what: "index.json".into(),
                reason: format!("it is over the {MAX_METADATA_BLOB}-byte limit"),
            });
        }
        serde_json::from_slice(&data).map_err(|e| ImageError::Invalid {
            image: self.root.display().to_string(),
            what: "index.json".into(),
            reason: e.to_string(),
        })
    }

    /// Reads a small blob (manifest, config, index) and verifies its size and digest. Its
    /// declared size must be at most [`MAX_METADATA_BLOB`]: these are held in memory.
    pub fn read_blob(&self, image: &str, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        check_metadata_size(image, digest, size)?;
        let path = self.blob_path(digest);
        let file = fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::MissingBlob {
                    image: image.to_string(),
                    blob: digest.to_string(),
                    location: self.root.display().to_string(),
                }
            } else {
                ImageError::io("opening blob", &path, e)
            }
        })?;
        // Never read much past the declared size, so a huge bogus blob cannot exhaust memory.
        let mut data = Vec::new();
        file.take(size.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| ImageError::io("reading blob", &path, e))?;
        verify(image, digest, size, &data)?;
        Ok(data)
    }

    /// Names of the images in the index (their ref.name annotations, or digests).
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .map(|d| ref_name(d).unwrap_or_else(|| d.digest().to_string()))
            .collect())
    }

    /// Finds and reads the image `reference` of this layout. `label` names it in messages.
    pub fn resolve(&self, label: &str, reference: &LayoutRef) -> Result<ResolvedImage> {
        let index = self.read_index()?;
        let entries = index.manifests();
        let not_found = || ImageError::NotFound {
            image: label.to_string(),
            location: format!("the OCI layout {}", self.root.display()),
            available: entries
                .iter()
                .map(|d| ref_name(d).unwrap_or_else(|| d.digest().to_string()))
                .collect(),
        };
        let chosen: &Descriptor = match reference {
            LayoutRef::Only => {
                if entries.len() == 1 {
                    &entries[0]
                } else {
                    return Err(not_found());
                }
            }
            LayoutRef::Digest(d) => entries
                .iter()
                .find(|e| e.digest().as_ref() == d.to_string())
                .ok_or_else(not_found)?,
            LayoutRef::Name { tag, .. } => {
                let exact: Vec<_> = entries
                    .iter()
                    .filter(|e| ref_name(e).is_some_and(|n| reference.matches(&n, false)))
                    .collect();
                let tagged: Vec<_> = entries
                    .iter()
                    .filter(|e| ref_name(e).as_deref() == Some(tag.as_str()))
                    .collect();
                match (exact.as_slice(), tagged.as_slice()) {
                    ([one, ..], _) => one,
                    ([], [one]) => one,
                    _ => return Err(not_found()),
                }
            }
        };
        self.resolve_descriptor(label, chosen)
    }

    /// Reads the manifest (choosing this platform's from an index) and config behind `desc`.
    pub fn resolve_descriptor(&self, label: &str, desc: &Descriptor) -> Result<ResolvedImage> {
        let mut desc = desc.clone();
        // An index entry may itself point at an index (multi-platform image); one level deep.
        for _ in 0..2 {
            let media_type = desc.media_type().to_string();
            if media::is_manifest(&media_type) {
                break;
            }
            if !media::is_index(&media_type) {
                return Err(ImageError::UnsupportedMediaType {
                    image: label.to_string(),
                    blob: desc.digest().to_string(),
                    media_type,
                    supported: media::SUPPORTED_MANIFESTS,
                });
            }
            let digest = parse_digest(label, desc.digest().as_ref())?;
            let data = self.read_blob(label, &digest, desc.size())?;
            let index: ImageIndex = parse_json(label, "image index", &data)?;
            desc = select_platform(label, index.manifests())?.clone();
        }
        let manifest_digest = parse_digest(label, desc.digest().as_ref())?;
        let data = self.read_blob(label, &manifest_digest, desc.size())?;
        self.resolve_manifest(label, manifest_digest, &data)
    }

    /// Builds the resolved image from verified manifest bytes.
    pub fn resolve_manifest(
        &self,
        label: &str,
        manifest_digest: Digest,
        data: &[u8],
    ) -> Result<ResolvedImage> {
        let manifest: ImageManifest = parse_json(label, "image manifest", data)?;
        let config_desc = manifest.config();
        let config_type = config_desc.media_type().to_string();
        if !media::is_config(&config_type) {
            return Err(ImageError::UnsupportedMediaType {
                image: label.to_string(),
                blob: config_desc.digest().to_string(),
                media_type: config_type,
                supported: media::SUPPORTED_CONFIGS,
            });
        }
        let config_digest = parse_digest(label, config_desc.digest().as_ref())?;
        let config_data = self.read_blob(label, &config_digest, config_desc.size())?;
        let config = parse_config(label, &config_data)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::Invalid {
                image: label.to_string(),
                what: "image config".into(),
                reason: format!(
                    "the manifest has {} layers but the config lists {} diff_ids",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let media_type = l.media_type().to_string();
            let compression = media::layer_compression(&media_type).ok_or_else(|| {
                ImageError::UnsupportedMediaType {
                    image: label.to_string(),
                    blob: l.digest().to_string(),
                    media_type: media_type.clone(),
                    supported: media::SUPPORTED_LAYERS,
                }
            })?;
            layers.push(LayerRef {
                digest: parse_digest(label, l.digest().as_ref())?,
                size: l.size(),
                media_type,
                compression,
                diff_id: parse_digest(label, diff_id)?,
            });
        }
        Ok(ResolvedImage {
            name: label.to_string(),
            manifest_digest,
            manifest,
            config,
            layers,
            blobs: self.clone(),
        })
    }
}

/// The manifest for this machine (linux and the build's architecture) from an index.
pub(crate) fn select_platform<'a>(
    label: &str,
    entries: &'a [Descriptor],
) -> Result<&'a Descriptor> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    entries
        .iter()
        .find(|d| {
            d.platform().as_ref().is_none_or(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        })
        .ok_or_else(|| ImageError::NotFound {
            image: label.to_string(),
            location: format!("the image index (no linux/{arch} manifest)"),
            available: entries
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect(),
        })
}

/// Parses an image config. oci-spec 0.7 insists on `history`, which the image spec makes
/// optional (and many builders omit), so a missing one is read as empty.
pub(crate) fn parse_config(label: &str, data: &[u8]) -> Result<ImageConfiguration> {
    let mut value: serde_json::Value = parse_json(label, "image config", data)?;
    if let Some(obj) = value.as_object_mut() {
        obj.entry("history")
            .or_insert_with(|| serde_json::json!([]));
    }
    serde_json::from_value(value).map_err(|e| ImageError::Invalid {
        image: label.to_string(),
        what: "image config".into(),
        reason: e.to_string(),
    })
}

pub(crate) fn ref_name(d: &Descriptor) -> Option<String> {
    d.annotations().as_ref()?.get(REF_NAME).cloned()
}

pub(crate) fn parse_digest(label: &str, s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e: crate::digest::BadDigest| ImageError::Invalid {
            image: label.to_string(),
            what: "a descriptor digest".into(),
            reason: e.to_string(),
        })
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    label: &str,
    what: &str,
    data: &[u8],
) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| ImageError::Invalid {
        image: label.to_string(),
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The largest manifest, index or config podd reads (they are parsed in memory; layers are
/// streamed). Registries commonly cap manifests at 4 MiB; configs with long histories are larger.
pub const MAX_METADATA_BLOB: u64 = 16 << 20;

pub(crate) fn check_metadata_size(image: &str, digest: &Digest, size: u64) -> Result<()> {
    if size > MAX_METADATA_BLOB {
        return Err(ImageError::Invalid {
            image: image.to_string(),
            what: format!("blob {digest}"),
            reason: format!(
                "a manifest, index or config of {size} bytes is over the {MAX_METADATA_BLOB}-byte limit; the image is malformed or hostile"
            ),
        });
    }
    Ok(())
}

/// Checks a blob's size and digest against its descriptor.
pub(crate) fn verify(image: &str, digest: &Digest, size: u64, data: &[u8]) -> Result<()> {
    check_blob(image, digest, size, &Digest::of(data), data.len() as u64)
}

/// Checks a blob's size and digest (computed while it was read or streamed) against its
/// descriptor.
pub(crate) fn check_blob(
    image: &str,
    digest: &Digest,
    size: u64,
    actual: &Digest,
    actual_size: u64,
) -> Result<()> {
    if actual_size != size {
        return Err(ImageError::SizeMismatch {
            image: image.to_string(),
            blob: digest.to_string(),
            expected: size,
            actual: actual_size,
        });
    }
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            image: image.to_string(),
            blob: digest.to_string(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(LayoutRef::parse("").unwrap(), LayoutRef::Only);
        assert_eq!(
            LayoutRef::parse("busybox").unwrap(),
            LayoutRef::Name {
                raw: "busybox".into(),
                name: "busybox".into(),
                tag: "latest".into()
            }
        );
        let r = LayoutRef::parse("localhost:5000/busybox:v1").unwrap();
        assert!(r.matches("localhost:5000/busybox:v1", false));
        assert!(r.matches("v1", true));
        assert!(!r.matches("v1", false));
        let r = LayoutRef::parse("localhost:5000/busybox").unwrap();
        assert!(r.matches("localhost:5000/busybox:latest", false));
        let d = Digest::of(b"x");
        assert_eq!(
            LayoutRef::parse(&format!("busybox@{d}")).unwrap(),
            LayoutRef::Digest(d.clone())
        );
        assert_eq!(
            LayoutRef::parse(&d.to_string()).unwrap(),
            LayoutRef::Digest(d)
        );
        assert!(LayoutRef::parse("busybox@sha256:zz").is_err());
        assert!(LayoutRef::parse("bad name").is_err());
    }

    #[test]
    fn docker_style_names_match_with_registry_prefix() {
        let r = LayoutRef::parse("busybox:latest").unwrap();
        assert!(r.matches("docker.io/library/busybox:latest", false));
        assert!(!r.matches("docker.io/library/notbusybox:latest", false));
    }
}
