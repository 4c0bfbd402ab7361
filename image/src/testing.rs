//! Test support (feature `testing`): hostile and big layers, OCI archives, and Debian's
//! docker-registry on loopback with pushes to it. The busybox images themselves are the
//! product's ([`crate::busybox`], re-exported here). Other crates' tests use this to get real
//! images without any network; the daemon does not build it.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::json;
/// The tar crate, for [`LayerTar::raw_entry`]'s header types.
pub use tar;

pub use crate::busybox::{
    BUSYBOX, HTTPD_INDEX, LayerBlob, LayerTar, LayoutWriter, ProcessConfig, busybox_applets,
    busybox_layer, compress, httpd_layer, write_busybox_layout,
};
use crate::busybox::{hash_file, host_arch};
use crate::digest::Digest;
use crate::layout::LayoutRef;
use crate::media::{self, Compression};
use crate::registry::{self, RegistryOptions};

/// Debian's registry binary (package docker-registry).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// The entries only tests write: xattrs, hard links, whiteouts, and raw (hostile) headers.
impl LayerTar {
    /// A file carrying extended attributes as `SCHILY.xattr.*` pax records.
    pub fn file_with_xattrs(
        &mut self,
        path: &str,
        mode: u32,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        let records = keys.iter().zip(xattrs).map(|(k, (_, v))| (k.as_str(), *v));
        self.builder
            .append_pax_extensions(records)
            .expect("tar pax");
        self.file(path, mode, data)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("tar hardlink");
        self
    }

    /// An OCI whiteout: deletes `path` from the layers below.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let p = Path::new(path);
        let name = p.file_name().expect("a file name").to_string_lossy();
        let wh = p.with_file_name(format!(".wh.{name}"));
        self.file(&wh.to_string_lossy(), 0o644, b"")
    }

    /// An OCI opaque marker: hides everything below `dir` in the layers below.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let p = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.file(&p, 0o644, b"")
    }

    /// A raw header path (for hostile-layer tests: `..`, absolute paths).
    pub fn raw_file(&mut self, path: &[u8], data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        let name = &mut h.as_gnu_mut().expect("gnu header").name;
        name[..path.len()].copy_from_slice(path);
        h.set_cksum();
        self.builder.append(&h, data).expect("tar raw");
        self
    }

    /// Any entry, for hostile-layer tests: the raw `path` and `link` bytes go into the GNU
    /// header as they are (`../../x`, `/abs/x`, a hard link to `../../host-file`), and
    /// `tweak` may set any other header field (an extreme mtime, uid, device numbers).
    pub fn raw_entry(
        &mut self,
        kind: tar::EntryType,
        path: &[u8],
        link: Option<&[u8]>,
        tweak: impl FnOnce(&mut tar::Header),
        data: &[u8],
    ) -> &mut Self {
        // Names longer than the header's 100 bytes go in GNU long-name records before it.
        for (long_kind, bytes) in [
            (tar::EntryType::GNULongName, Some(path)),
            (tar::EntryType::GNULongLink, link),
        ] {
            if let Some(bytes) = bytes.filter(|b| b.len() > 100) {
                let mut data = bytes.to_vec();
                data.push(0);
                let mut l = Self::header(long_kind, 0o644, data.len() as u64);
                l.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
                l.set_cksum();
                self.builder.append(&l, &data[..]).expect("tar long name");
            }
        }
        let mut h = Self::header(kind, 0o644, data.len() as u64);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            let n = path.len().min(100);
            gnu.name[..n].copy_from_slice(&path[..n]);
            if let Some(link) = link {
                let n = link.len().min(100);
                gnu.linkname[..n].copy_from_slice(&link[..n]);
            }
        }
        tweak(&mut h);
        h.set_cksum();
        self.builder.append(&h, data).expect("tar raw");
        self
    }
}

/// Writes, streaming, a layer blob at `path`: a tar holding one file `name` of `size` zero
/// bytes, uncompressed or gzip (flate2). Nothing of that size is ever in memory, so a test can
/// make a gzip bomb (1 GiB of zeros is about 1 MiB of gzip) or a layer bigger than its RAM
/// budget. Returns the blob's digest and size and the tar's diff_id.
pub fn write_zeros_layer(
    path: &Path,
    name: &str,
    size: u64,
    compression: Compression,
) -> io::Result<LayerBlob> {
    let file = io::BufWriter::with_capacity(256 * 1024, fs::File::create(path)?);
    let diff_id = match compression {
        Compression::None => zeros_tar(HashingWriter::new(file), name, size)?.1,
        Compression::Gzip => {
            // Level 6: with the zlib-rs backend (the workspace's, for SPDY's preset dictionary)
            // the fast level stores zeros at ~1:100, no bomb; level 6 reaches deflate's ~1:1000.
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            let (gz, diff_id) = zeros_tar(HashingWriter::new(gz), name, size)?;
            gz.finish()?.flush()?;
            diff_id
        }
        Compression::Zstd => {
            return Err(io::Error::other("write_zeros_layer: zstd is not supported"));
        }
    };
    let (digest, blob_size) = hash_file(path)?;
    Ok(LayerBlob {
        digest,
        size: blob_size,
        diff_id,
        compression,
    })
}

/// Streams the tar into `out`; returns the inner writer and the tar's digest.
fn zeros_tar<W: Write>(out: HashingWriter<W>, name: &str, size: u64) -> io::Result<(W, Digest)> {
    let mut b = tar::Builder::new(out);
    let mut h = LayerTar::header(tar::EntryType::Regular, 0o644, size);
    b.append_data(&mut h, name, io::repeat(0).take(size))?;
    let mut out = b.into_inner()?;
    out.flush()?;
    Ok((out.inner, Digest::from_sha256(out.ctx.finish())))
}

struct HashingWriter<W> {
    inner: W,
    ctx: ring::digest::Context,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Adds `whiteout:latest` to a layout: busybox, then a layer adding /data/{a,b} and /opq/old,
/// then a layer deleting /data/a and /etc/group, and making /opq opaque with /opq/new.
pub fn add_whiteout_image(w: &mut LayoutWriter, compression: Compression) -> io::Result<Digest> {
    let base = busybox_layer()?;
    let mut add = LayerTar::new();
    add.dir("data", 0o755)
        .file("data/a", 0o644, b"a")
        .file("data/b", 0o644, b"b")
        .dir("opq", 0o755)
        .file("opq/old", 0o644, b"old");
    let add = add.finish();
    let mut del = LayerTar::new();
    del.whiteout("data/a")
        .whiteout("etc/group")
        .dir("opq", 0o755)
        .opaque("opq")
        .file("opq/new", 0o644, b"new");
    let del = del.finish();
    w.add_image(
        "whiteout:latest",
        &[
            (&base, compression),
            (&add, compression),
            (&del, compression),
        ],
        &ProcessConfig::cmd(&["sh"]),
    )
}

/// Tars an OCI layout directory into an oci-archive.
pub fn write_oci_archive(layout: &Path, archive: &Path) -> io::Result<()> {
    let mut b = tar::Builder::new(fs::File::create(archive)?);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_path_with_name(layout.join("oci-layout"), "oci-layout")?;
    b.append_path_with_name(layout.join("index.json"), "index.json")?;
    b.append_dir_all("blobs", layout.join("blobs"))?;
    b.into_inner()?.sync_all()
}

/// Debian's docker-registry, listening on 127.0.0.1 at a free port, storing into a temp dir;
/// killed and removed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    ca_pem: Option<Vec<u8>>,
}

impl TestRegistry {
    /// Starts a plain-HTTP registry.
    pub fn start_http() -> io::Result<TestRegistry> {
        Self::start(false)
    }

    /// Starts an HTTPS registry with a fresh self-signed certificate for 127.0.0.1.
    pub fn start_https() -> io::Result<TestRegistry> {
        Self::start(true)
    }

    fn start(tls: bool) -> io::Result<TestRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("podd-test-registry-")
            .tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut tls_yaml = String::new();
        let mut ca_pem = None;
        if tls {
            let ck = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_string(),
                "localhost".to_string(),
            ])
            .map_err(io::Error::other)?;
            let cert = ck.cert.pem();
            fs::write(dir.path().join("cert.pem"), &cert)?;
            fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem())?;
            tls_yaml = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            );
            ca_pem = Some(cert.into_bytes());
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{DOCKER_REGISTRY}: {e} (install the docker-registry package)"),
                )
            })?;
        let mut reg = TestRegistry {
            child,
            dir,
            addr,
            ca_pem,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(reg);
            }
            if let Some(status) = reg.child.try_wait()? {
                let log =
                    fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "docker-registry exited with {status}: {log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "docker-registry did not start listening within 15 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The storage directory (to check or corrupt what was pushed).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Client options that reach this registry (plain HTTP, or trusting its certificate).
    pub fn options(&self) -> RegistryOptions {
        match &self.ca_pem {
            Some(pem) => RegistryOptions {
                extra_ca_pem: vec![pem.clone()],
                ..Default::default()
            },
            None => RegistryOptions {
                plain_http: vec![self.host()],
                ..Default::default()
            },
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`push_layout_as`] presents an image to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// The layout's OCI manifest as it is.
    Oci,
    /// The manifest rewritten with Docker v2 schema 2 media types (as Docker Hub serves).
    DockerV2,
    /// An OCI index under the tag: first a linux/riscv64 entry (the Docker v2 form), then this
    /// machine's platform (the OCI manifest), so a puller must choose by platform.
    Index,
}

/// Pushes the image `reference` of the layout at `layout` to `target`
/// (`HOST:PORT/REPO:TAG`), blobs first, then the manifest.
pub async fn push_layout(
    layout: &Path,
    reference: &str,
    target: &str,
    opts: &RegistryOptions,
) -> crate::Result<()> {
    push_layout_as(layout, reference, target, opts, PushFormat::Oci)
        .await
        .map(|_| ())
}

/// [`push_layout`] in a chosen format; returns the digest of what the tag points at.
pub async fn push_layout_as(
    layout: &Path,
    reference: &str,
    target: &str,
    opts: &RegistryOptions,
    format: PushFormat,
) -> crate::Result<Digest> {
    let l = crate::layout::Layout::open(layout)?;
    let image = l.resolve(reference, &LayoutRef::parse(reference)?)?;
    let target_ref = registry::parse_reference(target)?;
    let client = opts.client();
    let reg = target_ref.resolve_registry().to_string();
    let err = |e: oci_client::errors::OciDistributionError| crate::ImageError::Registry {
        image: target.to_string(),
        registry: reg.clone(),
        reason: e.to_string(),
    };
    client.store_auth_if_needed(&reg, &opts.auth()).await;
    let config_digest =
        Digest::from_str(image.manifest.config().digest().as_ref()).expect("verified digest");
    let mut blobs = vec![config_digest];
    blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
    for d in blobs {
        let path = l.blob_path(&d);
        let data = fs::read(&path).map_err(|e| crate::ImageError::io("reading", &path, e))?;
        client
            .push_blob(&target_ref, &data, &d.to_string())
            .await
            .map_err(err)?;
    }
    let oci = fs::read(l.blob_path(&image.manifest_digest))
        .map_err(|e| crate::ImageError::io("reading", l.blob_path(&image.manifest_digest), e))?;
    let docker = docker_v2_manifest(&oci);
    let by_digest = |d: &Digest| {
        oci_client::Reference::with_digest(
            target_ref.registry().to_string(),
            target_ref.repository().to_string(),
            d.to_string(),
        )
    };
    match format {
        PushFormat::Oci => {
            client
                .push_manifest_raw(&target_ref, oci.clone(), http_header(media::OCI_MANIFEST))
                .await
                .map_err(err)?;
            Ok(Digest::of(&oci))
        }
        PushFormat::DockerV2 => {
            client
                .push_manifest_raw(
                    &target_ref,
                    docker.clone(),
                    http_header(media::DOCKER_MANIFEST),
                )
                .await
                .map_err(err)?;
            Ok(Digest::of(&docker))
        }
        PushFormat::Index => {
            let (od, dd) = (Digest::of(&oci), Digest::of(&docker));
            client
                .push_manifest_raw(
                    &by_digest(&od),
                    oci.clone(),
                    http_header(media::OCI_MANIFEST),
                )
                .await
                .map_err(err)?;
            client
                .push_manifest_raw(
                    &by_digest(&dd),
                    docker.clone(),
                    http_header(media::DOCKER_MANIFEST),
                )
                .await
                .map_err(err)?;
            let index = json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": [
                    {"mediaType": media::DOCKER_MANIFEST, "digest": dd.to_string(), "size": docker.len(),
                     "platform": {"os": "linux", "architecture": "riscv64"}},
                    {"mediaType": media::OCI_MANIFEST, "digest": od.to_string(), "size": oci.len(),
                     "platform": {"os": "linux", "architecture": host_arch()}},
                ],
            });
            let index = serde_json::to_vec(&index).expect("json");
            client
                .push_manifest_raw(&target_ref, index.clone(), http_header(media::OCI_INDEX))
                .await
                .map_err(err)?;
            Ok(Digest::of(&index))
        }
    }
}

/// The OCI manifest with Docker v2 schema 2 media types.
fn docker_v2_manifest(oci: &[u8]) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(oci).expect("manifest json");
    m["mediaType"] = json!(media::DOCKER_MANIFEST);
    m["config"]["mediaType"] = json!(media::DOCKER_CONFIG);
    if let Some(layers) = m["layers"].as_array_mut() {
        for l in layers {
            if l["mediaType"] == json!(media::OCI_LAYER_GZIP) {
                l["mediaType"] = json!(media::DOCKER_LAYER_GZIP);
            }
        }
    }
    serde_json::to_vec(&m).expect("json")
}

fn http_header(v: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(v)
}
