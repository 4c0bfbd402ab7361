//! Authentication and authorisation over TLS: no token or a bad one is 401; an agent token is
//! limited to its own Node's status, its own Lease, its own usage report, and the status and
//! final delete of its pods (403 otherwise); admin may do anything.

mod common;

use common::{deployment, pod, start};
use hyper::Method;
use podd_api::{Deployment, Lease, Node, Pod, ResourceExt};
use podd_client::{Client, ListParams};

fn addr(t: &common::TestPlane) -> String {
    format!("127.0.0.1:{}", t.plane.tls_addr.unwrap().port())
}

#[tokio::test]
async fn tls_tokens_and_scopes() {
    let t = start(None).await;
    let admin = t.plane.admin_tls_client().unwrap();
    // Admin over TLS can do anything.
    let nodes = admin.api::<Node>(None);
    for name in ["n1", "n2"] {
        nodes.create(&common::node(name)).await.unwrap();
    }
    let pods = admin.api::<Pod>(Some("default"));
    let mut p1 = pod("on-n1", &[]);
    p1.spec.as_mut().unwrap().node_name = Some("n1".into());
    pods.create(&p1).await.unwrap();
    let mut p1b = pod("on-n1-b", &[]);
    p1b.spec.as_mut().unwrap().node_name = Some("n1".into());
    pods.create(&p1b).await.unwrap();
    let mut p2 = pod("on-n2", &[]);
    p2.spec.as_mut().unwrap().node_name = Some("n2".into());
    pods.create(&p2).await.unwrap();

    // No token, or a wrong one: 401.
    let anon = Client::tls_anonymous(&addr(&t), &t.plane.ca_pem).unwrap();
    let e = anon
        .api::<Pod>(None)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(401), "{e}");
    assert_eq!(e.reason(), Some("Unauthorized"));
    let bad = Client::tls(&addr(&t), &t.plane.ca_pem, "not-a-token").unwrap();
    let e = bad
        .api::<Pod>(None)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(401), "{e}");

    // A client that does not trust the cluster CA cannot connect at all.
    let other_ca = podd_control_plane::tls::TlsMaterial::generate(&[]).unwrap();
    let untrusting =
        Client::tls(&addr(&t), &other_ca.ca_cert_pem, t.plane.auth.admin_token()).unwrap();
    assert!(
        untrusting
            .api::<Pod>(None)
            .list(&ListParams::default())
            .await
            .is_err()
    );

    // The agent of n1.
    let token = t.plane.auth.issue_node_token("n1").unwrap();
    let agent = Client::tls(&addr(&t), &t.plane.ca_pem, &token).unwrap();
    let anodes = agent.api::<Node>(None);
    let apods = agent.api::<Pod>(Some("default"));
    // Reads are allowed.
    assert_eq!(
        apods
            .list(&ListParams::fields("spec.nodeName=n1"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // Its own node's status: yes; its metadata (labels the scheduler reads): 403.
    anodes
        .patch_status(
            "n1",
            &serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await
        .unwrap();
    // Its own heartbeat Lease in kube-node-lease: create and renew; another node's: 403.
    let lease = |node: &str| -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40}
        }))
        .unwrap()
    };
    let leases = agent.api::<Lease>(Some("kube-node-lease"));
    leases.create(&lease("n1")).await.unwrap();
    leases
        .patch(
            "n1",
            &serde_json::json!({"spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}}),
        )
        .await
        .unwrap();
    let e = leases.create(&lease("n2")).await.unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    let e = agent
        .api::<Lease>(Some("default"))
        .create(&lease("n1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    // Its own usage report may be posted (served by discovery); another node's: 403.
    let r = agent
        .raw(
            Method::POST,
            "/apis/podd.dev/v1/nodes/n2/usage",
            Some(b"{}".to_vec()),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 403);
    let e = anodes
        .patch(
            "n1",
            &serde_json::json!({"metadata": {"labels": {"zone": "a"}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    // Another node: 403.
    let e = anodes
        .patch_status("n2", &serde_json::json!({"status": {"conditions": []}}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    assert_eq!(e.reason(), Some("Forbidden"));
    // Status of its own pod: yes; of another node's pod: 403; the pod's spec: 403.
    apods
        .patch_status(
            "on-n1",
            &serde_json::json!({"status": {"phase": "Running"}}),
        )
        .await
        .unwrap();
    let e = apods
        .patch_status(
            "on-n2",
            &serde_json::json!({"status": {"phase": "Running"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    let e = apods
        .patch(
            "on-n1",
            &serde_json::json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    // Deleting its own pod (the final delete after stopping it): yes; another node's: 403.
    apods.delete("on-n1-b").await.unwrap();
    let e = apods.delete("on-n2").await.unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    // Anything else: 403.
    let e = agent
        .api::<Deployment>(Some("default"))
        .create(&deployment("web", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    assert_eq!(
        anodes.create(&common::node("n3")).await.unwrap_err().code(),
        Some(403)
    );
    // Nothing was changed by the refused requests.
    let p = pods.get("on-n2").await.unwrap();
    assert_eq!(podd_api::resources::pod_phase(&p), "Pending");
    assert!(p.metadata.deletion_timestamp.is_none());
    assert!(p.labels().is_empty());
}

#[tokio::test]
async fn unix_socket_is_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let t = start(None).await;
    let path = t.plane.socket.clone().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    t.plane.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
}
