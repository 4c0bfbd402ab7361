//! Bearer tokens and what each may do.
//!
//! Over the Unix socket (root only, mode 0600) every request is trusted. Over TLS a request
//! carries `Authorization: Bearer TOKEN`: the admin token may do anything; a node's agent token
//! may read, may write its own Node (and its status), and may write the status of the pods
//! bound to its node. A missing or unknown token is 401; a known token out of its scope, 403.
//! Tokens live in `<data>/tokens/` (`admin`, and `nodes/<node>`), mode 0600. `podd token
//! create NODE` writes a node's file while the server runs: the server reloads the node tokens
//! whenever `tokens/nodes` changes (its mtime), so a new token works at once and a removed one
//! (`podd token delete NODE`) stops working at once.

use crate::error::ApiError;
use rand::RngCore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A local root process over the Unix socket.
    Local,
    Admin,
    /// The agent of this node.
    Node(String),
}

pub struct Authenticator {
    admin: String,
    /// token -> node name
    nodes: RwLock<HashMap<String, String>>,
    dir: Option<PathBuf>,
    /// The mtime of `tokens/nodes` when `nodes` was read from it.
    nodes_mtime: RwLock<Option<std::time::SystemTime>>,
}

/// The node tokens under `tokens/nodes` (token -> node), and the directory's mtime.
fn read_node_tokens(tdir: &Path) -> (HashMap<String, String>, Option<std::time::SystemTime>) {
    let ndir = tdir.join("nodes");
    let mtime = std::fs::metadata(&ndir).and_then(|m| m.modified()).ok();
    let mut nodes = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(&ndir) {
        for e in rd.flatten() {
            let node = e.file_name().to_string_lossy().to_string();
            // Editors and `podd token create` write through temporary names.
            if node.starts_with('.') || node.ends_with(".tmp") {
                continue;
            }
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                let t = t.trim();
                if !t.is_empty() {
                    nodes.insert(t.to_string(), node);
                }
            }
        }
    }
    (nodes, mtime)
}

fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Compares without an early exit, so timing does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_secret(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data.as_bytes())
}

impl Authenticator {
    /// Tokens kept only in memory (tests, benchmarks).
    pub fn in_memory(admin: impl Into<String>) -> Authenticator {
        Authenticator {
            admin: admin.into(),
            nodes: RwLock::new(HashMap::new()),
            dir: None,
            nodes_mtime: RwLock::new(None),
        }
    }

    /// Loads the tokens under `<dir>/tokens`, creating the admin token on first use.
    pub fn load_or_init(dir: &Path) -> std::io::Result<Authenticator> {
        let tdir = dir.join("tokens");
        let admin_path = tdir.join("admin");
        let admin = match std::fs::read_to_string(&admin_path) {
            Ok(t) => t.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let t = new_token();
                write_secret(&admin_path, &t)?;
                t
            }
            Err(e) => return Err(e),
        };
        let (nodes, mtime) = read_node_tokens(&tdir);
        Ok(Authenticator {
            admin,
            nodes: RwLock::new(nodes),
            dir: Some(tdir),
            nodes_mtime: RwLock::new(mtime),
        })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// Issues (or returns the existing) agent token of `node`.
    pub fn issue_node_token(&self, node: &str) -> std::io::Result<String> {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some((t, _)) = nodes.iter().find(|(_, n)| *n == node) {
            return Ok(t.clone());
        }
        let t = new_token();
        if let Some(d) = &self.dir {
            // Whole or not at all: a server reloading meanwhile never reads half a token.
            let tmp = d.join("nodes").join(format!(".{node}.tmp"));
            write_secret(&tmp, &t)?;
            std::fs::rename(&tmp, d.join("nodes").join(node))?;
        }
        nodes.insert(t.clone(), node.to_string());
        Ok(t)
    }

    /// Forgets `node`'s token (and removes its file); true when it had one.
    pub fn revoke_node_token(&self, node: &str) -> std::io::Result<bool> {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let had = nodes.values().any(|n| n == node);
        nodes.retain(|_, n| n != node);
        if let Some(d) = &self.dir {
            match std::fs::remove_file(d.join("nodes").join(node)) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(had)
    }

    /// Rereads the node tokens when `tokens/nodes` changed since they were read.
    fn refresh_node_tokens(&self) {
        let Some(tdir) = &self.dir else { return };
        let now = std::fs::metadata(tdir.join("nodes"))
            .and_then(|m| m.modified())
            .ok();
        if *self.nodes_mtime.read().unwrap_or_else(|p| p.into_inner()) == now {
            return;
        }
        let (nodes, mtime) = read_node_tokens(tdir);
        tracing::info!(nodes = nodes.len(), "node tokens changed on disk; reloaded");
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = nodes;
        *self.nodes_mtime.write().unwrap_or_else(|p| p.into_inner()) = mtime;
    }

    /// Resolves an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, ApiError> {
        let Some(h) = header else {
            return Err(ApiError::Unauthorized(
                "no bearer token: send Authorization: Bearer TOKEN (see /var/lib/podd/tokens)"
                    .into(),
            ));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if token.is_empty() {
            return Err(ApiError::Unauthorized(
                "the Authorization header is not of the form Bearer TOKEN".into(),
            ));
        }
        if constant_time_eq(token.as_bytes(), self.admin.as_bytes()) {
            return Ok(Identity::Admin);
        }
        self.refresh_node_tokens();
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nodes
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(_, n)| n.clone())
        {
            return Ok(Identity::Node(n));
        }
        Err(ApiError::Unauthorized(
            "the bearer token is not valid".into(),
        ))
    }
}

/// What a request wants to do, for authorisation.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub write: bool,
    pub kind: podd_api::Kind,
    /// The object's name (for create: the name in the body).
    pub name: &'a str,
    pub status: bool,
    /// Pods: the node the pod is bound to now.
    pub pod_node: Option<&'a str>,
}

pub fn authorize(id: &Identity, a: &Action<'_>) -> Result<(), ApiError> {
    let node = match id {
        Identity::Local | Identity::Admin => return Ok(()),
        Identity::Node(n) => n,
    };
    if !a.write {
        return Ok(());
    }
    use podd_api::Kind;
    let ok = match a.kind {
        Kind::Node => a.name == node,
        Kind::Pod => a.status && a.pod_node == Some(node.as_str()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "node {node:?} may not write {} {:?}{}: an agent token may only write its own Node and the status of pods bound to it",
            a.kind.plural(),
            a.name,
            if a.status { "/status" } else { "" }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::Kind;

    #[test]
    fn tokens_and_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authenticator::load_or_init(dir.path()).unwrap();
        let t = a.issue_node_token("n1").unwrap();
        assert_eq!(a.issue_node_token("n1").unwrap(), t);
        let b = Authenticator::load_or_init(dir.path()).unwrap();
        assert_eq!(b.admin_token(), a.admin_token());
        assert_eq!(
            b.authenticate(Some(&format!("Bearer {t}"))).unwrap(),
            Identity::Node("n1".into())
        );
        assert!(matches!(
            b.authenticate(None),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            b.authenticate(Some("Bearer nope")),
            Err(ApiError::Unauthorized(_))
        ));
        let n1 = Identity::Node("n1".into());
        let act = |kind, name, status, pod_node| Action {
            write: true,
            kind,
            name,
            status,
            pod_node,
        };
        assert!(authorize(&n1, &act(Kind::Node, "n1", true, None)).is_ok());
        assert!(authorize(&n1, &act(Kind::Node, "n2", true, None)).is_err());
        assert!(authorize(&n1, &act(Kind::Pod, "p", true, Some("n1"))).is_ok());
        assert!(authorize(&n1, &act(Kind::Pod, "p", false, Some("n1"))).is_err());
        assert!(authorize(&n1, &act(Kind::Pod, "p", true, Some("n2"))).is_err());
        assert!(authorize(&n1, &act(Kind::Deployment, "d", false, None)).is_err());
        assert!(authorize(&Identity::Admin, &act(Kind::Deployment, "d", false, None)).is_ok());
    }

    #[test]
    fn tokens_written_or_removed_by_another_process_apply_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let server = Authenticator::load_or_init(dir.path()).unwrap();
        // `podd token create` runs as its own process, with its own Authenticator.
        let cli = Authenticator::load_or_init(dir.path()).unwrap();
        let t = cli.issue_node_token("n2").unwrap();
        let bearer = format!("Bearer {t}");
        assert_eq!(
            server.authenticate(Some(&bearer)).unwrap(),
            Identity::Node("n2".into())
        );
        assert!(cli.revoke_node_token("n2").unwrap());
        assert!(!cli.revoke_node_token("n2").unwrap(), "already gone");
        // Same-second mtimes on coarse file systems: make the change visible for sure.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::open(dir.path().join("tokens/nodes"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(matches!(
            server.authenticate(Some(&bearer)),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
