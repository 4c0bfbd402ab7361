//! The busybox images `podd image seed-busybox` puts in a node's store without any registry:
//! `busybox:latest` and `busybox-httpd:latest`, built from the host's statically linked busybox
//! (Debian's busybox-static) into an OCI image layout. The layer and layout writers here are
//! also the base of the test images of the `testing` feature.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::digest::Digest;
use crate::layout::REF_NAME;
use crate::media::{self, Compression};

/// Debian's statically linked busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";
/// The page busybox-httpd serves at `/`.
pub const HTTPD_INDEX: &str = "<html><body>hello from podd busybox-httpd</body></html>\n";
/// Fixed mtime for reproducible layers.
const MTIME: u64 = 1_700_000_000;

/// Builds a layer tar in memory; entries are root-owned with a fixed mtime.
pub struct LayerTar {
    pub(crate) builder: tar::Builder<Vec<u8>>,
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

    pub(crate) fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
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

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("tar finish")
    }
}

pub(crate) fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
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

pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}
