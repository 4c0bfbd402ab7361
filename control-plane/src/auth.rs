//! Bearer tokens and client certificates, and what each may do.
//!
//! Over the Unix socket (root only, mode 0600) every request is trusted. Over TLS a request
//! is authenticated as kube-apiserver does, by the first authenticator that succeeds: first a
//! client certificate from the client CA ([`crate::tls::ClientCertAuth`]; user = subject CN,
//! groups = O values), then `Authorization: Bearer TOKEN`. So a valid certificate wins and the
//! token beside it is not looked at; a refused certificate (expired, from another CA, from a
//! rotated client CA) with a valid token is the token's identity; with neither valid, 401.
//! The admin token, and a certificate in the group `system:masters`, may do anything; a
//! node's agent token, or a certificate `CN=system:node:<name>, O=system:nodes`, may read
//! (ConfigMaps and Secrets only those its pods refer to: [`crate::node_reads`]), and may write only what [`authorize`] allows (an explicit allow-list: its own Node's
//! registration and status, the status of pods bound to it). Any other certificate user is
//! authenticated but authorised for nothing but asking who it is (podd has no RBAC yet): 403.
//! A missing or unknown credential is 401; a known one out of its scope, 403.
//! Tokens live in `<data>/tokens/` (`admin`, and `nodes/<node>`), files 0600 in 0700
//! directories. `podd token create NODE` writes a node's file while the server runs: the server
//! reloads the node tokens whenever `tokens/nodes` changes (its mtime), so a new token works at
//! once and a removed one (`podd token delete NODE`) stops working at once. Nothing but that
//! command issues a node token: the server never makes one up for a node on its own.

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
    /// The admin token.
    Admin,
    /// The agent of this node (its token, or a `system:node:<name>` certificate in
    /// `system:nodes`).
    Node(String),
    /// Any other client-certificate user: the admin when in `system:masters`
    /// ([`UserInfo::is_master`]), otherwise authorised for nothing (no RBAC yet).
    User(UserInfo),
}

/// A user as Kubernetes names it: a user name and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// Kubernetes' superuser group.
pub const MASTERS_GROUP: &str = crate::tls::MASTERS_GROUP;
/// The group of node identities, and the user-name prefix of a node (`system:node:<name>`).
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

impl UserInfo {
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

impl Identity {
    /// The identity of a verified client certificate's subject, as Kubernetes maps it: the
    /// node authorizer's `system:node:<name>` in `system:nodes` is that node (with the
    /// restrictions a node token has), unless the certificate is also in `system:masters`,
    /// which makes it the admin; anyone else is a user. None for an empty CN, which
    /// kube-apiserver's x509 authenticator does not accept either.
    pub fn from_certificate(subject: &crate::tls::ClientSubject) -> Option<Identity> {
        let name = subject.common_name.clone();
        if name.is_empty() {
            return None;
        }
        let user = UserInfo {
            name,
            groups: subject.organizations.clone(),
        };
        if !user.is_master()
            && user.groups.iter().any(|g| g == NODES_GROUP)
            && let Some(node) = user.name.strip_prefix(NODE_USER_PREFIX)
            && !node.is_empty()
        {
            return Some(Identity::Node(node.to_string()));
        }
        Some(Identity::User(user))
    }

    /// Whether this identity may do anything (local root, the admin token, `system:masters`).
    pub fn is_admin(&self) -> bool {
        match self {
            Identity::Local | Identity::Admin => true,
            Identity::Node(_) => false,
            Identity::User(u) => u.is_master(),
        }
    }

    /// The user this identity is, as a SelfSubjectReview reports it: the admin token is
    /// `system:admin` in `system:masters` (as k3s' admin), local root over the socket is
    /// `system:podd:local` in `system:masters`, a node `system:node:<name>` in `system:nodes`;
    /// every one is also in `system:authenticated`.
    pub fn user_info(&self) -> UserInfo {
        let (name, mut groups) = match self {
            Identity::Local => ("system:podd:local".into(), vec![MASTERS_GROUP.into()]),
            Identity::Admin => (crate::tls::ADMIN_USER.into(), vec![MASTERS_GROUP.into()]),
            Identity::Node(n) => (format!("{NODE_USER_PREFIX}{n}"), vec![NODES_GROUP.into()]),
            Identity::User(u) => (u.name.clone(), u.groups.clone()),
        };
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        UserInfo { name, groups }
    }

    /// The key this identity's watches are counted under (None: counted only in the total).
    pub fn watch_key(&self) -> Option<String> {
        match self {
            Identity::Local => None,
            Identity::Admin => Some("admin".to_string()),
            Identity::Node(n) => Some(format!("node {n}")),
            Identity::User(u) => Some(format!("user {}", u.name)),
        }
    }
}

/// The path of SelfSubjectReview (`kubectl auth whoami`), which every authenticated identity
/// may create.
pub const SELF_SUBJECT_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

/// Whether `id` may make a request at all: a certificate user outside `system:masters` and
/// `system:nodes` is authenticated but may only ask who it is and read the health and version
/// endpoints (podd has no RBAC yet: issue 13). Every other identity passes here and is
/// checked further per write ([`authorize`]).
pub fn authorize_request(id: &Identity, method: &str, path: &str) -> Result<(), ApiError> {
    let Identity::User(u) = id else {
        return Ok(());
    };
    if u.is_master() {
        return Ok(());
    }
    let path = path.trim_end_matches('/');
    let open = match method {
        "POST" => path == SELF_SUBJECT_REVIEW_PATH,
        "GET" | "HEAD" => matches!(path, "/healthz" | "/readyz" | "/livez" | "/version"),
        _ => false,
    };
    if open {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "user {:?} (groups {:?}) may not {method} {path}: podd authorises only the group {} \
         (the admin) and nodes ({}) until it has RBAC",
        u.name, u.groups, MASTERS_GROUP, NODES_GROUP
    )))
}

/// The answer to a SelfSubjectReview create (`kubectl auth whoami`): who `id` is.
pub fn self_subject_review(id: &Identity) -> serde_json::Value {
    let u = id.user_info();
    serde_json::json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": u.name, "groups": u.groups}},
    })
}

pub struct Authenticator {
    admin: String,
    /// The client CA's verifier; None: client certificates are not accepted.
    client_certs: Option<crate::tls::ClientCertAuth>,
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
    if let Some(p) = path.parent() {
        crate::tls::private_dir(p)?;
    }
    crate::tls::write_private_file(path, data.as_bytes())
}

/// Sets `tokens/` and `tokens/nodes` to 0700 and every token file to 0600 (installs made by
/// older versions had 0755 directories).
fn tighten_tokens(tdir: &Path) -> std::io::Result<()> {
    let ndir = tdir.join("nodes");
    crate::tls::private_dir(tdir)?;
    crate::tls::private_dir(&ndir)?;
    crate::tls::tighten_file(&tdir.join("admin"))?;
    for e in std::fs::read_dir(&ndir)?.flatten() {
        crate::tls::tighten_file(&e.path())?;
    }
    Ok(())
}

impl Authenticator {
    /// Tokens kept only in memory (tests, benchmarks).
    pub fn in_memory(admin: impl Into<String>) -> Authenticator {
        Authenticator {
            admin: admin.into(),
            client_certs: None,
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
        tighten_tokens(&tdir)?;
        let (nodes, mtime) = read_node_tokens(&tdir);
        Ok(Authenticator {
            admin,
            client_certs: None,
            nodes: RwLock::new(nodes),
            dir: Some(tdir),
            nodes_mtime: RwLock::new(mtime),
        })
    }

    /// Accepts client certificates verified by `verifier` (the client CA's) from now on.
    pub fn trust_client_certificates(&mut self, verifier: crate::tls::ClientCertAuth) {
        self.client_certs = Some(verifier);
    }

    /// Authenticates a TLS request as kube-apiserver does: the client certificate first (when
    /// the connection carries one), then the bearer token; the first that succeeds decides.
    /// When none does, 401 with every reason.
    pub fn authenticate_request(
        &self,
        peer: Option<&crate::tls::PeerCertificates>,
        header: Option<&str>,
    ) -> Result<Identity, ApiError> {
        let mut refused = None;
        if let Some(chain) = peer.filter(|c| !c.0.is_empty()) {
            let verified = match &self.client_certs {
                Some(v) => v.verify(&chain.0),
                None => Err("this server accepts no client certificates".to_string()),
            };
            match verified.and_then(|s| {
                Identity::from_certificate(&s)
                    .ok_or_else(|| "the client certificate has no subject CN".to_string())
            }) {
                Ok(id) => return Ok(id),
                Err(why) => {
                    tracing::debug!(%why, "client certificate refused");
                    refused = Some(why);
                }
            }
        }
        match (self.authenticate(header), refused) {
            (Ok(id), _) => Ok(id),
            (Err(e), None) => Err(e),
            (Err(_), Some(why)) if header.is_none() => Err(ApiError::Unauthorized(why)),
            (Err(e), Some(why)) => Err(ApiError::Unauthorized(format!("{why}; and {e}"))),
        }
    }

    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// Issues (or returns the existing) agent token of `node`: `podd token create`, an admin's
    /// act. No request path calls it, so a revoked node cannot get a token back.
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

/// The kind of write a request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    /// PUT: the body replaces the object (or its status).
    Update,
    /// PATCH: a JSON merge patch.
    Patch,
    Delete,
}

/// What a request wants to write, for authorisation.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub verb: Verb,
    pub kind: podd_api::Kind,
    /// The request's namespace (empty for cluster-scoped kinds).
    pub namespace: &'a str,
    /// The object's name (for create: the name in the body).
    pub name: &'a str,
    pub status: bool,
    /// Pods: the node the pod is bound to now.
    pub pod_node: Option<&'a str>,
    /// The request body (None for delete).
    pub body: Option<&'a serde_json::Value>,
    /// The object as stored, when [`needs_current`] says the decision depends on it.
    pub current: Option<&'a serde_json::Value>,
}

/// The label a node may (and does) set on its own Node at registration.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The other well-known labels a kubelet sets on its own Node, which Kubernetes'
/// NodeRestriction lets it set (their values describe the machine itself).
const SELF_LABELS: [&str; 4] = [
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The InternalIP in a Node's `status.addresses` (the address recorded at registration, the
/// one the API server reaches the node's agent at).
pub fn internal_ip(addresses: Option<&serde_json::Value>) -> Option<&str> {
    addresses?
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
}

/// The `status.addresses` a status write leaves on the Node: Some(value) when the write sets
/// them (Null when it removes them), None when it leaves them as they are.
fn written_addresses(verb: Verb, body: Option<&serde_json::Value>) -> Option<serde_json::Value> {
    use serde_json::Value;
    let status = body.and_then(|b| b.get("status"));
    match verb {
        Verb::Patch => match status {
            None => None,
            Some(Value::Null) => Some(Value::Null),
            Some(s) => s.get("addresses").cloned(),
        },
        _ => Some(
            status
                .and_then(|s| s.get("addresses"))
                .cloned()
                .unwrap_or(Value::Null),
        ),
    }
}

/// Whether authorising `a` for a node identity needs the stored object in `a.current`.
pub fn needs_current(a: &Action<'_>) -> bool {
    a.kind == podd_api::Kind::Node
        && a.status
        && matches!(a.verb, Verb::Update | Verb::Patch)
        && written_addresses(a.verb, a.body).is_some()
}

fn forbidden(node: &str, a: &Action<'_>, why: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "node {node:?} may not {:?} {} {:?}{}: {why}",
        a.verb,
        a.kind.plural(),
        a.name,
        if a.status { "/status" } else { "" }
    ))
}

/// What a node's registration (its create of its own Node) may carry: a name, the hostname
/// label, and status. Labels, annotations and spec are read by the scheduler, the proxy and
/// the controllers, so a node may not choose them.
fn check_registration(node: &str, body: Option<&serde_json::Value>) -> Result<(), &'static str> {
    let empty = serde_json::Value::Null;
    let body = body.unwrap_or(&empty);
    let meta = &body["metadata"];
    if let Some(labels) = meta["labels"].as_object()
        && labels.iter().any(|(k, v)| {
            if k == HOSTNAME_LABEL {
                v.as_str() != Some(node)
            } else {
                !SELF_LABELS.contains(&k.as_str())
            }
        })
    {
        return Err(
            "a node may set only its kubernetes.io/hostname, os and arch labels; an admin sets the others",
        );
    }
    for field in ["annotations", "ownerReferences", "finalizers"] {
        if meta.get(field).is_some_and(|v| {
            !v.is_null() && v != &serde_json::json!({}) && v != &serde_json::json!([])
        }) {
            return Err("a node may not set annotations, owner references or finalizers");
        }
    }
    let spec = &body["spec"];
    if spec["podCIDR"].as_str().is_some_and(|c| !c.is_empty())
        || spec["unschedulable"].as_bool() == Some(true)
        || spec["taints"].as_array().is_some_and(|t| !t.is_empty())
    {
        return Err(
            "the spec of a Node (pod CIDR, taints, unschedulable) is the server's and the admin's",
        );
    }
    Ok(())
}

/// The allow-list of what a node identity may write:
/// - create its own Node (registration: name, hostname label, status; see
///   [`check_registration`]);
/// - write its own Node's status (conditions, capacity, lease), but not move the InternalIP it
///   registered with, which the API server connects to;
/// - write the status of pods bound to it, and delete them (the final delete of a terminating
///   pod once its containers are stopped, with gracePeriodSeconds=0);
/// - create and write its own heartbeat Lease in kube-node-lease;
/// - create and update Events (the agent's Pulling, Started, Killing, ...);
/// - post its own node's usage report (authorised in the HTTP layer, outside the registry).
///
/// Nothing else: not its Node's metadata or spec, not a delete of its Node (which would let it
/// register again at another address), not other nodes' Leases, not any other kind.
pub fn authorize(id: &Identity, a: &Action<'_>) -> Result<(), ApiError> {
    let node = match id {
        Identity::Local | Identity::Admin => return Ok(()),
        Identity::User(u) if u.is_master() => return Ok(()),
        Identity::User(u) => {
            return Err(ApiError::Forbidden(format!(
                "user {:?} may not {:?} {} {:?}: podd authorises only {MASTERS_GROUP} and \
                 nodes until it has RBAC",
                u.name,
                a.verb,
                a.kind.plural(),
                a.name
            )));
        }
        Identity::Node(n) => n.as_str(),
    };
    use podd_api::Kind;
    match a.kind {
        Kind::Node if a.name != node => Err(forbidden(
            node,
            a,
            "an agent token may write only its own Node",
        )),
        Kind::Node => match (a.verb, a.status) {
            (Verb::Create, _) => {
                check_registration(node, a.body).map_err(|why| forbidden(node, a, why))
            }
            (Verb::Update | Verb::Patch, true) => {
                let Some(addresses) = written_addresses(a.verb, a.body) else {
                    return Ok(());
                };
                let recorded = a
                    .current
                    .and_then(|c| internal_ip(c.pointer("/status/addresses")));
                if internal_ip(Some(&addresses)) == recorded {
                    Ok(())
                } else {
                    Err(forbidden(
                        node,
                        a,
                        &format!(
                            "the node's InternalIP is the one it registered with ({}); only an admin may change it",
                            recorded.unwrap_or("none")
                        ),
                    ))
                }
            }
            (Verb::Delete, _) => Err(forbidden(node, a, "only an admin may delete a Node")),
            _ => Err(forbidden(
                node,
                a,
                "a node may write only its Node's status; its metadata and spec are the admin's",
            )),
        },
        Kind::Pod if a.status && a.verb != Verb::Delete && a.pod_node == Some(node) => Ok(()),
        Kind::Pod if a.verb == Verb::Delete && a.pod_node == Some(node) => Ok(()),
        Kind::Lease
            if a.namespace == crate::registry::NODE_LEASE_NAMESPACE
                && a.name == node
                && a.verb != Verb::Delete =>
        {
            Ok(())
        }
        Kind::Lease => Err(forbidden(
            node,
            a,
            "a node may write only its own Lease in kube-node-lease",
        )),
        Kind::Event if a.verb != Verb::Delete => Ok(()),
        _ => Err(forbidden(
            node,
            a,
            "an agent token may only register its own Node, write its status and Lease, write \
             the status of pods bound to it and delete them, and write Events",
        )),
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
            verb: Verb::Patch,
            kind,
            namespace: "default",
            name,
            status,
            pod_node,
            body: None,
            current: None,
        };
        assert!(authorize(&n1, &act(Kind::Node, "n1", true, None)).is_ok());
        assert!(authorize(&n1, &act(Kind::Node, "n1", false, None)).is_err());
        assert!(authorize(&n1, &act(Kind::Node, "n2", true, None)).is_err());
        assert!(authorize(&n1, &act(Kind::Pod, "p", true, Some("n1"))).is_ok());
        assert!(authorize(&n1, &act(Kind::Pod, "p", false, Some("n1"))).is_err());
        assert!(authorize(&n1, &act(Kind::Pod, "p", true, Some("n2"))).is_err());
        assert!(authorize(&n1, &act(Kind::Deployment, "d", false, None)).is_err());
        assert!(authorize(&Identity::Admin, &act(Kind::Deployment, "d", false, None)).is_ok());
        // Its own Lease in kube-node-lease, and no other.
        let lease = |ns, name, verb| Action {
            verb,
            kind: Kind::Lease,
            namespace: ns,
            name,
            status: false,
            pod_node: None,
            body: None,
            current: None,
        };
        assert!(authorize(&n1, &lease("kube-node-lease", "n1", Verb::Create)).is_ok());
        assert!(authorize(&n1, &lease("kube-node-lease", "n1", Verb::Patch)).is_ok());
        assert!(authorize(&n1, &lease("kube-node-lease", "n2", Verb::Patch)).is_err());
        assert!(authorize(&n1, &lease("default", "n1", Verb::Patch)).is_err());
        assert!(authorize(&n1, &lease("kube-node-lease", "n1", Verb::Delete)).is_err());
        // The final delete of its own pods only.
        let del = |pod_node| Action {
            verb: Verb::Delete,
            ..act(Kind::Pod, "p", false, pod_node)
        };
        assert!(authorize(&n1, &del(Some("n1"))).is_ok());
        assert!(authorize(&n1, &del(Some("n2"))).is_err());
        assert!(authorize(&n1, &del(None)).is_err());
    }

    #[test]
    fn a_node_registers_and_writes_status_but_never_moves_or_decorates_itself() {
        use serde_json::json;
        let n1 = Identity::Node("n1".into());
        let write =
            |verb, status, body: &serde_json::Value, current: Option<&serde_json::Value>| {
                let a = Action {
                    verb,
                    kind: Kind::Node,
                    namespace: "",
                    name: "n1",
                    status,
                    pod_node: None,
                    body: Some(body),
                    current,
                };
                assert_eq!(needs_current(&a), a.status && current.is_some());
                authorize(&n1, &a)
            };
        let addr =
            |ip: &str| json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        // Registration: the hostname label and status only.
        let reg = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1",
            "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
            "status": addr("10.0.0.1")["status"]});
        assert!(write(Verb::Create, false, &reg, None).is_ok());
        for bad in [
            json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}}),
            json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n2"}}}),
            json!({"metadata": {"name": "n1", "annotations": {"podd.io/agent-endpoint": "unix:///x"}}}),
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.9.0/24"}}),
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ] {
            assert!(write(Verb::Create, false, &bad, None).is_err(), "{bad}");
        }
        // Status: the lease and conditions yes; another InternalIP, or none, no.
        let cur = addr("10.0.0.1");
        let lease = json!({"status": {"leaseRenewTime": "t"}});
        assert!(write(Verb::Patch, true, &lease, None).is_ok());
        assert!(write(Verb::Patch, true, &addr("10.0.0.1"), Some(&cur)).is_ok());
        assert!(write(Verb::Patch, true, &addr("10.0.0.2"), Some(&cur)).is_err());
        assert!(write(Verb::Patch, true, &json!({"status": null}), Some(&cur)).is_err());
        assert!(write(Verb::Update, true, &lease, Some(&cur)).is_err());
        // Metadata, spec and delete: no.
        let ann = json!({"metadata": {"annotations": {"podd.io/agent-endpoint": "http://x"}}});
        assert!(write(Verb::Patch, false, &ann, None).is_err());
        assert!(write(Verb::Update, false, &ann, None).is_err());
        assert!(write(Verb::Delete, false, &json!(null), None).is_err());
    }

    fn subject(cn: &str, orgs: &[&str]) -> crate::tls::ClientSubject {
        crate::tls::ClientSubject {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn certificate_subjects_map_to_identities_as_in_kubernetes() {
        let id = |cn, orgs: &[&str]| Identity::from_certificate(&subject(cn, orgs));
        // system:masters is the admin, whatever the user is called.
        let admin = id("system:admin", &["system:masters"]).unwrap();
        assert!(admin.is_admin());
        assert_eq!(
            admin.user_info(),
            UserInfo {
                name: "system:admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            }
        );
        assert!(id("alice", &["dev", "system:masters"]).unwrap().is_admin());
        // A node: its name in the CN and the group system:nodes; both are needed.
        assert_eq!(
            id("system:node:n1", &["system:nodes"]),
            Some(Identity::Node("n1".into()))
        );
        assert!(matches!(id("system:node:n1", &[]), Some(Identity::User(_))));
        assert!(matches!(
            id("n1", &["system:nodes"]),
            Some(Identity::User(_))
        ));
        assert!(matches!(
            id("system:node:", &["system:nodes"]),
            Some(Identity::User(_))
        ));
        // Masters wins over nodes.
        assert!(
            id("system:node:n1", &["system:nodes", "system:masters"])
                .unwrap()
                .is_admin()
        );
        // No CN: no identity (kube-apiserver's x509 authenticator has no opinion).
        assert_eq!(id("", &["system:masters"]), None);
        // Anyone else is authenticated and authorised for nothing but whoami.
        let bob = id("bob", &["dev"]).unwrap();
        assert!(!bob.is_admin());
        assert!(authorize_request(&bob, "POST", SELF_SUBJECT_REVIEW_PATH).is_ok());
        assert!(authorize_request(&bob, "GET", "/version").is_ok());
        for (m, p) in [
            ("GET", "/api/v1/pods"),
            ("GET", "/api/v1/namespaces/kube-system/secrets"),
            ("GET", "/metrics"),
            ("POST", "/api/v1/namespaces/default/pods"),
            ("POST", "/api/v1/nodes/n1/certificate"),
        ] {
            let e = authorize_request(&bob, m, p).unwrap_err();
            assert!(matches!(e, ApiError::Forbidden(_)), "{m} {p}: {e}");
        }
        let write = Action {
            verb: Verb::Create,
            kind: Kind::Pod,
            namespace: "default",
            name: "p",
            status: false,
            pod_node: None,
            body: None,
            current: None,
        };
        assert!(authorize(&bob, &write).is_err());
        assert!(authorize(&admin, &write).is_ok());
        for who in [
            Identity::Admin,
            Identity::Local,
            Identity::Node("n1".into()),
            admin,
        ] {
            assert!(authorize_request(&who, "GET", "/api/v1/pods").is_ok());
        }
        // whoami for the token identities.
        assert_eq!(
            self_subject_review(&Identity::Node("n1".into()))["status"]["userInfo"],
            serde_json::json!({"username": "system:node:n1",
                "groups": ["system:nodes", "system:authenticated"]})
        );
        assert_eq!(
            self_subject_review(&Identity::Admin)["status"]["userInfo"]["username"],
            "system:admin"
        );
    }

    #[test]
    fn a_valid_certificate_wins_over_the_token_and_a_refused_one_falls_through_to_it() {
        use crate::tls::{PeerCertificates, TlsMaterial};
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pki = TlsMaterial::generate(&[]).unwrap();
        let mut a = Authenticator::in_memory("admin-token");
        let node_token = a.issue_node_token("n1").unwrap();
        let chain = |c: crate::tls::CertAndKey| {
            PeerCertificates(vec![
                CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap(),
            ])
        };
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let node_cert = chain(
            pki.issue_client_cert("system:node:n2", &["system:nodes"], now, now + hour)
                .unwrap(),
        );
        // Before the client CA is trusted, a certificate is refused (the token still works).
        let e = a.authenticate_request(Some(&node_cert), None).unwrap_err();
        assert!(matches!(e, ApiError::Unauthorized(_)), "{e}");
        a.trust_client_certificates(pki.client_cert_auth().unwrap());
        let bearer = |t: &str| format!("Bearer {t}");
        // x509 first: the token beside a valid certificate is not looked at.
        assert_eq!(
            a.authenticate_request(Some(&node_cert), Some(&bearer("admin-token")))
                .unwrap(),
            Identity::Node("n2".into())
        );
        assert_eq!(
            a.authenticate_request(Some(&node_cert), Some(&bearer("wrong")))
                .unwrap(),
            Identity::Node("n2".into())
        );
        // A refused certificate: the token decides; without one, 401 saying why.
        let foreign = chain(
            TlsMaterial::generate(&[])
                .unwrap()
                .issue_admin_client_cert()
                .unwrap(),
        );
        assert_eq!(
            a.authenticate_request(Some(&foreign), Some(&bearer(&node_token)))
                .unwrap(),
            Identity::Node("n1".into())
        );
        let e = a.authenticate_request(Some(&foreign), None).unwrap_err();
        assert!(
            matches!(&e, ApiError::Unauthorized(m) if m.contains("client certificate")),
            "{e}"
        );
        let expired = chain(
            pki.issue_client_cert(
                "system:admin",
                &["system:masters"],
                now - 2 * hour,
                now - hour,
            )
            .unwrap(),
        );
        let e = a
            .authenticate_request(Some(&expired), Some(&bearer("wrong")))
            .unwrap_err();
        assert!(
            matches!(&e, ApiError::Unauthorized(m) if m.contains("xpired") && m.contains("bearer token")),
            "{e}"
        );
        // No certificate: the token, as before.
        assert_eq!(
            a.authenticate_request(None, Some(&bearer("admin-token")))
                .unwrap(),
            Identity::Admin
        );
        assert!(a.authenticate_request(None, None).is_err());
    }

    #[test]
    fn token_files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let a = Authenticator::load_or_init(dir.path()).unwrap();
        a.issue_node_token("n1").unwrap();
        let t = dir.path().join("tokens");
        for d in [t.clone(), t.join("nodes")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        for f in [t.join("admin"), t.join("nodes/n1")] {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).unwrap();
        Authenticator::load_or_init(dir.path()).unwrap();
        assert_eq!(mode(&t), 0o700);
        assert_eq!(mode(&t.join("admin")), 0o600);
        assert_eq!(mode(&t.join("nodes/n1")), 0o600);
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
