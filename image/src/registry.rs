//! Pulling images from an OCI / Docker v2 registry (oci-client over reqwest + rustls/ring) into
//! the store, verifying every blob.

use std::path::PathBuf;
use std::str::FromStr;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndex, ImageManifest, MediaType};
use tokio::io::AsyncWriteExt;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::layout::{self, ResolvedImage};
use crate::media;
use crate::store::ImageStore;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP; all others use HTTPS.
    pub plain_http: Vec<String>,
    /// Extra CA certificates (PEM) trusted for HTTPS, e.g. a private registry's self-signed cert.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// Basic credentials (user, password); anonymous when None.
    pub basic_auth: Option<(String, String)>,
}

impl RegistryOptions {
    pub(crate) fn client(&self) -> Client {
        let protocol = if self.plain_http.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.plain_http.clone())
        };
        Client::new(ClientConfig {
            protocol,
            extra_root_certificates: self
                .extra_ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..ClientConfig::default()
        })
    }

    pub(crate) fn auth(&self) -> RegistryAuth {
        match &self.basic_auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// Parses a registry reference, with the message podd users need when it is wrong.
pub fn parse_reference(image: &str) -> Result<Reference> {
    Reference::from_str(image).map_err(|e| ImageError::InvalidReference {
        reference: image.to_string(),
        reason: format!("{e}; expected HOST[:PORT]/REPOSITORY[:TAG] or ...@sha256:DIGEST"),
    })
}

const ACCEPTED: &[&str] = &[
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST_LIST,
];

/// Pulls `image` into `store`: manifest (choosing this platform from an index), config and
/// layers, each verified against its digest and size before it is stored; then tags it in the
/// store's index under `image`.
pub async fn pull(
    store: &ImageStore,
    image: &str,
    opts: &RegistryOptions,
) -> Result<ResolvedImage> {
    let reference = parse_reference(image)?;
    let client = opts.client();
    let auth = opts.auth();
    let registry = reference.resolve_registry().to_string();
    let reg_err = |e: oci_client::errors::OciDistributionError| registry_error(image, &registry, e);

    let (mut data, _) = match client.pull_manifest_raw(&reference, &auth, ACCEPTED).await {
        Ok(found) => found,
        Err(e) if is_unknown(&e) => {
            // Say which tags do exist, when the registry lets us list them.
            let available = match client.list_tags(&reference, &auth, Some(50), None).await {
                Ok(t) => t
                    .tags
                    .into_iter()
                    .map(|tag| format!("{}:{tag}", reference.repository()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            return Err(ImageError::NotFound {
                image: image.to_string(),
                location: format!("registry {registry}"),
                available,
            });
        }
        Err(e) => return Err(reg_err(e)),
    };
    let mut digest = Digest::of(&data);
    layout::check_metadata_size(image, &digest, data.len() as u64)?;
    if let Some(want) = reference.digest() {
        check_digest(image, want, &digest)?;
    }
    let mut media_type = manifest_media_type(image, &data)?;
    if media::is_index(&media_type) {
        let index: ImageIndex = layout::parse_json(image, "image index", &data)?;
        let chosen = layout::select_platform(image, index.manifests())?.clone();
        let by_digest = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            chosen.digest().to_string(),
        );
        let (d, _) = client
            .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
            .await
            .map_err(reg_err)?;
        data = d;
        digest = Digest::of(&data);
        layout::check_metadata_size(image, &digest, data.len() as u64)?;
        check_digest(image, chosen.digest().as_ref(), &digest)?;
        media_type = manifest_media_type(image, &data)?;
    }
    if !media::is_manifest(&media_type) {
        return Err(ImageError::UnsupportedMediaType {
            image: image.to_string(),
            blob: digest.to_string(),
            media_type,
            supported: media::SUPPORTED_MANIFESTS,
        });
    }
    let manifest: ImageManifest = layout::parse_json(image, "image manifest", &data)?;
    let mut blobs: Vec<&Descriptor> = vec![manifest.config()];
    blobs.extend(manifest.layers());
    for desc in blobs {
        fetch_blob(store, &client, &reference, image, desc).await?;
    }
    store.put_blob(image, &digest, data.len() as u64, &data)?;
    // Resolving re-reads the manifest and config from the store and checks the layers' types.
    let resolved = store
        .layout()
        .resolve_manifest(image, digest.clone(), &data)?;
    let desc = DescriptorBuilder::default()
        .media_type(MediaType::from(media_type.as_str()))
        .digest(
            oci_spec::image::Digest::from_str(&digest.to_string()).map_err(|e| {
                ImageError::Invalid {
                    image: image.to_string(),
                    what: "manifest digest".into(),
                    reason: e.to_string(),
                }
            })?,
        )
        .size(data.len() as u64)
        .build()
        .map_err(|e| ImageError::Invalid {
            image: image.to_string(),
            what: "manifest descriptor".into(),
            reason: e.to_string(),
        })?;
    store.tag(image, desc)?;
    tracing::info!(image, manifest = %digest, layers = resolved.layers.len(), "pulled image");
    Ok(resolved)
}

/// Downloads one blob into a temp file, hashing it as it arrives and stopping as soon as the
/// registry sends more than the descriptor's size; renames it into the store only if it matches.
async fn fetch_blob(
    store: &ImageStore,
    client: &Client,
    reference: &Reference,
    image: &str,
    desc: &Descriptor,
) -> Result<()> {
    let digest = layout::parse_digest(image, desc.digest().as_ref())?;
    let path = store.layout().blob_path(&digest);
    if path.exists() {
        return Ok(());
    }
    let registry = reference.resolve_registry().to_string();
    let tmp = tempfile::NamedTempFile::new_in(store.tmp_dir())
        .map_err(|e| ImageError::io("creating a download file in", store.tmp_dir(), e))?;
    let tmp_path: PathBuf = tmp.path().to_path_buf();
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&tmp_path)
        .await
        .map_err(|e| ImageError::io("opening", &tmp_path, e))?;
    let mut writer = VerifyingWriter {
        inner: tokio::io::BufWriter::with_capacity(256 * 1024, file),
        hasher: ring::digest::Context::new(&ring::digest::SHA256),
        written: 0,
        max: desc.size(),
    };
    let pulled = client
        .pull_blob(reference, digest.to_string().as_str(), &mut writer)
        .await;
    if writer.written > desc.size() {
        return Err(ImageError::SizeMismatch {
            image: image.to_string(),
            blob: digest.to_string(),
            expected: desc.size(),
            actual: writer.written,
        });
    }
    pulled.map_err(|e| registry_error(image, &registry, e))?;
    writer
        .inner
        .flush()
        .await
        .map_err(|e| ImageError::io("writing", &tmp_path, e))?;
    let actual = Digest::from_sha256(writer.hasher.finish());
    layout::check_blob(image, &digest, desc.size(), &actual, writer.written)?;
    tmp.persist(&path)
        .map_err(|e| ImageError::io("storing blob", &path, e.error))?;
    Ok(())
}

/// Hashes and counts what is written, and refuses a write past `max` bytes (a registry that
/// sends more than the descriptor says is cut off, not stored).
struct VerifyingWriter<W> {
    inner: W,
    hasher: ring::digest::Context,
    written: u64,
    max: u64,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for VerifyingWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.written.saturating_add(buf.len() as u64) > this.max {
            this.written = this.written.saturating_add(buf.len() as u64);
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the registry sent more bytes than the blob's descriptor says",
            )));
        }
        let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            this.hasher.update(&buf[..*n]);
            this.written += *n as u64;
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn check_digest(image: &str, expected: &str, actual: &Digest) -> Result<()> {
    if expected != actual.to_string() {
        return Err(ImageError::DigestMismatch {
            image: image.to_string(),
            blob: expected.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

fn manifest_media_type(image: &str, data: &[u8]) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let p: Probe = layout::parse_json(image, "manifest", data)?;
    Ok(match (p.media_type, p.manifests) {
        (Some(t), _) => t,
        // OCI allows omitting mediaType; an index is recognised by its manifests list.
        (None, Some(_)) => media::OCI_INDEX.to_string(),
        (None, None) => media::OCI_MANIFEST.to_string(),
    })
}

fn is_unknown(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|o| matches!(o.code, C::ManifestUnknown | C::NameUnknown)),
        _ => false,
    }
}

fn registry_error(
    image: &str,
    registry: &str,
    e: oci_client::errors::OciDistributionError,
) -> ImageError {
    use oci_client::errors::OciDistributionError as E;
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let hint = match &e {
        _ if chain.to_lowercase().contains("certificate") => {
            "; the registry's TLS certificate is not trusted: add its CA to the registry options"
        }
        E::RequestError(re) if re.is_connect() => {
            "; is the registry running, and does it speak HTTP or HTTPS as configured?"
        }
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            "; check the registry credentials"
        }
        _ => "",
    };
    ImageError::Registry {
        image: image.to_string(),
        registry: registry.to_string(),
        reason: format!("{chain}{hint}"),
    }
}
