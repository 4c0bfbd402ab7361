//! The end-to-end scenario on a 3-node cluster made of network namespaces (see
//! `podd_tests::cluster`), run by `e2e_cluster`: podctl run/expose, requests through the VIP and the DNS
//! name reaching every replica, logs and exec across nodes, a container restart, a node crash
//! with the service measured through the failover, scaling, an agent restart and a server
//! outage, readiness, autoscaling, metrics, and a teardown that leaves nothing behind.
// The scenario prints its measurements (failover time, failed requests).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{Context, Result, bail};
use podd_tests::cluster::{Cluster, procs_under, wait_for};
use podd_tests::workloads::{AUTOSCALE_BURN, BURN_WHILE_LOADED, FOREVER, start_web_and_client};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct PodRef {
    name: String,
    uid: String,
    node: String,
    ip: String,
    container: String,
}

fn pod_ref(p: &Value) -> PodRef {
    PodRef {
        name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
        uid: p["metadata"]["uid"].as_str().unwrap_or_default().into(),
        node: p["spec"]["nodeName"].as_str().unwrap_or_default().into(),
        ip: p["status"]["podIP"].as_str().unwrap_or_default().into(),
        container: p["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .into(),
    }
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["phase"] == "Running"
        && podd_tests::cluster::condition_true(p, "Ready")
}

/// The ready pods matching `selector`.
fn ready_pods(c: &Cluster, selector: &str) -> Result<Vec<PodRef>> {
    Ok(c.get_items("pods", Some(selector))?
        .iter()
        .filter(|p| is_ready(p))
        .map(pod_ref)
        .collect())
}

/// Waits until exactly `n` active pods matching `selector` exist and all are ready. Finished
/// pods (Failed, e.g. NodeLost, or Succeeded) are not replicas: as in Kubernetes, their
/// ReplicaSet replaced them and they stay listed until the pod GC removes them.
fn wait_ready(c: &Cluster, selector: &str, n: usize, timeout: Duration) -> Result<Vec<PodRef>> {
    let mut last = Vec::new();
    wait_for(timeout, &format!("{n} ready pods {selector}"), || {
        let all: Vec<Value> = c
            .get_items("pods", Some(selector))?
            .into_iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded")))
            .collect();
        last = all.iter().filter(|p| is_ready(p)).map(pod_ref).collect();
        Ok(all.len() == n && last.len() == n)
    })
    .with_context(|| {
        format!(
            "pods: {}\nserver: {}\nnode-1: {}",
            c.podctl(&["get", "pods", "-o", "wide"]).unwrap_or_default(),
            c.log("server.log"),
            c.log("agent-node-1.log")
        )
    })?;
    Ok(last)
}

fn node_index(c: &Cluster, p: &PodRef) -> usize {
    c.node(&p.node)
        .unwrap_or_else(|| panic!("pod {} is on unknown node {:?}", p.name, p.node))
}

/// One HTTP GET from inside pod `client` with busybox wget; the body, or None on failure.
fn fetch(c: &Cluster, client: &PodRef, url: &str) -> Option<String> {
    let out = c
        .exec(
            node_index(c, client),
            &client.uid,
            &client.container,
            // busybox wget's own -T crashes this busybox build; timeout(1) bounds it instead.
            &["timeout", "2", "wget", "-q", "-O", "-", url],
        )
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fetches `url` until every name in `want` answered (each replica serves its own name at
/// /id), or fails after `attempts`.
fn reach_all(
    c: &Cluster,
    client: &PodRef,
    url: &str,
    want: &BTreeSet<String>,
    attempts: usize,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut failures = 0;
    for _ in 0..attempts {
        match fetch(c, client, url) {
            Some(body) => {
                seen.insert(body);
            }
            None => failures += 1,
        }
        if want.is_subset(&seen) {
            return Ok(());
        }
    }
    bail!("{url} reached {seen:?} of {want:?} in {attempts} requests ({failures} failed)")
}

/// Makes each replica serve its own pod name at /id.
fn label_replicas(c: &Cluster, pods: &[PodRef]) -> Result<()> {
    for p in pods {
        let cmd = format!("echo {} > /www/id", p.name);
        let out = c.exec(node_index(c, p), &p.uid, &p.container, &["sh", "-c", &cmd])?;
        if !out.status.success() {
            bail!(
                "exec into {}: {}",
                p.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

fn names(pods: &[PodRef]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

fn restart_count(c: &Cluster, name: &str) -> Result<u64> {
    let p = c
        .get_items("pods", None)?
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
        .with_context(|| format!("pod {name} is gone"))?;
    Ok(p["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0))
}

fn endpoint_ips(c: &Cluster, service: &str) -> Result<BTreeSet<String>> {
    let e = c
        .get_items("endpoints", None)?
        .into_iter()
        .find(|e| e["metadata"]["name"] == service);
    let mut ips = BTreeSet::new();
    if let Some(e) = e {
        for s in e["subsets"].as_array().into_iter().flatten() {
            for a in s["addresses"].as_array().into_iter().flatten() {
                if let Some(ip) = a["ip"].as_str() {
                    ips.insert(ip.to_string());
                }
            }
        }
    }
    Ok(ips)
}

pub fn three_node_cluster_end_to_end() -> Result<()> {
    let mut c = Cluster::up(3)?;
    println!("cluster up: {:?}", c.ready_nodes()?);

    // --- run and expose ---
    start_web_and_client(&c)?;
    c.podctl(&[
        "run",
        "logger",
        "--image",
        "busybox",
        "--",
        "sh",
        "-c",
        &format!("echo hello-from-logger; {FOREVER}"),
    ])?;
    let web = wait_ready(&c, "app=web", 3, Duration::from_secs(60))?;
    let client = wait_ready(&c, "app=client", 1, Duration::from_secs(60))?.remove(0);
    let nodes: BTreeSet<&str> = web.iter().map(|p| p.node.as_str()).collect();
    println!("web replicas on {nodes:?}, client on {}", client.node);
    assert_eq!(
        nodes.len(),
        3,
        "the 3 replicas spread over the 3 nodes: {web:?}"
    );
    label_replicas(&c, &web)?;
    let svc = c
        .get_items("services", None)?
        .into_iter()
        .find(|s| s["metadata"]["name"] == "web")
        .context("service web")?;
    let vip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    wait_for(Duration::from_secs(20), "3 endpoints", || {
        Ok(endpoint_ips(&c, "web")?.len() == 3)
    })?;
    reach_all(&c, &client, &format!("http://{vip}/id"), &names(&web), 60)?;
    reach_all(
        &c,
        &client,
        "http://web.default.svc.cluster.local/id",
        &names(&web),
        60,
    )?;
    println!("VIP {vip} and web.default.svc.cluster.local reach all 3 replicas");

    // --- the agent endpoint: logs and exec on the Unix socket; TCP is mutual TLS only ---
    agent_endpoint(&c, &web)?;
    lb_connection_metrics(&c, &client, &vip)?;
    // --- podctl logs and exec through the API server, to pods on every node ---
    podctl_logs_and_exec(&c, &web)?;

    // --- a killed container is restarted, and the count shows ---
    let victim = web[0].clone();
    let vi = node_index(&c, &victim);
    let ccg = c.state.nodes[vi]
        .cgroup_root
        .join("podd/pods")
        .join(&victim.uid)
        .join(&victim.container);
    let procs = procs_under(&ccg);
    assert!(!procs.is_empty(), "no process in {}", ccg.display());
    for pid in procs {
        // SAFETY: kill(2) on a container process of this test's cluster.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_for(Duration::from_secs(30), "restartCount 1", || {
        Ok(restart_count(&c, &victim.name)? >= 1)
    })?;
    let table = c.podctl(&["get", "pods"])?;
    let line = table
        .lines()
        .find(|l| l.starts_with(&victim.name))
        .context("the pod in podctl get pods")?;
    println!("{}\n{line}", table.lines().next().unwrap_or_default());
    assert!(
        line.split_whitespace().any(|w| w == "1"),
        "RESTARTS 1 in {line:?}"
    );
    let web = wait_ready(&c, "app=web", 3, Duration::from_secs(30))?;
    label_replicas(&c, &web)?;

    // --- a node crashes: NotReady, pods replaced, service measured throughout ---
    let crash = web
        .iter()
        .map(|p| p.node.clone())
        .find(|n| n != "node-1" && *n != client.node)
        .context("a node without the server and the client")?;
    let ci = c.node(&crash).context("crash node")?;
    let url = format!("http://{vip}/id");
    // Replacement pods serve no /id: the loop asks for the page every replica serves.
    let loop_url = format!("http://{vip}/");
    let stop = Arc::new(AtomicBool::new(false));
    let mut crashed_at = Instant::now();
    let (results, replaced_at, not_ready_at) = std::thread::scope(|s| -> Result<_> {
        let loop_c = &c;
        let (stop2, client2, url2) = (stop.clone(), client.clone(), loop_url.clone());
        let h = s.spawn(move || {
            let mut r = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let ok = fetch(loop_c, &client2, &url2).is_some();
                r.push((Instant::now(), ok));
            }
            r
        });
        let waited = (|| -> Result<(Instant, Instant)> {
            std::thread::sleep(Duration::from_secs(1));
            crashed_at = Instant::now();
            c.crash_node(ci)?;
            wait_for(Duration::from_secs(30), "the crashed node NotReady", || {
                Ok(!c.ready_nodes()?.contains(&crash))
            })?;
            let not_ready_at = Instant::now();
            wait_for(
                Duration::from_secs(60),
                "3 ready web pods off the crashed node",
                || {
                    let r = ready_pods(&c, "app=web")?;
                    Ok(r.len() == 3 && r.iter().all(|p| p.node != crash))
                },
            )?;
            Ok((not_ready_at, Instant::now()))
        })();
        // Keep measuring 5 s after the replacement is ready.
        if waited.is_ok() {
            std::thread::sleep(Duration::from_secs(5));
        }
        let r = h_join_after(h, &stop, || Ok(()))?;
        let (nr, rep) = waited?;
        Ok((r, rep, nr))
    })?;
    let failed: Vec<&(Instant, bool)> = results.iter().filter(|(_, ok)| !ok).collect();
    let last_failure = failed.last().map(|(t, _)| t.duration_since(crashed_at));
    println!(
        "failover: node NotReady after {:?}, pods replaced after {:?}, {} of {} requests failed, last failure {:?} after the crash",
        not_ready_at - crashed_at,
        replaced_at - crashed_at,
        failed.len(),
        results.len(),
        last_failure
    );
    let after = results
        .iter()
        .filter(|(t, ok)| *t > replaced_at && !ok)
        .count();
    assert_eq!(after, 0, "requests failed after the failover ended");

    // --- scale ---
    c.podctl(&["scale", "web", "--replicas", "6"])?;
    let six = wait_ready(&c, "app=web", 6, Duration::from_secs(60))?;
    assert!(six.iter().all(|p| p.node != crash));
    c.podctl(&["scale", "web", "--replicas", "1"])?;
    let one = wait_ready(&c, "app=web", 1, Duration::from_secs(60))?;
    wait_for(Duration::from_secs(20), "1 endpoint", || {
        Ok(endpoint_ips(&c, "web")? == BTreeSet::from([one[0].ip.clone()]))
    })?;
    println!("scaled to 6 and back to 1");

    // --- an agent restart and a server outage: the pods keep serving, the agents catch up ---
    let one = restarts_keep_serving(&mut c, &client, &one[0], &vip)?;

    // --- readiness: a pod of the service whose probe fails is not an endpoint until it passes ---
    let manifest = c.state.dir.join("probe.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probed", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                "name": "web", "image": "busybox-httpd",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"exec": {"command": ["test", "-f", "/www/ready"]},
                                   "periodSeconds": 1, "failureThreshold": 1}
            }]}
        }))?,
    )?;
    c.podctl(&["apply", "-f", manifest.to_str().unwrap_or_default()])?;
    let probed = wait_for_running(&c, "probed")?;
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !endpoint_ips(&c, "web")?.contains(&probed.ip),
        "an unready pod is an endpoint"
    );
    let pi = node_index(&c, &probed);
    c.exec(
        pi,
        &probed.uid,
        "web",
        &["sh", "-c", "echo probed > /www/id; touch /www/ready"],
    )?;
    wait_for(
        Duration::from_secs(20),
        "the probed pod an endpoint",
        || Ok(endpoint_ips(&c, "web")?.contains(&probed.ip)),
    )?;
    label_replicas(&c, &one)?;
    reach_all(
        &c,
        &client,
        &url,
        &BTreeSet::from(["probed".to_string(), one[0].name.clone()]),
        60,
    )?;
    c.exec(pi, &probed.uid, "web", &["rm", "/www/ready"])?;
    wait_for(
        Duration::from_secs(20),
        "the probed pod out of the endpoints",
        || Ok(!endpoint_ips(&c, "web")?.contains(&probed.ip)),
    )?;
    println!("readiness: the probed pod joined and left the service");

    // --- the autoscaler scales out under CPU load and back in when it stops ---
    autoscale(&c)?;
    scheduling_metrics(&c)?;

    // --- delete everything; nothing is left on the nodes ---
    c.podctl(&["delete", "pod", "probed"])?;
    c.podctl(&["delete", "hpa", "burn"])?;
    c.podctl(&["delete", "deployment", "burn"])?;
    c.podctl(&["delete", "deployment", "web"])?;
    c.podctl(&["delete", "deployment", "client"])?;
    c.podctl(&["delete", "deployment", "logger"])?;
    c.podctl(&["delete", "service", "web"])?;
    wait_for(Duration::from_secs(60), "no pods", || {
        Ok(c.get_items("pods", None)?.is_empty())
    })?;
    for (i, n) in c.state.nodes.iter().enumerate() {
        if i == ci {
            continue;
        }
        let left = || -> Vec<String> {
            std::fs::read_dir(n.run_dir.join("pods"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        wait_for(Duration::from_secs(45), "pod state removed", || {
            Ok(left().is_empty())
        })
        .with_context(|| {
            format!(
                "{} still has pods {:?}\n{}",
                n.name,
                left(),
                c.log(&format!("agent-{}.log", n.name))
            )
        })?;
    }
    c.down()
}

fn agent_endpoint(c: &Cluster, web: &[PodRef]) -> Result<()> {
    let logger = wait_ready(c, "app=logger", 1, Duration::from_secs(60))?.remove(0);
    let li = node_index(c, &logger);
    let path = format!("/pods/{}/log?container={}", logger.uid, logger.container);
    wait_for(Duration::from_secs(10), "the logger's log line", || {
        let (code, body) = c.agent_request(li, "GET", &path, None, None)?;
        Ok(code == 200 && body == "hello-from-logger\n")
    })?;
    let (code, body) = c.agent_request(
        li,
        "GET",
        &format!("{path}&follow=true&tailLines=1"),
        None,
        Some("hello-from-logger"),
    )?;
    assert_eq!(
        (code, body.as_str()),
        (200, "hello-from-logger\n"),
        "following the log"
    );

    // Exec into a replica on another node than node-1.
    let target = web
        .iter()
        .find(|p| p.node != "node-1")
        .context("a replica off node-1")?;
    let ti = node_index(c, target);
    let token = c.state.nodes[ti].token.clone();
    let exec = format!(
        "/pods/{}/exec?container={}&command=cat&command=%2Fwww%2Fid",
        target.uid, target.container
    );
    // Over TCP (from node-1's netns) the agent speaks only mutual TLS with the API server's
    // client certificate: plain HTTP gets no answer, with the node's token or without.
    for t in [Some(token.as_str()), Some("wrong"), None] {
        let r = c.agent_request(ti, "POST", &exec, Some((0, t)), None);
        assert!(
            r.is_err(),
            "plain HTTP to the agent's TCP port was answered: {r:?}"
        );
    }
    let (code, body) = c.agent_request(ti, "POST", &exec, None, None)?;
    assert_eq!(code, 200, "exec on the agent socket: {body}");
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(
        v["stdout"].as_str().map(str::trim),
        Some(target.name.as_str()),
        "{v}"
    );
    assert_eq!(v["exitCode"], 0, "{v}");
    let (code, body) = c.agent_request(
        ti,
        "POST",
        &format!(
            "/pods/{}/exec?command=sh&command=-c&command=exit%203",
            target.uid
        ),
        None,
        None,
    )?;
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body)?["exitCode"], 3);
    let (code, metrics) = c.agent_request(ti, "GET", "/metrics", None, None)?;
    assert_eq!(code, 200);
    assert!(metrics.contains("podd_pods "), "{metrics}");
    // Nothing about the endpoint is published on the Node: the server derives it.
    let node = c
        .get_items("nodes", None)?
        .into_iter()
        .find(|n| n["metadata"]["name"] == target.node.as_str())
        .context("node")?;
    assert!(
        node["metadata"]["annotations"]["podd.io/agent-endpoint"].is_null(),
        "{node}"
    );
    println!("agent endpoint: logs (plain and followed), exec, metrics; plain HTTP on TCP refused");
    Ok(())
}

/// Restarts the agent of `backend`'s node and then the server, while a loop in `client`
/// requests the service: no request fails, the pod is adopted (same uid, no container
/// restart), and after the outage the agents apply a new change (a scale to 2 and back).
/// Returns the one replica left.
fn restarts_keep_serving(
    c: &mut Cluster,
    client: &PodRef,
    backend: &PodRef,
    vip: &str,
) -> Result<Vec<PodRef>> {
    let restarts_before = restart_count(c, &backend.name)?;
    // The loop runs podd-shim exec itself: it must not hold the Cluster that is restarted.
    let shim = c.state.bin_dir.join("podd-shim");
    let pod_dir = c.state.nodes[node_index(c, client)]
        .run_dir
        .join("pods")
        .join(&client.uid);
    let (container, url) = (client.container.clone(), format!("http://{vip}/"));
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let requests = std::thread::spawn(move || {
        let mut results: Vec<(Instant, Option<String>)> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let out = std::process::Command::new(&shim)
                .arg("exec")
                .arg(&pod_dir)
                .arg(&container)
                .args(["--", "timeout", "2", "wget", "-q", "-O", "-", &url])
                .output();
            let error = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                Err(e) => Some(e.to_string()),
            };
            results.push((Instant::now(), error));
        }
        results
    });
    let t0 = Instant::now();
    let mut phases: Vec<(&str, Instant)> = Vec::new();
    let outage = (|| -> Result<()> {
        std::thread::sleep(Duration::from_secs(1));
        let bi = node_index(c, backend);
        // Graceful, and back at once: within the node's 2 s lease grace.
        phases.push(("agent stop", Instant::now()));
        let took = c.stop_agent(bi);
        anyhow::ensure!(
            took < Duration::from_secs(2),
            "the agent took {took:?} to stop on SIGTERM"
        );
        c.start_agent(bi)?;
        phases.push(("agent started", Instant::now()));
        std::thread::sleep(Duration::from_secs(3));
        phases.push(("server stop", Instant::now()));
        c.stop_server();
        std::thread::sleep(Duration::from_secs(3));
        phases.push(("server start", Instant::now()));
        c.start_server()?;
        c.wait_nodes_ready(Duration::from_secs(30))?;
        phases.push(("nodes ready", Instant::now()));
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let results = requests
        .join()
        .map_err(|_| anyhow::anyhow!("the request loop panicked"))?;
    outage?;
    let ok = results.iter().filter(|(_, e)| e.is_none()).count();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(t, e)| {
            e.as_ref()
                .map(|e| format!("{:.2}s {e}", t.duration_since(t0).as_secs_f64()))
        })
        .collect();
    println!(
        "agent restart and 3 s server outage: {ok} requests answered, {} failed",
        failed.len()
    );
    if !failed.is_empty() {
        let at: Vec<String> = phases
            .iter()
            .map(|(p, t)| format!("{p} {:.2}s", t.duration_since(t0).as_secs_f64()))
            .collect();
        println!("phases: {at:?}\nfailures: {failed:#?}");
        println!(
            "server:\n{}\nagent of the backend's node:\n{}\nagent of the client's node:\n{}",
            c.log("server.log"),
            c.log(&format!("agent-{}.log", backend.node)),
            c.log(&format!("agent-{}.log", client.node))
        );
    }
    assert!(
        failed.is_empty(),
        "requests failed while the agent or server restarted"
    );
    assert!(ok > 0, "no request was made");
    let after = ready_pods(c, "app=web")?;
    assert!(
        after.iter().any(|p| p.uid == backend.uid),
        "the restarted agent adopted {} instead of replacing it: {after:?}",
        backend.name
    );
    assert_eq!(
        restart_count(c, &backend.name)?,
        restarts_before,
        "the pod's container was not restarted"
    );
    c.podctl(&["scale", "web", "--replicas", "2"])?;
    wait_ready(c, "app=web", 2, Duration::from_secs(60))?;
    c.podctl(&["scale", "web", "--replicas", "1"])?;
    wait_ready(c, "app=web", 1, Duration::from_secs(60))
}

/// The client's node counted the connections its load balancer sent for the service.
fn lb_connection_metrics(c: &Cluster, client: &PodRef, vip: &str) -> Result<()> {
    let (code, metrics) = c.agent_request(node_index(c, client), "GET", "/metrics", None, None)?;
    assert_eq!(code, 200, "{metrics}");
    let series =
        format!("podd_lb_connections_total{{vip=\"{vip}\",port=\"80\",protocol=\"tcp\"}} ");
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .with_context(|| format!("no {series} in the agent's /metrics:\n{metrics}"))?;
    assert!(count >= 3, "only {count} connections counted for {vip}:80");
    println!("agent /metrics: {count} connections balanced for {vip}:80");
    Ok(())
}

/// `podctl logs` and `podctl exec` go to the API server (node-1's Unix socket), which proxies
/// them to the agent of the pod's node: over TCP with the node's endpoint for the others.
fn podctl_logs_and_exec(c: &Cluster, web: &[PodRef]) -> Result<()> {
    let logger = wait_ready(c, "app=logger", 1, Duration::from_secs(60))?.remove(0);
    let log = c.podctl(&["logs", &logger.name])?;
    assert_eq!(log, "hello-from-logger\n", "podctl logs {}", logger.name);
    for p in web {
        let out = c.podctl(&["exec", &p.name, "--", "cat", "/www/id"])?;
        assert_eq!(
            out.trim(),
            p.name,
            "podctl exec into {} on {}",
            p.name,
            p.node
        );
    }
    let failed = c.podctl_output(&["exec", &web[0].name, "--", "sh", "-c", "exit 3"])?;
    assert_eq!(
        failed.status.code(),
        Some(3),
        "podctl exec passes the command's exit code on"
    );
    // The same through the real kubectl, from node 1's namespace with the kubeconfig the
    // server wrote: logs, exec over WebSocket (output, exit code, stdin).
    let kubectl =
        |args: &[&str], stdin: &[u8]| -> Result<std::process::Output> { c.kubectl(args, stdin) };
    let out = kubectl(&["logs", &logger.name], b"")?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-from-logger\n",
        "kubectl logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in web {
        let out = kubectl(&["exec", &p.name, "--", "cat", "/www/id"], b"")?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            p.name,
            "kubectl exec into {} on {}: {}",
            p.name,
            p.node,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let failed = kubectl(&["exec", &web[0].name, "--", "sh", "-c", "exit 3"], b"")?;
    assert_eq!(
        failed.status.code(),
        Some(3),
        "kubectl exec passes the command's exit code on: {}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let echoed = kubectl(
        &["exec", "-i", &web[0].name, "--", "cat"],
        b"through stdin\n",
    )?;
    assert_eq!(
        String::from_utf8_lossy(&echoed.stdout),
        "through stdin\n",
        "kubectl exec -i: {}",
        String::from_utf8_lossy(&echoed.stderr)
    );
    let nodes: BTreeSet<&str> = web.iter().map(|p| p.node.as_str()).collect();
    println!(
        "podctl and kubectl logs {} and exec on {nodes:?}",
        logger.name
    );
    Ok(())
}

fn autoscale(c: &Cluster) -> Result<()> {
    // A CPU request and no limit: this host's cgroup v2 tree has no cpu controller to
    // enforce one (the VM suite tests limits), and utilisation is use over request.
    let manifest = c.state.dir.join("burn.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "burn"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "burn"}},
                "template": {
                    "metadata": {"labels": {"app": "burn"}},
                    "spec": {"containers": [{
                        "name": "burn", "image": "busybox",
                        "command": ["sh", "-c", BURN_WHILE_LOADED],
                        "resources": {"requests": {"cpu": "100m"}}
                    }]}
                }
            }
        }))?,
    )?;
    c.podctl(&["apply", "-f", manifest.to_str().unwrap_or_default()])?;
    let burn = wait_ready(c, "app=burn", 1, Duration::from_secs(60))?.remove(0);
    c.podctl(&AUTOSCALE_BURN)?;
    let t0 = Instant::now();
    c.podctl(&["exec", &burn.name, "--", "touch", "/tmp/load"])?;
    // One busy shell uses a whole core: 1000% of its 100m request, so the autoscaler goes
    // to its maximum (the new replicas idle, which keeps the average above the target).
    let hpa_state = || {
        c.podctl(&["get", "hpa", "burn", "-o", "json"])
            .map(|s| s.chars().take(2000).collect::<String>())
            .unwrap_or_default()
    };
    wait_ready(c, "app=burn", 3, Duration::from_secs(90))
        .with_context(|| format!("scaling out: {}", hpa_state()))?;
    let out_after = t0.elapsed();
    let t1 = Instant::now();
    c.podctl(&["exec", &burn.name, "--", "rm", "/tmp/load"])?;
    wait_ready(c, "app=burn", 1, Duration::from_secs(120))
        .with_context(|| format!("scaling in: {}", hpa_state()))?;
    println!(
        "autoscale: 1 -> 3 replicas {out_after:?} after the load started, 3 -> 1 {:?} after it stopped (10 s window)",
        t1.elapsed()
    );
    Ok(())
}

/// The server's /metrics: the scheduling latency of the pods it placed, in Prometheus form.
fn scheduling_metrics(c: &Cluster) -> Result<()> {
    let (code, text) = c.server_get("/metrics")?;
    assert_eq!(code, 200, "{text}");
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("podd_scheduling_duration_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .with_context(|| format!("no scheduling latency in /metrics:\n{text}"))?;
    // Counted since the server's restart: the scale to 2 and the autoscaler's 2 replicas.
    assert!(count >= 3, "only {count} pods counted as scheduled");
    assert!(text.contains("podd_objects{kind=\"pods\"}"), "{text}");
    println!("server /metrics: {count} pods scheduled");
    Ok(())
}

fn wait_for_running(c: &Cluster, name: &str) -> Result<PodRef> {
    let mut found = None;
    wait_for(
        Duration::from_secs(60),
        &format!("pod {name} running"),
        || {
            let p = c
                .get_items("pods", None)?
                .into_iter()
                .find(|p| p["metadata"]["name"] == name);
            if let Some(p) = p
                && p["status"]["phase"] == "Running"
                && p["status"]["podIP"].is_string()
            {
                found = Some(pod_ref(&p));
                return Ok(true);
            }
            Ok(false)
        },
    )?;
    found.context("pod")
}

fn h_join_after<T>(
    h: std::thread::ScopedJoinHandle<'_, T>,
    stop: &AtomicBool,
    before: impl FnOnce() -> Result<()>,
) -> Result<T> {
    let r = before();
    stop.store(true, Ordering::Relaxed);
    let out = h
        .join()
        .map_err(|_| anyhow::anyhow!("the request loop panicked"))?;
    r.map(|_| out)
}
