//! A multi-node podd cluster on one machine, made of network namespaces: what kind does with
//! containers, here with netns. Used by the e2e tests, the e2e benchmark and
//! `cargo xtask cluster up|down`.
//!
//! Topology (nothing is routed to the host's uplink; the host namespace never sees a packet):
//! ```text
//!  netns <prefix>-c:  bridge br0 (no address, no routes)
//!        ├─ veth n1 ── netns <prefix>-n1: eth0 192.168.77.1/24   podd server (:6443) + podd agent
//!        ├─ veth n2 ── netns <prefix>-n2: eth0 192.168.77.2/24   podd agent
//!        └─ ...
//! ```
//! Each node has its own data dir, run dir, cgroup subtree (`/sys/fs/cgroup/unified/<prefix>-nodeN`
//! on a hybrid host) and BPF pin dir. Node netns have no default route, so the DNS upstream
//! (a 10.x resolver on this host) is unreachable from them: a query outside cluster.local fails
//! inside the node instead of leaving the machine.
//!
//! The whole state is described by a `state.json` in the cluster's directory, so `down` (or a
//! `Drop`) finds every process, namespace, cgroup and pin to remove, and then checks that none
//! is left.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where `cargo xtask cluster up` keeps its cluster, so `down` finds it.
pub const XTASK_CLUSTER_DIR: &str = "/run/podd-cluster";
/// The node subnet inside the cluster namespace.
pub const NODE_SUBNET: &str = "192.168.77";
pub const API_PORT: u16 = 6443;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub ip: String,
    pub netns: String,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub pin_dir: PathBuf,
    pub token: String,
    pub agent_pid: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub prefix: String,
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub cluster_netns: String,
    pub server_data_dir: PathBuf,
    pub server_socket: PathBuf,
    pub server_pid: Option<i32>,
    pub nodes: Vec<NodeState>,
}

/// A running cluster. Dropping it tears everything down (unless it was `detach`ed).
pub struct Cluster {
    pub state: ClusterState,
    children: Vec<std::process::Child>,
    detached: bool,
}

/// The directory holding podd, podd-shim and podctl: `PODD_BIN_DIR`, else the cargo profile
/// directory the running test or bench executable was built into.
pub fn bin_dir() -> Result<PathBuf> {
    if let Ok(d) = std::env::var("PODD_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

fn check_binaries(bin: &Path) -> Result<()> {
    for b in ["podd", "podd-shim", "podctl"] {
        if !bin.join(b).exists() {
            bail!(
                "{} is missing: build it first with `cargo build -p podd -p podd-pod -p podctl` \
                 (same profile and target dir), or set PODD_BIN_DIR",
                bin.join(b).display()
            );
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid this cluster started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn wait_dead(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

impl Cluster {
    /// A cluster of `nodes` nodes with a prefix unique to this process, in a temporary directory.
    pub fn up(nodes: usize) -> Result<Cluster> {
        let prefix = format!("pe{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("podd-{prefix}"));
        Cluster::up_at(nodes, &prefix, &dir)
    }

    /// A cluster whose state lives in `dir` (created; must not hold a cluster already).
    pub fn up_at(nodes: usize, prefix: &str, dir: &Path) -> Result<Cluster> {
        if nodes == 0 || nodes > 200 {
            bail!("a cluster needs between 1 and 200 nodes, not {nodes}");
        }
        if dir.join("state.json").exists() {
            bail!(
                "{} already holds a cluster: take it down first",
                dir.display()
            );
        }
        let bin_dir = bin_dir()?;
        check_binaries(&bin_dir)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cg = podd_runtime::cgroups::detect_root().context("the nodes' cgroup v2 mount")?;
        let server_data_dir = dir.join("server");
        let mut state = ClusterState {
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
            bin_dir,
            cluster_netns: format!("{prefix}-c"),
            server_socket: dir.join("server.sock"),
            server_data_dir,
            server_pid: None,
            nodes: Vec::new(),
        };
        for i in 1..=nodes {
            let ndir = dir.join(format!("node{i}"));
            state.nodes.push(NodeState {
                name: format!("node-{i}"),
                ip: format!("{NODE_SUBNET}.{i}"),
                netns: format!("{prefix}-n{i}"),
                data_dir: ndir.join("data"),
                run_dir: ndir.join("run"),
                cgroup_root: cg.join(format!("{prefix}-node{i}")),
                // On the cluster's own bpffs: nothing is mounted on the host's /sys/fs/bpf.
                pin_dir: dir.join("bpf").join(format!("node{i}")),
                // Issued by `podd token create` once the server runs.
                token: String::new(),
                agent_pid: None,
            });
        }
        let mut c = Cluster {
            state,
            children: Vec::new(),
            detached: false,
        };
        // From here on, a failure tears down what exists (Drop).
        c.save()?;
        c.mount_bpffs()?;
        c.build_topology()?;
        c.seed_images()?;
        c.start_server()?;
        // Nodes join as an operator would: `podd token create` next to the running server,
        // which accepts the new tokens without a restart.
        for i in 0..nodes {
            c.state.nodes[i].token = c.create_token(&c.state.nodes[i].name.clone())?;
        }
        for i in 0..nodes {
            c.start_agent(i)?;
        }
        c.save()?;
        c.wait_nodes_ready(Duration::from_secs(60))?;
        Ok(c)
    }

    /// Adopts the cluster described by `dir/state.json` (for `down`).
    pub fn attach(dir: &Path) -> Result<Cluster> {
        let text = std::fs::read_to_string(dir.join("state.json"))
            .with_context(|| format!("no cluster in {}", dir.display()))?;
        Ok(Cluster {
            state: serde_json::from_str(&text)?,
            children: Vec::new(),
            detached: false,
        })
    }

    /// Leaves the cluster running when this value is dropped.
    pub fn detach(mut self) {
        self.detached = true;
    }

    fn save(&self) -> Result<()> {
        std::fs::write(
            self.state.dir.join("state.json"),
            serde_json::to_vec_pretty(&self.state)?,
        )?;
        Ok(())
    }

    /// A bpffs of the cluster's own under its directory, for the agents' pins; `down`
    /// unmounts it with the rest of the mounts under the directory.
    fn mount_bpffs(&self) -> Result<()> {
        let at = self.state.dir.join("bpf");
        std::fs::create_dir_all(&at)?;
        run(Command::new("mount")
            .args(["-t", "bpf", "-o", "mode=0700", "bpf"])
            .arg(&at))
        .map(|_| ())
    }

    fn build_topology(&self) -> Result<()> {
        let c = &self.state.cluster_netns;
        ip(&["netns", "add", c])?;
        ip(&["-n", c, "link", "set", "lo", "up"])?;
        ip(&["-n", c, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", c, "link", "set", "br0", "up"])?;
        for (i, n) in self.state.nodes.iter().enumerate() {
            let veth = format!("n{}", i + 1);
            ip(&["netns", "add", &n.netns])?;
            ip(&["-n", &n.netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", c, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &n.netns,
            ])?;
            ip(&["-n", c, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &n.netns,
                "addr",
                "add",
                &format!("{}/24", n.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &n.netns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn seed_images(&self) -> Result<()> {
        let layout = self.state.dir.join("layout");
        podd_image::testing::write_busybox_layout(&layout, podd_image::Compression::Gzip)
            .context("writing the busybox OCI layout")?;
        for n in &self.state.nodes {
            let store = podd_image::ImageStore::open(n.data_dir.join("images"))?;
            store.import_layout(&layout, "busybox:latest", "busybox")?;
            store.import_layout(&layout, "busybox-httpd:latest", "busybox-httpd")?;
        }
        Ok(())
    }

    fn spawn_in(&mut self, netns: &str, log: &str, args: &[String]) -> Result<i32> {
        use std::os::unix::process::CommandExt;
        // Appended to: a restarted server or agent keeps its earlier lines.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.dir.join(log))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{netns}"))
            .arg(self.state.bin_dir.join("podd"))
            .args(args)
            .env(
                "PODD_LOG",
                std::env::var("PODD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal of `xtask cluster up` does not
            // reach it.
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id() as i32;
        self.children.push(child);
        Ok(pid)
    }

    /// Starts (or restarts) the server on the cluster's store.
    pub fn start_server(&mut self) -> Result<()> {
        let s = self.state.clone();
        let args: Vec<String> = vec![
            "server".into(),
            "--store".into(),
            format!("sqlite://{}", s.server_data_dir.join("podd.db").display()),
            "--data-dir".into(),
            s.server_data_dir.display().to_string(),
            "--socket".into(),
            s.server_socket.display().to_string(),
            "--listen".into(),
            format!("{}:{API_PORT}", s.nodes[0].ip),
            // The cluster's admin kubeconfig, for kubectl in the first node's namespace
            // (`/run/podd-cluster/kubeconfig` for `cargo xtask cluster up`).
            "--write-kubeconfig".into(),
            s.server_data_dir
                .parent()
                .unwrap_or(&s.server_data_dir)
                .join("kubeconfig")
                .display()
                .to_string(),
        ];
        // A socket left by a previous run would pass for the new server's before it listens.
        let _ = std::fs::remove_file(&s.server_socket);
        let pid = self.spawn_in(&s.nodes[0].netns, "server.log", &args)?;
        self.state.server_pid = Some(pid);
        self.save()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(s.server_socket.exists() && s.server_data_dir.join("pki/ca.crt").exists()) {
            if !pid_alive(pid) || Instant::now() > deadline {
                bail!("the server did not start: {}", self.log("server.log"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM), as an upgrade or a crash-restart would; the
    /// agents and pods keep running. `start_server` brings it back on the same store.
    pub fn stop_server(&mut self) {
        if let Some(pid) = self.state.server_pid.take() {
            stop(pid);
        }
    }

    /// Stops node `i`'s agent gracefully (SIGTERM); its pods keep running. Returns how long it
    /// took to exit (SIGKILL follows after 5 s).
    pub fn stop_agent(&mut self, i: usize) -> Duration {
        let t = Instant::now();
        if let Some(pid) = self.state.nodes[i].agent_pid.take() {
            stop(pid);
        }
        t.elapsed()
    }

    /// `podd token create NODE` against the server's data dir; the token it prints.
    pub fn create_token(&self, node: &str) -> Result<String> {
        let out = run(Command::new(self.state.bin_dir.join("podd"))
            .args(["token", "create", node, "--data-dir"])
            .arg(&self.state.server_data_dir))?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if token.len() != 64 {
            bail!("podd token create {node} printed {token:?}, not a token");
        }
        Ok(token)
    }

    /// Starts (or restarts) node `i`'s agent (0-based).
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let s = self.state.clone();
        let n = &s.nodes[i];
        let args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            format!("https://{}:{API_PORT}", s.nodes[0].ip),
            "--token".into(),
            n.token.clone(),
            "--ca".into(),
            s.server_data_dir.join("pki/ca.crt").display().to_string(),
            "--node-name".into(),
            n.name.clone(),
            "--node-ip".into(),
            n.ip.clone(),
            "--agent-data-dir".into(),
            n.data_dir.display().to_string(),
            "--run-dir".into(),
            n.run_dir.display().to_string(),
            "--cgroup-root".into(),
            n.cgroup_root.display().to_string(),
            "--bpf-pin-dir".into(),
            n.pin_dir.display().to_string(),
        ];
        let pid = self.spawn_in(&n.netns, &format!("agent-{}.log", n.name), &args)?;
        self.state.nodes[i].agent_pid = Some(pid);
        self.save()
    }

    /// The tail of one of the cluster's logs (server.log, agent-node-1.log).
    pub fn log(&self, name: &str) -> String {
        let t = std::fs::read_to_string(self.state.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs podctl against the cluster (through the server's Unix socket) and returns its
    /// stdout; fails with its stderr when it exits non-zero.
    pub fn podctl(&self, args: &[&str]) -> Result<String> {
        let out = self.podctl_output(args)?;
        if !out.status.success() {
            bail!(
                "podctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn podctl_output(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.state.bin_dir.join("podctl"))
            .arg("--server")
            .arg(self.server_url())
            .args(args)
            .env_remove("PODCTL_CONFIG")
            .output()
            .context("running podctl")
    }

    /// Runs the real kubectl (`$KUBECTL` or `/usr/bin/kubectl`) in node 1's network namespace
    /// with the admin kubeconfig the server wrote, feeding it `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: &[u8]) -> Result<Output> {
        use std::io::Write;
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
        let kubeconfig = self.state.dir.join("kubeconfig");
        let mut child = Command::new("nsenter")
            .arg(format!(
                "--net=/var/run/netns/{}",
                self.state.nodes[0].netns
            ))
            .arg(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {kubectl}"))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin)?;
        }
        child.wait_with_output().context("waiting for kubectl")
    }

    /// unix:// URL of the server's socket, for podctl on this machine.
    pub fn server_url(&self) -> String {
        format!("unix://{}", self.state.server_socket.display())
    }

    /// The admin token, for podctl over TLS from inside the cluster namespaces.
    pub fn admin_token(&self) -> Result<String> {
        Ok(
            std::fs::read_to_string(self.state.server_data_dir.join("tokens/admin"))?
                .trim()
                .to_string(),
        )
    }

    /// `podctl get KIND -o json` items.
    pub fn get_items(&self, kind: &str, selector: Option<&str>) -> Result<Vec<serde_json::Value>> {
        let mut args = vec!["get", kind, "-o", "json"];
        if let Some(s) = selector {
            args.extend(["-l", s]);
        }
        let out = self.podctl(&args)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("podctl get {kind} -o json printed {out:?}"))?;
        Ok(match v.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            _ => vec![v],
        })
    }

    /// Node names whose Ready condition is True.
    pub fn ready_nodes(&self) -> Result<Vec<String>> {
        Ok(self
            .get_items("nodes", None)?
            .iter()
            .filter(|n| condition_true(n, "Ready"))
            .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
            .collect())
    }

    pub fn wait_nodes_ready(&self, timeout: Duration) -> Result<()> {
        let want = self.state.nodes.len();
        wait_for(timeout, "all nodes Ready", || {
            Ok(self.ready_nodes().map(|r| r.len() == want).unwrap_or(false))
        })
        .map_err(|e| anyhow!("{e}\nserver log:\n{}", self.log("server.log")))
    }

    /// The node state (0-based index) by node name.
    pub fn node(&self, name: &str) -> Option<usize> {
        self.state.nodes.iter().position(|n| n.name == name)
    }

    /// Runs `argv` in `container` of pod `uid` on node `node` through `podd-shim exec`.
    pub fn exec(&self, node: usize, uid: &str, container: &str, argv: &[&str]) -> Result<Output> {
        let n = &self.state.nodes[node];
        Command::new(self.state.bin_dir.join("podd-shim"))
            .arg("exec")
            .arg(n.run_dir.join("pods").join(uid))
            .arg(container)
            .arg("--")
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .context("running podd-shim exec")
    }

    /// One HTTP request to node `node`'s agent endpoint; (status, body). `from` None goes
    /// through the agent's Unix socket; `Some(j)` in plain HTTP over TCP to `<node ip>:10250`
    /// from inside node `j`'s netns, with `token` as the bearer token (which the agent, serving
    /// only mutual TLS there, must refuse). The body is read until `until` appears in it (for
    /// streamed logs) or the server closes.
    pub fn agent_request(
        &self,
        node: usize,
        method: &str,
        path_query: &str,
        from: Option<(usize, Option<&str>)>,
        until: Option<&str>,
    ) -> Result<(u16, String)> {
        let n = &self.state.nodes[node];
        let auth = match from {
            Some((_, Some(t))) => format!("Authorization: Bearer {t}\r\n"),
            _ => String::new(),
        };
        let req = format!(
            "{method} {path_query} HTTP/1.1\r\nHost: agent\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let until = until.map(String::from);
        let read_all = move |s: Box<dyn ReadWrite>| exchange(s, &req, until.as_deref());
        let raw = match from {
            None => {
                let s = std::os::unix::net::UnixStream::connect(n.run_dir.join("agent.sock"))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                read_all(Box::new(s))?
            }
            Some((j, _)) => {
                let netns = PathBuf::from("/var/run/netns").join(&self.state.nodes[j].netns);
                let addr: std::net::SocketAddr = format!("{}:10250", n.ip).parse()?;
                // A thread of its own enters the node's netns; the rest of the process stays.
                std::thread::spawn(move || -> Result<String> {
                    let f = std::fs::File::open(&netns)?;
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns(2) on an fd we own; it changes only this thread's netns.
                    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        bail!(
                            "setns {}: {}",
                            netns.display(),
                            std::io::Error::last_os_error()
                        );
                    }
                    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    read_all(Box::new(s))
                })
                .join()
                .map_err(|_| anyhow!("the request thread panicked"))??
            }
        };
        parse_response(&raw)
    }

    /// One GET to the API server through its Unix socket (paths podctl has no command for,
    /// such as /metrics); (status, body).
    pub fn server_get(&self, path: &str) -> Result<(u16, String)> {
        let s = std::os::unix::net::UnixStream::connect(&self.state.server_socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: podd\r\nConnection: close\r\n\r\n");
        parse_response(&exchange(Box::new(s), &req, None)?)
    }

    /// Kills node `i`'s agent and everything it runs (shims and containers) with SIGKILL, as a
    /// node crash would; the namespaces, mounts and cgroups stay until `down`.
    pub fn crash_node(&self, i: usize) -> Result<()> {
        if let Some(pid) = self.state.nodes[i].agent_pid {
            kill(pid, libc::SIGKILL);
            wait_dead(pid, Duration::from_secs(5));
        }
        // Every process in the node's cgroup subtree (the pods) and every shim of the node.
        let n = self.state.nodes[i].clone();
        for pid in procs_under(&n.cgroup_root) {
            kill(pid, libc::SIGKILL);
        }
        for pid in shim_pids(&n.run_dir) {
            kill(pid, libc::SIGKILL);
        }
        Ok(())
    }

    /// Stops everything and removes everything; then checks nothing is left.
    pub fn down(mut self) -> Result<()> {
        let r = self.teardown();
        self.detached = true;
        r
    }

    fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        let s = self.state.clone();
        // Agents first (pods keep running), then the server.
        for n in &s.nodes {
            if let Some(pid) = n.agent_pid {
                stop(pid);
            }
        }
        if let Some(pid) = s.server_pid {
            stop(pid);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        // Each node's reset runs in its netns (the node bridge and pod veths live there).
        for n in &s.nodes {
            if !Path::new("/var/run/netns").join(&n.netns).exists() {
                continue;
            }
            let out = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", n.netns))
                .arg(s.bin_dir.join("podd"))
                .arg("reset")
                .arg("--data-dir")
                .arg(&n.data_dir)
                .arg("--run-dir")
                .arg(&n.run_dir)
                .arg("--cgroup-root")
                .arg(&n.cgroup_root)
                .arg("--bpf-pin-dir")
                .arg(&n.pin_dir)
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => errors.push(format!(
                    "podd reset of {}: {}{}",
                    n.name,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )),
                Err(e) => errors.push(format!("podd reset of {}: {e}", n.name)),
            }
            // Whatever reset left pinned would keep programs attached: a leak of podd's.
            let pins: Vec<_> = std::fs::read_dir(&n.pin_dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            if !pins.is_empty() {
                errors.push(format!("podd reset of {} left pins {pins:?}", n.name));
            }
            for pid in procs_under(&n.cgroup_root) {
                kill(pid, libc::SIGKILL);
            }
            let _ = remove_cgroup_tree(&n.cgroup_root);
            let _ = std::fs::remove_dir_all(&n.pin_dir);
        }
        for n in &s.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.netns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &s.cluster_netns])
            .output();
        // The cluster's bpffs (and any mount left under the cluster dir) before removing it.
        for m in mounts_under(&s.dir) {
            let _ = nix_umount(&m);
        }
        if let Err(e) = std::fs::remove_dir_all(&s.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {e}", s.dir.display()));
        }
        errors.extend(leaks(&s));
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("cluster {} teardown: {}", s.prefix, errors.join("; "))
        }
    }
}

impl Drop for Cluster {
    #[allow(clippy::print_stderr)] // a guard cannot return its error
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Err(e) = self.teardown() {
            // A guard cannot return the error; a test asserting no leaks calls `down`.
            eprintln!("{e:#}");
        }
    }
}

trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

/// Sends `req` and reads the answer until the peer closes, the read times out, or `until`
/// appears in it (for streamed bodies).
fn exchange(mut s: Box<dyn ReadWrite>, req: &str, until: Option<&str>) -> Result<String> {
    use std::io::{Read, Write};
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let k = match s.read(&mut chunk) {
            Ok(k) => k,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(u) = until
            && String::from_utf8_lossy(&buf).contains(u)
        {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// (status, body) of a raw HTTP/1.1 response, a chunked body decoded.
fn parse_response(raw: &str) -> Result<(u16, String)> {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// The data of a chunked body (a partial last chunk included).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let take = n.min(rest.len());
        out.push_str(rest.get(..take).unwrap_or(rest));
        body = rest.get(take..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
}

/// SIGTERM, then SIGKILL after 5 s.
fn stop(pid: i32) {
    if !pid_alive(pid) {
        return;
    }
    kill(pid, libc::SIGTERM);
    if !wait_dead(pid, Duration::from_secs(5)) {
        kill(pid, libc::SIGKILL);
        wait_dead(pid, Duration::from_secs(5));
    }
}

fn nix_umount(path: &Path) -> Result<()> {
    run(Command::new("umount").arg("-l").arg(path)).map(|_| ())
}

/// Every process in a cgroup subtree.
pub fn procs_under(cgroup: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(cgroup) else {
        return out;
    };
    if let Ok(t) = std::fs::read_to_string(cgroup.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(procs_under(&e.path()));
        }
    }
    out
}

/// The pids of the shims whose state lives under `run_dir/pods`, from their command lines.
pub fn shim_pids(run_dir: &Path) -> Vec<i32> {
    let needle = run_dir.join("pods").display().to_string();
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let mut parts = cmdline.split('\0');
            if parts.next().is_some_and(|a| a.ends_with("podd-shim")) && cmdline.contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type()?.is_dir() {
            remove_cgroup_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let d = dir.display().to_string();
    let mut out: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(PathBuf::from)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// What of the cluster is still there: processes, netns, cgroups, pins, mounts, files.
pub fn leaks(s: &ClusterState) -> Vec<String> {
    let mut out = Vec::new();
    let netns: Vec<String> = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("{}-", s.prefix)))
                .collect()
        })
        .unwrap_or_default();
    if !netns.is_empty() {
        out.push(format!("network namespaces {netns:?}"));
    }
    for pid in s
        .nodes
        .iter()
        .filter_map(|n| n.agent_pid)
        .chain(s.server_pid)
        .filter(|p| pid_alive(*p))
    {
        out.push(format!("process {pid}"));
    }
    for n in &s.nodes {
        if n.cgroup_root.exists() {
            out.push(format!("cgroup {}", n.cgroup_root.display()));
        }
        if n.pin_dir.exists() {
            out.push(format!("bpf pins {}", n.pin_dir.display()));
        }
        let shims = shim_pids(&n.run_dir);
        if !shims.is_empty() {
            out.push(format!("shims {shims:?} of {}", n.name));
        }
    }
    let mounts = mounts_under(&s.dir);
    if !mounts.is_empty() {
        out.push(format!("mounts {mounts:?}"));
    }
    if s.dir.exists() {
        out.push(format!("directory {}", s.dir.display()));
    }
    out
}

pub fn condition_true(obj: &serde_json::Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

/// Polls `f` every 100 ms until it says true, or fails after `timeout` naming `what`.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
