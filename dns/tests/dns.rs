//! Cluster DNS, served in a node namespace and queried from a pod-like namespace. Root.

mod common;
use common::*;
use std::process::Command;

#[test]
fn raw_queries_from_a_pod_namespace() {
    raw_queries();
}

/// The pod's own resolver (glibc, through `ip netns exec`, which mounts
/// /etc/netns/<pod>/resolv.conf over /etc/resolv.conf) turns short names into service names
/// with the search domains podd writes.
#[test]
fn short_names_resolve_through_search_domains() {
    let topo = Topo::new("short");
    let etc = std::path::PathBuf::from("/etc/netns").join(&topo.pod);
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            // /etc/netns itself, if this test made it (fails harmlessly when not empty).
            if let Some(parent) = self.0.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    std::fs::create_dir_all(&etc).unwrap();
    let _guard = Dir(etc.clone());
    std::fs::write(
        etc.join("resolv.conf"),
        podd_dns::pod_resolv_conf("default", NODE_IP, "cluster.local"),
    )
    .unwrap();
    let getent = |name: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &topo.pod, "getent", "ahostsv4", name])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for name in [
        "web",
        "web.default",
        "web.default.svc",
        "web.default.svc.cluster.local",
    ] {
        let (ok, out) = getent(name);
        assert!(ok && out.contains(&WEB_VIP.to_string()), "{name}: {out}");
    }
    let (ok, _) = getent("missing");
    assert!(!ok, "an unknown short name does not resolve");
}
