//! Test support (feature `testing`): builds busybox OCI images from Debian's busybox-static,
//! writes OCI layouts and archives, runs Debian's docker-registry on loopback and pushes to it.
//! Other crates' tests use this to get real images without any network.

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

use crate::digest::Digest;
use crate::layout::{LayoutRef, REF_NAME};
use crate::media::{self, Compression};
use crate::registry::{self, RegistryOptions};

/// Debian's statically linked busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";
/// Debian's registry binary (package docker-registry).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
/// The page busybox-httpd serves at `/`.
pub const HTTPD_INDEX: &str = "<html><body>hello from podd busybox-httpd</body></html>\n";
/// Fixed mtime for reproducible layers.
const MTIME: u64 = 1_700_000_000;

/// Builds a layer tar in memory; entries are root-owned with a fixed mtime.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> LayerTar {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        LayerTar { builder }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(size);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, path, io::empty())
            .expect("tar dir");
        self
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.builder
            .append_data(&mut h, path, data)
            .expect("tar file");
        self
    }

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

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
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

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("tar finish")
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
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
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

fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    crate::digest::HashingReader::new(io::BufReader::new(fs::File::open(path)?)).finish()
}

/// A layer blob already in a layout (see [`LayoutWriter::add_blob_file`]).
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub compression: Compression,
}

/// Compresses a layer tar. Results for big tars are cached per process, as tests compress the
/// same busybox layer many times (and compression is slow in unoptimised builds).
pub fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    type Cache = std::sync::Mutex<std::collections::HashMap<(Digest, u8), Vec<u8>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    if tar.len() < 256 * 1024 || compression == Compression::None {
        return compress_uncached(tar, compression);
    }
    let key = (Digest::of(tar), compression as u8);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().expect("cache").get(&key) {
        return hit.clone();
    }
    let out = compress_uncached(tar, compression);
    cache.lock().expect("cache").insert(key, out.clone());
    out
}

fn compress_uncached(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar).expect("gzip");
            enc.finish().expect("gzip")
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// The applets of the host's busybox (`busybox --list`).
pub fn busybox_applets() -> io::Result<Vec<String>> {
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other("busybox --list failed"));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect())
}

/// The busybox base layer: /bin/busybox and its applet symlinks, /etc/passwd and /etc/group,
/// and the usual empty directories.
pub fn busybox_layer() -> io::Result<Vec<u8>> {
    let busybox = fs::read(BUSYBOX).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{BUSYBOX}: {e} (install the busybox-static package)"),
        )
    })?;
    let mut t = LayerTar::new();
    t.dir("./", 0o755);
    for d in [
        "bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/bin", "var",
    ] {
        t.dir(d, 0o755);
    }
    t.dir("tmp", 0o1777);
    t.file("bin/busybox", 0o755, &busybox);
    for applet in busybox_applets()? {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    t.file(
        "etc/group",
        0o644,
        b"root:x:0:\nwww:x:33:\nnogroup:x:65534:\n",
    );
    Ok(t.finish())
}

/// The busybox-httpd top layer: /www/index.html.
pub fn httpd_layer() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("www", 0o755);
    t.file("www/index.html", 0o644, HTTPD_INDEX.as_bytes());
    t.finish()
}

/// The process part of an image config.
#[derive(Debug, Clone, Default)]
pub struct ProcessConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ProcessConfig {
    pub fn cmd(cmd: &[&str]) -> ProcessConfig {
        ProcessConfig {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: "/".into(),
            ..Default::default()
        }
    }
}

/// Writes an OCI image layout, one image at a time.
pub struct LayoutWriter {
    root: PathBuf,
    entries: Vec<serde_json::Value>,
}

impl LayoutWriter {
    /// Creates the layout at `root` (made if missing).
    pub fn create(root: &Path) -> io::Result<LayoutWriter> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let w = LayoutWriter {
            root: root.to_path_buf(),
            entries: Vec::new(),
        };
        w.write_index()?;
        Ok(w)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores a blob; returns its digest and size.
    pub fn add_blob(&self, data: &[u8]) -> io::Result<(Digest, u64)> {
        let d = Digest::of(data);
        fs::write(self.root.join("blobs/sha256").join(d.hex()), data)?;
        Ok((d, data.len() as u64))
    }

    /// Moves the file at `path` into the layout's blobs (streaming its digest); returns its
    /// digest and size.
    pub fn add_blob_file(&self, path: &Path) -> io::Result<(Digest, u64)> {
        let (d, size) = hash_file(path)?;
        let to = self.root.join("blobs/sha256").join(d.hex());
        if fs::rename(path, &to).is_err() {
            fs::copy(path, &to)?;
            fs::remove_file(path)?;
        }
        Ok((d, size))
    }

    /// Adds an image named `ref_name` (the ref.name annotation) from uncompressed layer tars,
    /// each compressed as given. Returns the manifest digest.
    pub fn add_image(
        &mut self,
        ref_name: &str,
        layers: &[(&[u8], Compression)],
        process: &ProcessConfig,
    ) -> io::Result<Digest> {
        let mut blobs = Vec::new();
        for (tar, c) in layers {
            let (digest, size) = self.add_blob(&compress(tar, *c))?;
            blobs.push(LayerBlob {
                digest,
                size,
                diff_id: Digest::of(tar),
                compression: *c,
            });
        }
        self.add_image_blobs(ref_name, &blobs, process)
    }

    /// Adds an image whose layer blobs are already in the layout. Returns the manifest digest.
    pub fn add_image_blobs(
        &mut self,
        ref_name: &str,
        layers: &[LayerBlob],
        process: &ProcessConfig,
    ) -> io::Result<Digest> {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(l.diff_id.to_string());
            layer_descs.push(json!({"mediaType": l.compression.oci_media_type(), "digest": l.digest.to_string(), "size": l.size}));
        }
        let arch = host_arch();
        let mut cfg = serde_json::Map::new();
        if !process.entrypoint.is_empty() {
            cfg.insert("Entrypoint".into(), json!(process.entrypoint));
        }
        if !process.cmd.is_empty() {
            cfg.insert("Cmd".into(), json!(process.cmd));
        }
        if !process.env.is_empty() {
            cfg.insert("Env".into(), json!(process.env));
        }
        if !process.working_dir.is_empty() {
            cfg.insert("WorkingDir".into(), json!(process.working_dir));
        }
        if !process.user.is_empty() {
            cfg.insert("User".into(), json!(process.user));
        }
        let config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": arch,
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let (cd, csize) = self.add_blob(&serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": cd.to_string(), "size": csize},
            "layers": layer_descs,
        });
        let (md, msize) = self.add_blob(&serde_json::to_vec(&manifest)?)?;
        self.entries.push(json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": md.to_string(),
            "size": msize,
            "annotations": {REF_NAME: ref_name},
        }));
        self.write_index()?;
        Ok(md)
    }

    fn write_index(&self) -> io::Result<()> {
        let index =
            json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": self.entries});
        fs::write(
            self.root.join("index.json"),
            serde_json::to_vec_pretty(&index)?,
        )
    }
}

/// Writes a layout at `dir` with `busybox:latest` (Cmd `sh`) and `busybox-httpd:latest` (Cmd
/// `httpd -f -p 8080 -h /www`, sharing the busybox layer), layers compressed with `compression`.
pub fn write_busybox_layout(dir: &Path, compression: Compression) -> io::Result<LayoutWriter> {
    let base = busybox_layer()?;
    let mut w = LayoutWriter::create(dir)?;
    w.add_image(
        "busybox:latest",
        &[(&base, compression)],
        &ProcessConfig::cmd(&["sh"]),
    )?;
    let www = httpd_layer();
    w.add_image(
        "busybox-httpd:latest",
        &[(&base, compression), (&www, compression)],
        &ProcessConfig::cmd(&["httpd", "-f", "-p", "8080", "-h", "/www"]),
    )?;
    Ok(w)
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

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

fn http_header(v: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(v)
}
