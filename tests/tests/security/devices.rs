//! Class 2: a default pod reaches the host's devices.
//!
//! The attack: a pod with no securityContext, run by the real pod manager and shim, makes
//! device nodes for the host's loop-control (c 10:237), loop0 (b 7:0), tun (c 10:200) and fuse
//! (c 10:229) with its CAP_MKNOD, in its /dev (a tmpfs that allows devices) and in its root
//! filesystem, and opens them; it also looks for them in its /dev. Every open must fail: in
//! /dev the cgroup device program refuses them (EPERM), in the root filesystem the `nodev`
//! mount does (EACCES), and the pod's /dev holds none of them. A privileged pod opens them all,
//! which shows that `securityContext.privileged` is the one way out and that the test can see
//! an open succeed. (On this hybrid host the device program attaches to the pod's cgroup v2
//! directory and the kernel enforces it; `vm_security::devices` repeats the attack on
//! Debian's kernel with a full cgroup2 tree.)

#[path = "pod_node.rs"]
pub(crate) mod pod_node;

use pod_node::{
    PodNode, TARGETS, assert_default_pod_refused, attack_script, exec_sh, host_has, result,
    sleeper, wait_running,
};

#[test]
fn a_default_pod_can_neither_make_nor_open_host_devices() {
    let node = PodNode::new("dev", 217);
    let m = node.manager();
    let images = node.busybox();
    let mut pod = sleeper("dev-attack", "sec-dev-1", "busybox", None);
    let spec = pod.spec.as_mut().expect("a pod spec");
    spec.volumes =
        serde_json::from_value(serde_json::json!([{"name": "scratch", "emptyDir": {}}])).unwrap();
    spec.containers[0].volume_mounts =
        serde_json::from_value(serde_json::json!([{"name": "scratch", "mountPath": "/scratch"}]))
            .unwrap();
    m.run_pod(&pod, &images).unwrap();
    wait_running(&m, "sec-dev-1");

    let (_, out) = exec_sh(&m, "sec-dev-1", &attack_script());
    println!("default pod:\n{out}");
    assert_default_pod_refused(&out);

    // A volume is nodev too: a node made there (the container's /dev, where the device
    // program decides, is the only place nodes may open).
    let (_, out) = exec_sh(
        &m,
        "sec-dev-1",
        "mknod /scratch/null c 1 3 && if (exec 3<>/scratch/null) 2>/tmp/err; then echo opened; \
         else cat /tmp/err; fi",
    );
    println!("a node in an emptyDir: {out}");
    assert!(
        !out.contains("opened") && out.contains("Permission denied"),
        "a device node in a volume opened: the volume is not nodev: {out}"
    );
    // The devices every container needs still work.
    let (code, out) = exec_sh(
        &m,
        "sec-dev-1",
        "echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 1 /dev/zero | wc -c",
    );
    assert_eq!(code, 0, "{out}");
    m.stop_pod("sec-dev-1").unwrap();
}

#[test]
fn a_privileged_pod_is_the_one_way_to_host_devices() {
    let node = PodNode::new("priv", 218);
    let m = node.manager();
    let images = node.busybox();
    let pod = sleeper(
        "dev-privileged",
        "sec-dev-2",
        "busybox",
        Some(serde_json::json!({"privileged": true})),
    );
    m.run_pod(&pod, &images).unwrap();
    wait_running(&m, "sec-dev-2");

    let (_, out) = exec_sh(&m, "sec-dev-2", &attack_script());
    println!("privileged pod:\n{out}");
    for (name, path, ..) in TARGETS {
        if !host_has(path) {
            continue;
        }
        assert_eq!(
            result(&out, &format!("present {name}")),
            "opened",
            "a privileged pod gets the host's {name} in its /dev"
        );
        assert_eq!(
            result(&out, &format!("dev {name}")),
            "opened",
            "a privileged pod may make and open {name} in its /dev"
        );
        // The image root stays nodev even for a privileged pod.
        assert!(result(&out, &format!("root {name}")).starts_with("refused"));
    }
    let (code, out) = exec_sh(
        &m,
        "sec-dev-2",
        "grep -q ' /sys sysfs rw' /proc/mounts && echo sys-rw; grep CapEff /proc/self/status",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sys-rw"), "{out}");
    // Every capability the node's podd holds (this test process, root, holds the same).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let all = own.to_string();
    assert!(out.contains(&all), "every capability ({all}): {out}");
    m.stop_pod("sec-dev-2").unwrap();
}
