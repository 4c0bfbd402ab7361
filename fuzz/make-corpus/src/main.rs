//! Writes the seed corpora under `fuzz/corpus/<target>/`:
//! `cargo run --manifest-path fuzz/make-corpus/Cargo.toml`.
//!
//! The seeds are committed; this program says how each was made, so they can be remade or
//! extended without a script. Existing files with the same names are overwritten; files
//! libFuzzer found are never written here (`cargo xtask fuzz` works on a copy).
#![allow(clippy::print_stdout)]

use std::fs;
use std::path::Path;

/// The fixed host directory the `unpack_tar` target watches (see its docs).
const HOST: &str = "/tmp/podd-fuzz-host";

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut written = 0;
    let mut put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        written += 1;
        Ok(())
    };
    for (name, text) in QUANTITIES {
        put("quantity", name, text.as_bytes())?;
    }
    for (name, text) in MANIFESTS {
        put("manifest", name, text.as_bytes())?;
    }
    for (name, text) in API_JSON {
        put("api_json", name, text.as_bytes())?;
    }
    for (name, bytes) in tars() {
        put("unpack_tar", &name, &bytes)?;
    }
    for (name, bytes) in cri_logs() {
        put("cri_log", &name, &bytes)?;
    }
    println!("wrote {written} seeds under {}", root.display());
    Ok(())
}

const QUANTITIES: &[(&str, &str)] = &[
    ("millicores", "250m"),
    ("cores", "2"),
    ("fraction", "1.5"),
    ("small-fraction", "0.001"),
    ("rounded-up", "0.0001"),
    ("mebibytes", "128Mi"),
    ("gibibytes-fraction", "1.5Gi"),
    ("megabytes", "500M"),
    ("kilobytes", "64k"),
    ("exbibytes", "7Ei"),
    ("bytes", "1024"),
    ("spaces", " 100m "),
    ("u64-max", "18446744073709551615"),
    ("too-large", "16Ei"),
    ("exponent", "1e3"),
    ("negative", "-1"),
    ("long-fraction", "0.12345678901234567890123456789012345678"),
    ("bad-suffix", "12Qi"),
    ("dot-only", "."),
    ("json-number", "2.5"),
    ("json-string", "\"300m\""),
];

const MANIFESTS: &[(&str, &str)] = &[
    (
        "deployment-and-service.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: httpd\n        image: busybox-httpd\n        ports:\n        - containerPort: 8080\n        resources:\n          requests: {cpu: 100m, memory: 32Mi}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    ),
    (
        "pod-everything.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: full\n  namespace: team\n  labels: {app: full, tier: db}\n  annotations: {note: \"yes\"}\nspec:\n  restartPolicy: OnFailure\n  hostname: full-0\n  priority: 10\n  terminationGracePeriodSeconds: 5\n  nodeSelector: {disk: ssd}\n  tolerations:\n  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: zone, operator: In, values: [a, b]}\n  volumes:\n  - name: scratch\n    emptyDir: {sizeLimit: 1Mi}\n  - name: cache\n    emptyDir: {medium: Memory}\n  - name: host\n    hostPath: {path: /srv/data, type: Directory}\n  initContainers:\n  - name: init\n    image: busybox\n    command: [sh, -c, 'echo ready > /scratch/ok']\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n  containers:\n  - name: main\n    image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    command: [sleep]\n    args: ['3600']\n    workingDir: /work\n    env:\n    - {name: MODE, value: prod}\n    ports:\n    - {name: http, containerPort: 8080, hostPort: 18080, protocol: TCP}\n    - {containerPort: 53, protocol: UDP}\n    resources:\n      requests: {cpu: 250m, memory: 64Mi}\n      limits: {cpu: 1, memory: 128Mi, pids: 100}\n    volumeMounts:\n    - {name: host, mountPath: /data, readOnly: true}\n    readinessProbe:\n      httpGet: {path: /healthz, port: 8080}\n      periodSeconds: 2\n    livenessProbe:\n      tcpSocket: {port: 8080}\n      initialDelaySeconds: 3\n      failureThreshold: 5\n    securityContext:\n      runAsUser: 1000\n      runAsGroup: 1000\n      privileged: false\n      readOnlyRootFilesystem: true\n      allowPrivilegeEscalation: false\n      capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}\n  - name: probe-exec\n    image: busybox\n    readinessProbe:\n      exec: {command: [cat, /tmp/ready]}\n      timeoutSeconds: 1\n      successThreshold: 1\n",
    ),
    (
        "hpa.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: 50\n",
    ),
    (
        "anchors-and-empty-docs.yaml",
        "---\n# a comment only\n---\napiVersion: v1\nkind: Pod\nmetadata: &meta\n  name: a\n  labels: &labels {app: a}\nspec:\n  containers:\n  - &c {name: c, image: busybox, command: [\"true\"]}\n---\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: *labels}\nspec:\n  containers: [*c]\n...\n",
    ),
    (
        "list.json",
        "{\"kind\":\"List\",\"apiVersion\":\"v1\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox\",\"resources\":{\"limits\":{\"cpu\":2,\"memory\":\"1Gi\"}}}]}},{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"s\"},\"spec\":{\"type\":\"ClusterIP\",\"selector\":{\"app\":\"p\"},\"ports\":[{\"name\":\"dns\",\"port\":53,\"protocol\":\"UDP\",\"targetPort\":5353}]}}]}",
    ),
    (
        "pod.json",
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"j\",\"namespace\":\"default\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox\",\"workingDir\":\"/proc/self/fd/13\",\"securityContext\":{\"privileged\":true}}]},\"status\":{\"phase\":\"Running\"}}",
    ),
    (
        "yaml-list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n  spec:\n    replicas: 0\n    strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}}\n    selector: {matchLabels: {app: d}}\n    template:\n      metadata: {labels: {app: d}}\n      spec: {containers: [{name: c, image: busybox}]}\n",
    ),
    (
        "unsupported.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  serviceAccountName: x\n  containers: [{name: c, image: busybox}]\n",
    ),
    (
        "scalars.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: '0x10'\n  labels: {yes: no, on: 'off', n: ~, f: 1.0e+3}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    args: [yes, 010, .inf, -.nan, !!str 5, \"\\u00e9\\t\"]\n    env: [{name: A, value: |\n        multi\n        line\n      }]\n",
    ),
];

const API_JSON: &[(&str, &str)] = &[
    (
        "pod.json",
        "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web-1\",\"namespace\":\"default\",\"labels\":{\"app\":\"web\"},\"resourceVersion\":\"12\",\"uid\":\"u\",\"ownerReferences\":[{\"kind\":\"Deployment\",\"name\":\"web\",\"uid\":\"d\"}]},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox\",\"resources\":{\"requests\":{\"cpu\":\"100m\",\"memory\":\"32Mi\"}},\"ports\":[{\"containerPort\":8080}]}],\"nodeName\":\"n1\"},\"status\":{\"phase\":\"Running\",\"podIP\":\"10.244.1.5\",\"hostIP\":\"10.0.0.2\",\"containerStatuses\":[{\"name\":\"c\",\"ready\":true,\"restartCount\":2,\"state\":{\"waiting\":{\"reason\":\"CrashLoopBackOff\",\"message\":\"back-off 10s\"}}}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}",
    ),
    (
        "deployment.json",
        "{\"kind\":\"Deployment\",\"apiVersion\":\"apps/v1\",\"metadata\":{\"name\":\"web\",\"generation\":3},\"spec\":{\"replicas\":3,\"selector\":{\"matchLabels\":{\"app\":\"web\"}},\"strategy\":{\"type\":\"RollingUpdate\",\"rollingUpdate\":{\"maxSurge\":\"25%\",\"maxUnavailable\":0}},\"template\":{\"metadata\":{\"labels\":{\"app\":\"web\"}},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}},\"status\":{\"replicas\":3,\"readyReplicas\":2,\"observedGeneration\":3}}",
    ),
    (
        "service.json",
        "{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web\"},\"spec\":{\"type\":\"ClusterIP\",\"clusterIP\":\"10.96.0.10\",\"selector\":{\"app\":\"web\"},\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080,\"protocol\":\"TCP\"}]}}",
    ),
    (
        "endpoints.json",
        "{\"kind\":\"Endpoints\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web\"},\"subsets\":[{\"addresses\":[{\"ip\":\"10.244.1.5\",\"nodeName\":\"n1\",\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-1\"}}],\"ports\":[{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"}]}]}",
    ),
    (
        "node.json",
        "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"n1\",\"annotations\":{\"podd.io/agent-endpoint\":\"http://10.0.0.2:10250\"}},\"spec\":{\"podCIDR\":\"10.244.1.0/24\",\"unschedulable\":false,\"taints\":[{\"key\":\"k\",\"value\":\"v\",\"effect\":\"NoSchedule\"}]},\"status\":{\"capacity\":{\"cpu\":\"2\",\"memory\":\"4Gi\",\"pods\":\"110\"},\"allocatable\":{\"cpu\":\"1900m\",\"memory\":\"3Gi\"},\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"10.0.0.2\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"lastHeartbeatTime\":\"2026-12-07T14:00:00Z\"}]}}",
    ),
    (
        "hpa.json",
        "{\"kind\":\"HorizontalPodAutoscaler\",\"apiVersion\":\"autoscaling/v2\",\"metadata\":{\"name\":\"web\"},\"spec\":{\"scaleTargetRef\":{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"name\":\"web\"},\"minReplicas\":1,\"maxReplicas\":5,\"targetCPUUtilizationPercentage\":50},\"status\":{\"currentReplicas\":2,\"desiredReplicas\":3}}",
    ),
    (
        "status.json",
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"pods \\\"x\\\" is invalid\",\"reason\":\"Invalid\",\"code\":422,\"details\":{\"name\":\"x\",\"kind\":\"pods\",\"causes\":[{\"field\":\"metadata.name\",\"message\":\"bad\"}]}}",
    ),
    (
        "pod-list.json",
        "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"42\"},\"items\":[{\"metadata\":{\"name\":\"a\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}]}",
    ),
    (
        "watch-event.json",
        "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"7\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}}",
    ),
    ("selector.txt", "app=web,tier!=db,!canary,zone, env==prod"),
    (
        "deep.json",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ),
    (
        "replicaset.json",
        r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"web-5d9f7","namespace":"default","labels":{"app":"web","pod-template-hash":"5d9f7"},"annotations":{"deployment.kubernetes.io/revision":"2"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"d-uid","controller":true,"blockOwnerDeletion":true}]},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web","pod-template-hash":"5d9f7"},"matchExpressions":[{"key":"tier","operator":"NotIn","values":["db"]}]},"template":{"metadata":{"labels":{"app":"web","pod-template-hash":"5d9f7"}},"spec":{"containers":[{"name":"httpd","image":"busybox-httpd","ports":[{"name":"http","containerPort":8080}],"readinessProbe":{"httpGet":{"path":"/","port":"http"}}}],"affinity":{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":50,"preference":{"matchExpressions":[{"key":"disk","operator":"In","values":["ssd"]}]}}]}},"tolerations":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]}}},"status":{"replicas":3,"readyReplicas":2,"observedGeneration":1}}"#,
    ),
    (
        "endpointslice.json",
        r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-abcde","namespace":"default","generateName":"web-","labels":{"kubernetes.io/service-name":"web","endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io"}},"addressType":"IPv4","endpoints":[{"addresses":["10.244.1.5"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"n1","targetRef":{"kind":"Pod","namespace":"default","name":"web-1","uid":"p-uid"}}],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}"#,
    ),
    (
        "lease.json",
        r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"n1","namespace":"kube-node-lease"},"spec":{"holderIdentity":"n1","leaseDurationSeconds":40,"renewTime":"2026-12-07T14:00:00.123456Z"}}"#,
    ),
];

/// One tar entry, written byte by byte where the tar crate would refuse the name.
struct Entry {
    path: &'static [u8],
    kind: tar::EntryType,
    data: &'static [u8],
    link: &'static [u8],
    mode: u32,
    mtime: u64,
    device: (u32, u32),
    pax: &'static [(&'static str, &'static [u8])],
}

const fn entry(path: &'static [u8], kind: tar::EntryType) -> Entry {
    Entry {
        path,
        kind,
        data: b"",
        link: b"",
        mode: 0o644,
        mtime: 1_700_000_000,
        device: (0, 0),
        pax: &[],
    }
}

const fn file(path: &'static [u8], data: &'static [u8]) -> Entry {
    Entry {
        data,
        ..entry(path, tar::EntryType::Regular)
    }
}

const fn dir(path: &'static [u8]) -> Entry {
    Entry {
        mode: 0o755,
        ..entry(path, tar::EntryType::Directory)
    }
}

const fn symlink(path: &'static [u8], target: &'static [u8]) -> Entry {
    Entry {
        link: target,
        mode: 0o777,
        ..entry(path, tar::EntryType::Symlink)
    }
}

const fn hardlink(path: &'static [u8], target: &'static [u8]) -> Entry {
    Entry {
        link: target,
        ..entry(path, tar::EntryType::Link)
    }
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            b.append_pax_extensions(e.pax.iter().copied())
                .expect("pax records");
        }
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            assert!(e.path.len() <= name.len(), "seed names fit the header");
            name[..e.path.len()].copy_from_slice(e.path);
            let link = &mut h.as_old_mut().linkname;
            link[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.device.0).expect("device major");
            h.set_device_minor(e.device.1).expect("device minor");
        }
        h.set_cksum();
        b.append(&h, e.data).expect("append an entry");
    }
    b.into_inner().expect("finish the tar")
}

fn tars() -> Vec<(String, Vec<u8>)> {
    use tar::EntryType as T;
    let host_link: &'static [u8] = HOST.as_bytes();
    let mut seeds = vec![
        (
            "plain-tree",
            tar_of(&[
                dir(b"./"),
                dir(b"bin/"),
                Entry {
                    mode: 0o755,
                    ..file(b"bin/sh", b"#!/bin/sh\necho hi\n")
                },
                dir(b"etc/"),
                file(b"etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
                symlink(b"bin/ash", b"sh"),
                hardlink(b"bin/busybox", b"bin/sh"),
                file(b"/abs/leading/slash", b"x"),
            ]),
        ),
        (
            "whiteouts",
            tar_of(&[
                dir(b"etc/"),
                file(b"etc/.wh.shadow", b""),
                dir(b"var/cache/"),
                file(b"var/cache/.wh..wh..opq", b""),
                file(b"usr/missing-parent/file", b"implicit parents"),
            ]),
        ),
        (
            "devices-and-modes",
            tar_of(&[
                Entry {
                    device: (1, 3),
                    ..entry(b"dev/null", T::Char)
                },
                Entry {
                    device: (7, 0),
                    ..entry(b"dev/loop0", T::Block)
                },
                entry(b"run/fifo", T::Fifo),
                Entry {
                    mode: 0o4755,
                    ..file(b"usr/bin/su", b"setuid")
                },
                Entry {
                    mode: 0o1777,
                    ..dir(b"tmp/")
                },
            ]),
        ),
        (
            "pax-xattrs",
            tar_of(&[
                Entry {
                    pax: &[
                        ("SCHILY.xattr.user.note", b"hello"),
                        ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
                        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                        ("path", b"very/long/path/name/that/goes/on/and/on/beyond/the/old/header/limit/of/one/hundred/bytes/file.txt"),
                    ],
                    ..file(b"short-name", b"pax data")
                },
            ]),
        ),
        (
            "symlink-parent-escape",
            tar_of(&[
                symlink(b"out", b"../outside"),
                file(b"out/victim", b"overwritten"),
                file(b"out/new-file", b"planted"),
            ]),
        ),
        (
            "symlink-host-escape",
            tar_of(&[
                symlink(b"etc", host_link),
                file(b"etc/victim", b"overwritten"),
            ]),
        ),
        (
            "dir-then-symlink-mtime",
            tar_of(&[
                Entry {
                    mtime: 0,
                    ..dir(b"d/")
                },
                symlink(b"d", host_link),
            ]),
        ),
        (
            "hardlink-out",
            tar_of(&[
                hardlink(b"h1", b"../outside/victim"),
                hardlink(b"h2", b"/tmp/podd-fuzz-host/victim"),
            ]),
        ),
        (
            "dotdot-entry",
            tar_of(&[file(b"../outside/victim", b"overwritten")]),
        ),
        (
            "absolute-host-entry",
            tar_of(&[file(b"/tmp/podd-fuzz-host/victim", b"overwritten")]),
        ),
        (
            "file-then-dir-then-file",
            tar_of(&[
                file(b"a", b"file"),
                dir(b"a/"),
                file(b"a/b", b"inside"),
                symlink(b"a", b"x"),
                file(b"a", b"file again"),
            ]),
        ),
        (
            "extreme-mtime",
            tar_of(&[Entry {
                mtime: 0o77777777777,
                ..file(b"f", b"time")
            }]),
        ),
        ("empty", tar_of(&[])),
    ];
    // A base-256 mtime far past any clock, as a hostile tar can carry.
    let mut huge = tar_of(&[file(b"g", b"time")]);
    huge[136] = 0x80;
    for b in &mut huge[137..148] {
        *b = 0xff;
    }
    let sum: u32 = huge[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    huge[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    seeds.push(("base256-mtime", huge));
    seeds.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

fn cri_logs() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    // Mode byte odd: raw files (rotated part before 0xff, live part after).
    let lines = "2026-12-07T14:00:00.000000001Z stdout F hello\n2026-12-07T14:00:00.1Z stderr P part\n2026-12-07T14:00:00.2Z stderr F ial\n2026-12-07T14:00:01Z stdout F \n";
    seeds.push(("raw-live", [&[1u8][..], lines.as_bytes()].concat()));
    seeds.push((
        "raw-rotated",
        [
            &[1u8][..],
            b"2026-12-07T13:59:59Z stdout F old\n",
            &[0xff],
            lines.as_bytes(),
            b"2026-12-07T14:00:02Z stdout F unterminated",
        ]
        .concat(),
    ));
    seeds.push((
        "raw-garbage",
        [
            &[3u8][..],
            b"garbage\nstdout F\n\xc3\x28 stdout F bad utf8\r\n\n",
        ]
        .concat(),
    ));
    // Mode byte even: chunks of [stream bit | length] + bytes through the writer.
    let mut chunks = vec![0u8];
    for (stream, text) in [
        (0u8, &b"hello\nwor"[..]),
        (0x80, b"err: "),
        (0, b"ld\n"),
        (0x80, b"oops\n"),
        (0, b"no newline at the end"),
    ] {
        chunks.push(stream | text.len() as u8);
        chunks.extend_from_slice(text);
    }
    seeds.push(("written", chunks));
    let mut binary = vec![0x40u8];
    let blob: Vec<u8> = (0u8..=0x7e).rev().collect();
    binary.push(0x7f);
    binary.extend_from_slice(&blob);
    binary.push(0x80 | 4);
    binary.extend_from_slice(b"\xff\xfe\n\xe2");
    seeds.push(("written-binary-rotating", binary));
    seeds.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}
