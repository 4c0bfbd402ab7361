//! Secrets encrypted at rest, as kube-apiserver's `aesgcm` provider and k3s's secrets
//! encryption do: a [`Store`] in front of the real one that seals the values of `secrets` keys
//! with AES-256-GCM on the way in and opens them on the way out. Everything above it (the
//! watch cache, the registry, clients) sees plaintext objects; the store (SQLite, etcd,
//! memory) holds only `k8s:enc:aesgcm:v1:<key name>:` + a random 12-byte nonce + the
//! ciphertext and tag, with the store key as associated data (a sealed value copied under
//! another key does not open).
//!
//! The keys are in `<data>/encryption-keys.json` (0600, created at the first start with one
//! random key): `{"keys": [{"name": "key1", "secret": "<base64 of 32 bytes>"}, ...]}`. The first
//! key seals every write; any listed key opens. At start, every Secret not sealed with the first
//! key is sealed again with it, so a rotation is: put a new key first, restart, drop the old
//! key (docs/SECURITY.md). Values stored before encryption (plain JSON) are read as they are
//! and sealed by that same pass.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use futures::StreamExt;
use podd_api::Kind;
use podd_store::{KeyValue, ListResult, Revision, Store, StoreError, WatchStream};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, OnceLock};

/// The key file, under the server's data dir.
pub const KEY_FILE: &str = "encryption-keys.json";

/// What a sealed value starts with, before the key's name and a `:` (Kubernetes' form, so the
/// provider and key of any stored value can be read off it).
pub const SEALED_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the encryption key file {}: {why}", path.display())]
    BadKeyFile { path: PathBuf, why: String },
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    name: String,
    /// 32 bytes, base64.
    secret: String,
}

struct NamedKey {
    name: String,
    cipher: Aes256Gcm,
}

/// The keys a server seals and opens Secrets with: the first seals, any opens.
pub struct KeySet {
    keys: Vec<NamedKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("KeySet").field("keys", &names).finish()
    }
}

fn new_entry(name: &str) -> KeyEntry {
    let key = Aes256Gcm::generate_key(OsRng);
    KeyEntry {
        name: name.into(),
        secret: base64::engine::general_purpose::STANDARD.encode(key),
    }
}

impl KeySet {
    fn from_entries(entries: &[KeyEntry]) -> Result<KeySet, String> {
        if entries.is_empty() {
            return Err("it lists no key; the first key seals Secrets".into());
        }
        let mut keys: Vec<NamedKey> = Vec::new();
        for e in entries {
            if e.name.is_empty() || e.name.contains(':') {
                return Err(format!(
                    "key name {:?} must be non-empty and without ':'",
                    e.name
                ));
            }
            if keys.iter().any(|k| k.name == e.name) {
                return Err(format!("key name {:?} is listed twice", e.name));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e.secret.trim())
                .map_err(|err| format!("key {:?} is not base64: {err}", e.name))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "key {:?} has {} bytes; AES-256 needs 32 (head -c 32 /dev/urandom | base64)",
                    e.name,
                    bytes.len()
                ));
            }
            keys.push(NamedKey {
                name: e.name.clone(),
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            });
        }
        Ok(KeySet { keys })
    }

    /// One new random key, `key1`, kept only in memory.
    pub fn generate() -> KeySet {
        Self::from_entries(&[new_entry("key1")]).expect("a generated key is valid")
    }

    /// The key of servers without a data dir (tests): one per process, so a control plane
    /// restarted in the same process over the same store still opens its Secrets.
    pub fn in_memory() -> Arc<KeySet> {
        static KEYS: OnceLock<Arc<KeySet>> = OnceLock::new();
        KEYS.get_or_init(|| Arc::new(KeySet::generate())).clone()
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let f: KeyFile = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        Self::from_entries(&f.keys)
    }

    /// Loads `<data_dir>/encryption-keys.json`, creating it (0600, one random key) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<KeySet, EncryptionError> {
        let path = data_dir.join(KEY_FILE);
        let io = |what, source| EncryptionError::Io {
            what,
            path: path.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::tls::private_dir(data_dir).map_err(|e| io("create the dir of", e))?;
                let file = KeyFile {
                    keys: vec![new_entry("key1")],
                };
                let text = serde_json::to_string_pretty(&file).expect("plain data serializes");
                // Written aside and renamed, so a crash never leaves a half-written key.
                let tmp = data_dir.join(format!(".{KEY_FILE}.tmp"));
                crate::tls::write_private_file(&tmp, text.as_bytes())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| io("write", e))?;
                tracing::info!(path = %path.display(), "created the Secrets encryption key");
                text
            }
            Err(e) => return Err(io("read", e)),
        };
        crate::tls::tighten_file(&path).map_err(|e| io("set 0600 on", e))?;
        Self::parse(&text).map_err(|why| EncryptionError::BadKeyFile { path, why })
    }

    /// The name of the key that seals.
    pub fn primary(&self) -> &str {
        &self.keys[0].name
    }

    /// Seals `plain`, stored under `store_key`, with the first key and a fresh random nonce.
    pub fn seal(&self, store_key: &str, plain: &[u8]) -> Vec<u8> {
        let k = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = k
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: store_key.as_bytes(),
                },
            )
            .expect("AES-GCM seals any message under 64 GiB");
        let mut out =
            Vec::with_capacity(SEALED_PREFIX.len() + k.name.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(SEALED_PREFIX);
        out.extend_from_slice(k.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The name of the key `stored` is sealed with; None for a plain value.
    pub fn sealed_with(stored: &[u8]) -> Option<&str> {
        let rest = stored.strip_prefix(SEALED_PREFIX)?;
        let end = rest.iter().position(|&b| b == b':')?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Opens a value stored under `store_key`: a sealed one with the key it names, a plain one
    /// (stored before encryption) as it is.
    pub fn open(&self, store_key: &str, stored: &[u8]) -> Result<Vec<u8>, String> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_vec());
        };
        let name = Self::sealed_with(stored).ok_or("a sealed value without a key name")?;
        let rest = &rest[name.len() + 1..];
        let k = self.keys.iter().find(|k| k.name == name).ok_or_else(|| {
            format!(
                "sealed with key {name:?}, which is not in the key file ({KEY_FILE}); put it back \
                 to read this Secret"
            )
        })?;
        if rest.len() < NONCE_LEN {
            return Err("a sealed value shorter than its nonce".into());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        k.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: store_key.as_bytes(),
                },
            )
            .map_err(|_| format!("does not open with key {name:?} (altered, or another key)"))
    }
}

/// The store keys whose values are sealed: Secrets', in every namespace.
static SEALED_KEYS: LazyLock<String> = LazyLock::new(|| Kind::Secret.key_prefix(None));

/// Whether the value under `key` is sealed: Secrets only.
fn is_sealed_key(key: &str) -> bool {
    key.starts_with(SEALED_KEYS.as_str())
}

/// The store as the server sees it: Secrets sealed in `inner`, plaintext above.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    keys: Arc<KeySet>,
}

fn open_err(key: &str, why: String) -> StoreError {
    StoreError::Backend {
        op: "decrypt",
        message: format!("the Secret at {key} {why}"),
    }
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn Store>, keys: Arc<KeySet>) -> EncryptedStore {
        EncryptedStore { inner, keys }
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Vec<u8> {
        if is_sealed_key(key) {
            self.keys.seal(key, &value)
        } else {
            value
        }
    }

    /// Opens one value read in a list or a watch. A value that does not open is passed on
    /// sealed (the watch cache skips what is not JSON, as it would any unreadable object)
    /// and logged: one unreadable Secret must not stop the server.
    fn open_lenient(keys: &KeySet, kv: &mut KeyValue) {
        if !is_sealed_key(&kv.key) {
            return;
        }
        match keys.open(&kv.key, &kv.value) {
            Ok(plain) => kv.value = plain,
            Err(why) => tracing::error!(key = %kv.key, %why, "cannot decrypt a stored Secret"),
        }
    }

    /// Seals again with the first key every Secret sealed with another key or stored plain;
    /// returns how many were rewritten. A Secret written meanwhile is left as it is (its new
    /// value is sealed with the first key already).
    pub async fn reseal_stale(&self) -> Result<usize, StoreError> {
        let list = self.inner.list(SEALED_KEYS.as_str()).await?;
        let mut count = 0;
        for kv in list.items {
            if KeySet::sealed_with(&kv.value) == Some(self.keys.primary()) {
                continue;
            }
            let plain = match self.keys.open(&kv.key, &kv.value) {
                Ok(p) => p,
                Err(why) => {
                    tracing::error!(key = %kv.key, %why, "cannot decrypt a stored Secret to seal it again");
                    continue;
                }
            };
            let sealed = self.keys.seal(&kv.key, &plain);
            match self
                .inner
                .update(&kv.key, sealed, Some(kv.mod_revision))
                .await
            {
                Ok(_) => count += 1,
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if count > 0 {
            tracing::info!(
                count,
                key = self.keys.primary(),
                "sealed Secrets again with the first encryption key"
            );
        }
        Ok(count)
    }
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let Some(mut kv) = self.inner.get(key).await? else {
            return Ok(None);
        };
        if is_sealed_key(key) {
            kv.value = self
                .keys
                .open(key, &kv.value)
                .map_err(|why| open_err(key, why))?;
        }
        Ok(Some(kv))
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let mut list = self.inner.list(prefix).await?;
        for kv in &mut list.items {
            Self::open_lenient(&self.keys, kv);
        }
        Ok(list)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.inner.create(key, self.seal(key, value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.inner
            .update(key, self.seal(key, value), expected)
            .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let keys = self.keys.clone();
        let stream = self.inner.watch(prefix, after).await?;
        Ok(stream
            .map(move |ev| {
                ev.map(|mut ev| {
                    Self::open_lenient(&keys, &mut ev.kv);
                    ev
                })
            })
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_store::MemStore;

    const SECRET_KEY: &str = "/registry/secrets/default/s";

    fn keys(names: &[(&str, &KeyEntry)]) -> Arc<KeySet> {
        let entries: Vec<KeyEntry> = names
            .iter()
            .map(|(n, e)| KeyEntry {
                name: n.to_string(),
                secret: e.secret.clone(),
            })
            .collect();
        Arc::new(KeySet::from_entries(&entries).unwrap())
    }

    #[test]
    fn seals_with_a_fresh_nonce_and_binds_the_store_key() {
        let k = KeySet::generate();
        let a = k.seal(SECRET_KEY, b"{\"data\":1}");
        let b = k.seal(SECRET_KEY, b"{\"data\":1}");
        assert_ne!(a, b, "a fresh nonce per write");
        assert!(a.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert_eq!(KeySet::sealed_with(&a), Some("key1"));
        assert_eq!(k.open(SECRET_KEY, &a).unwrap(), b"{\"data\":1}");
        assert!(k.open("/registry/secrets/default/other", &a).is_err());
        let mut altered = a.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(k.open(SECRET_KEY, &altered).is_err());
        assert_eq!(
            k.open(SECRET_KEY, b"{}").unwrap(),
            b"{}",
            "plain values read as is"
        );
        assert!(KeySet::generate().open(SECRET_KEY, &a).is_err());
    }

    #[test]
    fn key_files_are_checked() {
        assert!(KeySet::parse(r#"{"keys": []}"#).is_err());
        assert!(KeySet::parse(r#"{"keys": [{"name": "a:b", "secret": ""}]}"#).is_err());
        assert!(KeySet::parse(r#"{"keys": [{"name": "k", "secret": "c2hvcnQ="}]}"#).is_err());
        let e = new_entry("k");
        let text = serde_json::to_string(&KeyFile {
            keys: vec![
                KeyEntry {
                    name: "k".into(),
                    secret: e.secret.clone(),
                },
                KeyEntry {
                    name: "k".into(),
                    secret: e.secret,
                },
            ],
        })
        .unwrap();
        assert!(KeySet::parse(&text).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = KeySet::load_or_create(&data).unwrap();
        let path = data.join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let b = KeySet::load_or_create(&data).unwrap();
        let sealed = a.seal(SECRET_KEY, b"x");
        assert_eq!(b.open(SECRET_KEY, &sealed).unwrap(), b"x");
    }

    #[tokio::test]
    async fn only_secrets_are_sealed_and_rotation_reseals_them() {
        let raw: Arc<dyn Store> = Arc::new(MemStore::new());
        let (old, new) = (new_entry("old"), new_entry("new"));
        let store = EncryptedStore::new(raw.clone(), keys(&[("old", &old)]));
        let pod_key = "/registry/pods/default/p";
        store
            .create(SECRET_KEY, b"{\"v\":\"s3cr3t\"}".to_vec())
            .await
            .unwrap();
        store.create(pod_key, b"{}".to_vec()).await.unwrap();
        let stored = raw.get(SECRET_KEY).await.unwrap().unwrap().value;
        assert_eq!(KeySet::sealed_with(&stored), Some("old"));
        assert!(!String::from_utf8_lossy(&stored).contains("s3cr3t"));
        assert_eq!(raw.get(pod_key).await.unwrap().unwrap().value, b"{}");
        let read = store.get(SECRET_KEY).await.unwrap().unwrap().value;
        assert_eq!(read, b"{\"v\":\"s3cr3t\"}");

        // A new key first: the old one still opens, and the start's pass reseals.
        let rotated = EncryptedStore::new(raw.clone(), keys(&[("new", &new), ("old", &old)]));
        let listed = rotated.list("/registry/").await.unwrap();
        assert!(
            listed
                .items
                .iter()
                .any(|kv| kv.value == b"{\"v\":\"s3cr3t\"}")
        );
        assert_eq!(rotated.reseal_stale().await.unwrap(), 1);
        assert_eq!(rotated.reseal_stale().await.unwrap(), 0);
        let stored = raw.get(SECRET_KEY).await.unwrap().unwrap().value;
        assert_eq!(KeySet::sealed_with(&stored), Some("new"));

        // The old key dropped: still readable; without the new one, a clear error.
        let only_new = EncryptedStore::new(raw.clone(), keys(&[("new", &new)]));
        let read = only_new.get(SECRET_KEY).await.unwrap().unwrap().value;
        assert_eq!(read, b"{\"v\":\"s3cr3t\"}");
        let only_old = EncryptedStore::new(raw.clone(), keys(&[("old", &old)]));
        let err = only_old.get(SECRET_KEY).await.unwrap_err().to_string();
        assert!(err.contains("\"new\""), "{err}");

        // Watches see plaintext.
        let mut w = only_new.watch("/registry/secrets/", 0).await.unwrap();
        only_new
            .update(SECRET_KEY, b"{\"v\":\"2\"}".to_vec(), None)
            .await
            .unwrap();
        let mut last = Vec::new();
        while let Some(Ok(ev)) = w.next().await {
            last = ev.kv.value;
            if last == b"{\"v\":\"2\"}" {
                break;
            }
        }
        assert_eq!(last, b"{\"v\":\"2\"}");
    }
}
