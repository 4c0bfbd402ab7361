//! Class 6: a pod writes past its emptyDir's `sizeLimit`.
//!
//! The attack: a pod whose disk-backed emptyDir `scratch` has `sizeLimit: 1Mi` keeps writing
//! 8 MiB files from /dev/zero into it (up to 512 MiB, so that the undefended node is not
//! filled). Before the fix it kept all of them. Now the pod's shim measures the volume every
//! second and evicts the pod: phase Failed, reason `Evicted`, the kubelet's message, every
//! container killed and not restarted, and the volume holds no more than the limit plus what
//! the container wrote in one interval (the documented overshoot). Removing the evicted pod
//! (as the agent does once its status is reported) leaves nothing. A `medium: Memory`
//! emptyDir with `sizeLimit: 1Mi` refuses a 2 MiB write with ENOSPC.

use super::devices::pod_node::{PodNode, exec_sh, wait_running};
use podd_api::Pod;
use podd_pod::manager::PodManager;
use podd_pod::pod_status::pod_status;
use podd_pod::tree::disk_usage;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// The attacker writes 8 MiB, then pauses 0.1 s: at most 80 MiB/s.
const CHUNK_MIB: u64 = 8;
const MAX_RATE_MIB_PER_S: u64 = 80;
/// The node's default check interval (`PodConfig::volume_check_interval`).
const INTERVAL: Duration = Duration::from_secs(1);

fn attacker(name: &str, uid: &str, volume: serde_json::Value, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }],
            "volumes": [volume],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
        }
    }))
    .unwrap()
}

fn usage_mib(dir: &Path) -> f64 {
    disk_usage(dir, 1_000_000).map_or(0.0, |u| u.bytes as f64 / MIB as f64)
}

#[test]
fn a_pod_writing_past_its_emptydir_size_limit_is_evicted_and_removed() {
    let node = PodNode::new("edir", 221);
    let m: PodManager = node.manager();
    let images = node.busybox();
    let uid = "sec-edir-1";
    let script = format!(
        "i=0; while [ $i -lt 64 ]; do \
           dd if=/dev/zero of=/scratch/f$i bs=1M count={CHUNK_MIB} 2>/dev/null; \
           i=$((i+1)); sleep 0.1; \
         done; sleep 3600"
    );
    let pod = attacker(
        "edir-attack",
        uid,
        serde_json::json!({"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}),
        &script,
    );
    m.run_pod(&pod, &images).unwrap();
    let volume = m.data_dir(uid).join("volumes/empty-dir/scratch");
    let started = Instant::now();

    // Wait for the eviction, measuring the volume as the attack goes.
    let mut peak = 0.0f64;
    let status = loop {
        peak = peak.max(usage_mib(&volume));
        if let Some((rt, alive)) = m.status(uid)
            && rt.evicted.is_some()
            && (rt.stopped || !alive)
        {
            break pod_status(&pod, &rt, alive, None);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pod wrote {peak:.0} MiB into an emptyDir limited to 1Mi and was never evicted; \
             status {:?}",
            m.status(uid)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let at_eviction = usage_mib(&volume);
    println!(
        "evicted after {:.1} s with {at_eviction:.0} MiB in the volume: {} / {}",
        started.elapsed().as_secs_f64(),
        status.reason.as_deref().unwrap_or(""),
        status.message.as_deref().unwrap_or("")
    );
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        status.message.as_deref(),
        Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\".")
    );
    for c in status.container_statuses.iter().flatten() {
        assert!(
            c.state.as_ref().is_some_and(|s| s.terminated.is_some()),
            "container {} was not killed: {:?}",
            c.name,
            c.state
        );
        assert_eq!(c.restart_count, 0, "an evicted pod's container restarted");
    }
    // The documented bound: what the container writes in one interval plus a measurement
    // (allow a second interval for a slow machine), plus the chunk being written.
    let bound = 1.0 + (MAX_RATE_MIB_PER_S * 2 * INTERVAL.as_secs()) as f64 + CHUNK_MIB as f64;
    assert!(
        at_eviction <= bound && peak <= bound,
        "the volume grew to {at_eviction:.0} MiB (peak {peak:.0} MiB) before eviction; \
         the bound is {bound:.0} MiB"
    );
    // Nothing is written after the eviction: the container is gone.
    std::thread::sleep(Duration::from_millis(1500));
    let later = usage_mib(&volume);
    assert!(
        later <= at_eviction,
        "the volume grew after the eviction: {at_eviction:.0} -> {later:.0} MiB"
    );
    assert!(
        m.status(uid).is_some_and(|(_, alive)| !alive),
        "the evicted pod's shim still runs"
    );

    // The agent removes the evicted pod: nothing of it is left.
    m.stop_pod(uid).unwrap();
    assert!(
        !m.data_dir(uid).exists(),
        "the pod's data (volumes) is left"
    );
    assert!(!m.state_dir(uid).exists(), "the pod's state is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tmp = node.tmp.path().display().to_string();
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&tmp) && !p.contains("/nodes/") && !p.contains("/images/"))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(
        !node.cgroup_root.join("podd/pods").join(uid).exists(),
        "the pod's cgroup is left"
    );
}

#[test]
fn a_memory_emptydir_refuses_writes_past_its_size_limit() {
    let node = PodNode::new("mdir", 222);
    let m = node.manager();
    let images = node.busybox();
    let uid = "sec-mdir-1";
    let pod = attacker(
        "mdir-attack",
        uid,
        serde_json::json!({"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
        "sleep 3600",
    );
    m.run_pod(&pod, &images).unwrap();
    wait_running(&m, uid);
    let (code, out) = exec_sh(
        &m,
        uid,
        "dd if=/dev/zero of=/scratch/f bs=1M count=2; echo; du -k /scratch/f",
    );
    println!("2 MiB into a 1Mi memory emptyDir: exit {code}: {out}");
    assert!(
        out.contains("No space left on device"),
        "the write past the memory emptyDir's 1Mi limit was not refused with ENOSPC: {out}"
    );
    let kib: u64 = out
        .lines()
        .filter(|l| l.trim_end().ends_with("/scratch/f"))
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        kib <= 1024,
        "the memory emptyDir holds {kib} KiB, more than 1Mi"
    );
    m.stop_pod(uid).unwrap();
    assert!(!m.data_dir(uid).exists());
}

/// Through the node agent: a Deployment's pod that overruns its emptyDir is evicted (Failed,
/// `Evicted`, in the API), the Deployment replaces it, and the agent removes the evicted
/// pod's containers, volumes and state from the node while its object stays.
#[test]
fn an_evicted_deployment_pod_is_replaced_and_removed_from_the_node() -> anyhow::Result<()> {
    use podd_tests::cluster::{Cluster, wait_for};
    let prefix = format!("psev{}", std::process::id() % 10_000);
    let dir = std::env::temp_dir().join(format!("podd-{prefix}"));
    let c = Cluster::up_at(1, &prefix, &dir)?;
    let manifest = dir.join("filler.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "filler", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "filler"}},
                "template": {
                    "metadata": {"labels": {"app": "filler"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 30,
                        "containers": [{
                            "name": "c", "image": "busybox",
                            "command": ["sh", "-c",
                                "dd if=/dev/zero of=/scratch/f bs=1M count=8; sleep 3600"],
                            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                        }],
                        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}],
                    }
                }
            }
        }))?,
    )?;
    // podd's deployment controller deletes a terminal pod as soon as it has replaced it, so
    // the Failed/Evicted object may live only for a moment: watch for it rather than poll.
    let evicted = watch_for_evicted(&c.state.server_socket);
    c.podctl(&["apply", "-f", manifest.to_str().unwrap_or_default()])?;
    let evicted = match evicted.recv_timeout(Duration::from_secs(60)) {
        Ok(p) => serde_json::to_value(p)?,
        Err(e) => {
            let pods = c.get_items("pods", Some("app=filler")).unwrap_or_default();
            let statuses: Vec<_> = pods.iter().map(|p| &p["status"]).collect();
            anyhow::bail!(
                "no filler pod was seen Failed/Evicted within 60 s ({e})\npods' status: \
                 {statuses:#?}\nagent log:\n{}\nserver log:\n{}",
                c.log("agent-node-1.log"),
                c.log("server.log")
            );
        }
    };
    let uid = evicted["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "evicted {}: {}",
        evicted["metadata"]["name"], evicted["status"]["message"]
    );
    assert_eq!(
        evicted["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\"."
    );
    wait_for(Duration::from_secs(30), "a replacement filler pod", || {
        let pods = c.get_items("pods", Some("app=filler"))?;
        Ok(pods.iter().any(|p| p["metadata"]["uid"] != uid.as_str()))
    })?;
    let node = &c.state.nodes[0];
    wait_for(
        Duration::from_secs(30),
        "the evicted pod removed from the node",
        || {
            Ok(!node.data_dir.join("pods").join(&uid).exists()
                && !node.run_dir.join("pods").join(&uid).exists()
                && !node.cgroup_root.join("podd/pods").join(&uid).exists())
        },
    )?;
    c.podctl(&["delete", "deployment", "filler"])?;
    c.down()
}

/// The first filler pod the API shows Failed with reason Evicted, seen through a watch started
/// before this returns (so no transition is missed).
fn watch_for_evicted(socket: &Path) -> std::sync::mpsc::Receiver<Pod> {
    use futures::StreamExt;
    let (started_tx, started) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the watch");
        rt.block_on(async move {
            let client = podd_client::Client::unix(socket);
            let pods = client.api::<Pod>(Some("default"));
            let lp = podd_client::ListParams::labels("app=filler");
            let mut events = match pods.watch(&lp, "0").await {
                Ok(e) => e,
                Err(e) => panic!("watching the filler pods: {e}"),
            };
            let _ = started_tx.send(());
            while let Some(Ok(ev)) = events.next().await {
                let st = ev.object.status.clone().unwrap_or_default();
                if st.phase.as_deref() == Some("Failed") && st.reason.as_deref() == Some("Evicted")
                {
                    let _ = tx.send(ev.object);
                    return;
                }
            }
        });
    });
    started
        .recv_timeout(Duration::from_secs(30))
        .expect("the watch on the filler pods started");
    rx
}
