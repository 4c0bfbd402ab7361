//! Class 6 in the VM: a `medium: Memory` emptyDir without a sizeLimit in a pod with a memory
//! limit. Its tmpfs used to be the kernel's default size (half the node's memory), and tmpfs
//! pages outlive the process that wrote them, so a pod could pin node memory beyond its
//! limit. Now the tmpfs is sized to the pod's memory limit, as Kubernetes sizes it: writing
//! more than the limit into it fails, and the volume never holds more. Needs the memory
//! controller (limits are refused on the hybrid host).

use super::devices::pod_node::{PodNode, cgroup2_mount, exec_sh, wait_running};

#[test]
#[ignore = "vm: needs cgroup v2 memory limits; run by cargo xtask vm-test"]
fn a_memory_emptydir_cannot_outgrow_the_pods_memory_limit() {
    assert_eq!(
        std::env::var("PODD_IN_VM").as_deref(),
        Ok("1"),
        "this test runs inside the VM (cargo xtask vm-test)"
    );
    assert_eq!(cgroup2_mount(), std::path::Path::new("/sys/fs/cgroup"));
    let node = PodNode::new("vmmdir", 224);
    let m = node.manager();
    let images = node.busybox();
    let uid = "sec-vmmdir-1";
    let pod: podd_api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vm-mdir-attack", "namespace": "default", "uid": uid},
        "spec": {
            "containers": [{
                "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "resources": {"limits": {"memory": "64Mi"}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
            "terminationGracePeriodSeconds": 1,
        }
    }))
    .unwrap();
    m.run_pod(&pod, &images).unwrap();
    wait_running(&m, uid);
    let (size_code, df) = exec_sh(&m, uid, "df -k /scratch | tail -1");
    let total_kib: u64 = df
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .unwrap_or(u64::MAX);
    println!("df of the Memory emptyDir ({size_code}): {df}");
    assert!(
        total_kib <= 64 * 1024,
        "the Memory emptyDir's tmpfs is {total_kib} KiB, larger than the pod's 64Mi limit"
    );
    let (code, out) = exec_sh(
        &m,
        uid,
        "dd if=/dev/zero of=/scratch/f bs=1M count=96 2>&1; echo; du -k /scratch/f",
    );
    println!("96 MiB into it: exit {code}: {out}");
    let held: u64 = out
        .lines()
        .filter(|l| l.trim_end().ends_with("/scratch/f"))
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        !out.contains("96+0 records out"),
        "96 MiB went into a Memory emptyDir of a pod limited to 64Mi: {out}"
    );
    assert!(
        held <= 64 * 1024,
        "the volume holds {held} KiB, more than 64Mi"
    );
    m.stop_pod(uid).unwrap();
    assert!(!m.data_dir(uid).exists());
}
