//! What each podctl command does against the API.

use crate::cli::{Cli, Command, GetArgs, Output, Proto, RolloutAction, RunArgs, TopWhat};
use crate::manifest::{self, Manifest};
use crate::views;
use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use podd_api::meta::{LabelSelector, ObjectMeta};
use podd_api::pod::{
    Container, ContainerPort, EnvVar, Protocol, ResourceList, ResourceRequirements,
};
use podd_api::service::{ServicePort, ServiceSpec};
use podd_api::workloads::{DeploymentSpec, HpaSpec, PodTemplateSpec, ScaleTargetRef};
use podd_api::{Deployment, Endpoints, HorizontalPodAutoscaler, Kind, Node, Object, Pod, Service};
use podd_client::{Api, Client, ClientConfig, ListParams, WatcherEvent, watcher};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

pub async fn run(cli: Cli) -> Result<()> {
    let client = connect(&cli)?;
    let ns = cli.namespace.clone();
    match cli.command {
        Command::Run(args) => run_deployment(&client, &ns, args).await,
        Command::Scale { name, replicas } => {
            client
                .api::<Deployment>(Some(&ns))
                .scale(&name, replicas)
                .await
                .map_err(|e| not_found_hint(e, "deployment", &name, &ns))?;
            println!("deployment.apps/{name} scaled");
            Ok(())
        }
        Command::Expose {
            name,
            port,
            target_port,
            protocol,
        } => expose(&client, &ns, &name, port, target_port, protocol).await,
        Command::Autoscale {
            name,
            min,
            max,
            cpu_percent,
            scale_down_window,
        } => {
            let target = AutoscaleTarget {
                min,
                max,
                cpu_percent,
                scale_down_window,
            };
            autoscale(&client, &ns, &name, target).await
        }
        Command::Get(args) => get(&client, &ns, args).await,
        Command::Describe { kind, name } => describe(&client, &ns, &kind, &name).await,
        Command::Delete { kind, name } => delete(&client, &ns, &kind, &name).await,
        Command::Apply { file } => apply(&client, &ns, file).await,
        Command::Logs {
            pod,
            container,
            follow,
            tail,
        } => logs(&client, &ns, pod_name(&pod), container, follow, tail).await,
        Command::Exec {
            pod,
            container,
            command,
        } => exec(&client, &ns, pod_name(&pod), container, command).await,
        Command::Top { what } => top(&client, &ns, what).await,
        Command::Rollout {
            action: RolloutAction::Status,
            name,
            timeout_seconds,
        } => rollout_status(&client, &ns, &name, timeout_seconds).await,
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "podctl", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The server from --server, then the config file, then the node's own socket.
fn connect(cli: &Cli) -> Result<Client> {
    let mut cfg = match &cli.config {
        Some(path) => ClientConfig::load(path)?,
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            match home.map(|h| h.join(".podd/config")).filter(|p| p.exists()) {
                Some(path) => ClientConfig::load(&path)?,
                None => ClientConfig::default(),
            }
        }
    };
    if let Some(server) = &cli.server {
        cfg.server = server.clone();
    }
    cfg.client()
        .with_context(|| format!("connecting to the podd server {}", cfg.server))
}

fn not_found_hint(e: podd_client::Error, kind: &str, name: &str, ns: &str) -> anyhow::Error {
    if e.is_not_found() {
        anyhow!(
            "{kind} {name:?} not found in namespace {ns:?}; list them with `podctl get {kind}s -n {ns}`"
        )
    } else {
        anyhow!(e)
    }
}

async fn run_deployment(client: &Client, ns: &str, a: RunArgs) -> Result<()> {
    let labels: BTreeMap<String, String> = [("app".to_string(), a.name.clone())].into();
    let mut env = Vec::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {kv:?}: use the form NAME=VALUE"))?;
        env.push(EnvVar {
            name: k.into(),
            value: v.into(),
        });
    }
    let cpu = a.cpu.as_deref().map(str::parse).transpose()?;
    let memory = a.memory.as_deref().map(str::parse).transpose()?;
    let resources = ResourceList {
        cpu,
        memory,
        pids: None,
    };
    let container = Container {
        name: a.name.clone(),
        image: a.image.clone(),
        command: a.command.clone(),
        env,
        ports: a
            .port
            .map(|p| {
                vec![ContainerPort {
                    container_port: p,
                    ..ContainerPort::default()
                }]
            })
            .unwrap_or_default(),
        resources: ResourceRequirements {
            requests: resources.clone(),
            limits: resources,
        },
        ..Container::default()
    };
    let d = Deployment {
        metadata: ObjectMeta {
            name: a.name.clone(),
            namespace: ns.into(),
            labels: labels.clone(),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: a.replicas,
            selector: LabelSelector {
                match_labels: labels.clone(),
            },
            template: PodTemplateSpec {
                metadata: ObjectMeta {
                    labels,
                    ..ObjectMeta::default()
                },
                spec: podd_api::PodSpec {
                    containers: vec![container],
                    ..podd_api::PodSpec::default()
                },
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    client
        .api::<Deployment>(Some(ns))
        .create(&d)
        .await
        .map_err(|e| {
            if e.code() == Some(409) {
                anyhow!("deployment {:?} already exists in namespace {ns:?}; scale it, delete it, or pick another name", a.name)
            } else {
                anyhow!(e)
            }
        })?;
    println!("deployment.apps/{} created", a.name);
    Ok(())
}

async fn expose(
    client: &Client,
    ns: &str,
    name: &str,
    port: u16,
    target: Option<u16>,
    proto: Proto,
) -> Result<()> {
    let d = client
        .api::<Deployment>(Some(ns))
        .get(name)
        .await
        .map_err(|e| not_found_hint(e, "deployment", name, ns))?;
    let svc = Service {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            labels: d.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: ServiceSpec {
            selector: d.spec.selector.match_labels.clone(),
            ports: vec![ServicePort {
                port,
                target_port: target,
                protocol: match proto {
                    Proto::Tcp => Protocol::Tcp,
                    Proto::Udp => Protocol::Udp,
                },
                ..ServicePort::default()
            }],
            ..ServiceSpec::default()
        },
    };
    let created = client.api::<Service>(Some(ns)).create(&svc).await?;
    println!(
        "service/{name} exposed at {}:{port} ({name}.{ns}.svc.cluster.local)",
        created.spec.cluster_ip
    );
    Ok(())
}

/// What `podctl autoscale` asks for.
struct AutoscaleTarget {
    min: u32,
    max: u32,
    cpu_percent: u32,
    scale_down_window: Option<u32>,
}

async fn autoscale(client: &Client, ns: &str, name: &str, t: AutoscaleTarget) -> Result<()> {
    let (min, max) = (t.min, t.max);
    if min == 0 || min > max {
        bail!("autoscale {name}: need 1 <= --min <= --max (got --min {min} --max {max})");
    }
    client
        .api::<Deployment>(Some(ns))
        .get(name)
        .await
        .map_err(|e| not_found_hint(e, "deployment", name, ns))?;
    let hpa = HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..ObjectMeta::default()
        },
        spec: HpaSpec {
            scale_target_ref: ScaleTargetRef {
                kind: "Deployment".into(),
                name: name.into(),
            },
            min_replicas: min,
            max_replicas: max,
            target_cpu_utilization_percentage: t.cpu_percent,
            scale_down_stabilization_seconds: t.scale_down_window,
        },
        ..HorizontalPodAutoscaler::default()
    };
    client
        .api::<HorizontalPodAutoscaler>(Some(ns))
        .create(&hpa)
        .await?;
    println!("horizontalpodautoscaler.autoscaling/{name} autoscaled");
    Ok(())
}

fn kind_of(s: &str) -> Result<Kind> {
    Kind::from_plural(&s.to_ascii_lowercase()).ok_or_else(|| {
        anyhow!(
            "unknown resource type {s:?}; use pods, deployments, services, endpoints, nodes or hpa"
        )
    })
}

async fn get(client: &Client, ns: &str, a: GetArgs) -> Result<()> {
    let kind = kind_of(&a.kind)?;
    let ns = if a.all_namespaces || !kind.namespaced() {
        None
    } else {
        Some(ns)
    };
    match kind {
        Kind::Pod => get_kind::<Pod>(client, ns, &a, |i, w| views::pods(i, w, now())).await,
        Kind::Deployment => {
            get_kind::<Deployment>(client, ns, &a, |i, w| views::deployments(i, w, now())).await
        }
        Kind::Service => {
            get_kind::<Service>(client, ns, &a, |i, w| views::services(i, w, now())).await
        }
        Kind::Endpoints => {
            get_kind::<Endpoints>(client, ns, &a, |i, _| views::endpoints(i, now())).await
        }
        Kind::Node => get_kind::<Node>(client, ns, &a, |i, w| views::nodes(i, w, now())).await,
        Kind::HorizontalPodAutoscaler => {
            get_kind::<HorizontalPodAutoscaler>(client, ns, &a, |i, _| views::hpas(i, now())).await
        }
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

async fn get_kind<T: Object>(
    client: &Client,
    ns: Option<&str>,
    a: &GetArgs,
    table: impl Fn(&[T], bool) -> crate::table::Table,
) -> Result<()> {
    let api: Api<T> = client.api(ns);
    let wide = a.output == Some(Output::Wide);
    let lp = ListParams {
        label_selector: a.selector.clone(),
        ..ListParams::default()
    };
    let items: Vec<T> = match &a.name {
        Some(name) => vec![api.get(name).await.map_err(|e| {
            not_found_hint(e, &T::KIND.name().to_lowercase(), name, ns.unwrap_or(""))
        })?],
        None => api.list(&lp).await?.items,
    };
    // `get KIND NAME -o json|yaml` prints the object itself, as kubectl does.
    print_items(&items, a.output, &table, wide, true, a.name.is_some())?;
    if a.watch {
        let mut stream = Box::pin(watcher(api, lp));
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatcherEvent::Applied(o)) | Ok(WatcherEvent::Deleted(o)) => {
                    if a.name.as_ref().is_none_or(|n| *n == o.metadata().name) {
                        print_items(
                            std::slice::from_ref(&o),
                            a.output,
                            &table,
                            wide,
                            false,
                            true,
                        )?;
                    }
                }
                Ok(WatcherEvent::Restarted(_)) => {}
                Err(e) => eprintln!("watch: {e}"),
            }
        }
    }
    Ok(())
}

fn print_items<T: Object>(
    items: &[T],
    output: Option<Output>,
    table: &impl Fn(&[T], bool) -> crate::table::Table,
    wide: bool,
    header: bool,
    single: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Some(Output::Json) => {
            let v = if items.len() == 1 && single {
                serde_json::to_value(&items[0])?
            } else {
                serde_json::json!({"kind": "List", "apiVersion": "v1", "items": items})
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Some(Output::Yaml) => {
            let v = if items.len() == 1 && single {
                serde_json::to_value(&items[0])?
            } else {
                serde_json::json!({"kind": "List", "apiVersion": "v1", "items": items})
            };
            write!(out, "{}", serde_yaml::to_string(&v)?)?;
        }
        Some(Output::Name) => {
            let kind = T::KIND.name().to_lowercase();
            for o in items {
                writeln!(out, "{kind}/{}", o.metadata().name)?;
            }
        }
        _ => {
            let t = table(items, wide);
            if t.is_empty() && header {
                eprintln!("No resources found.");
                return Ok(());
            }
            let text = t.render();
            let skip = usize::from(!header);
            for line in text.lines().skip(skip) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

async fn describe(client: &Client, ns: &str, kind: &str, name: &str) -> Result<()> {
    let kind = kind_of(kind)?;
    let ns_opt = kind.namespaced().then_some(ns);
    let path = podd_client::resource_path(kind, ns_opt, Some(name));
    let obj: serde_json::Value = client
        .request(hyper_get(), &path, None, "application/json")
        .await
        .map_err(|e| not_found_hint(e, &kind.name().to_lowercase(), name, ns))?;
    print!("{}", serde_yaml::to_string(&obj)?);
    if kind == Kind::Pod
        && let Ok(pod) = serde_json::from_value::<Pod>(obj.clone())
    {
        print!("{}", security_summary(&pod));
    }
    if kind == Kind::Deployment || kind == Kind::Service {
        let selector = obj
            .pointer(if kind == Kind::Deployment {
                "/spec/selector/matchLabels"
            } else {
                "/spec/selector"
            })
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        if !selector.is_empty() {
            let pods = client
                .api::<Pod>(Some(ns))
                .list(&ListParams::labels(&selector))
                .await?;
            println!("Pods:");
            print!("{}", views::pods(&pods.items, true, now()).render());
        }
    }
    Ok(())
}

/// Each container's security context in one line, privileged ones first in the eye:
/// `Privileged: true` is the pod's way to the node's devices and every capability.
fn security_summary(pod: &Pod) -> String {
    let mut out = String::from("Security:\n");
    for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
        let sc = c.security_context.clone().unwrap_or_default();
        let mut parts = vec![format!("Privileged: {}", sc.privileged)];
        if let Some(u) = sc.run_as_user {
            parts.push(format!("RunAsUser: {u}"));
        }
        if let Some(g) = sc.run_as_group {
            parts.push(format!("RunAsGroup: {g}"));
        }
        if sc.read_only_root_filesystem {
            parts.push("ReadOnlyRootFilesystem: true".into());
        }
        if let Some(a) = sc.allow_privilege_escalation {
            parts.push(format!("AllowPrivilegeEscalation: {a}"));
        }
        if let Some(caps) = sc.capabilities.as_ref().filter(|_| !sc.privileged) {
            if !caps.add.is_empty() {
                parts.push(format!("Capabilities add: {}", caps.add.join(",")));
            }
            if !caps.drop.is_empty() {
                parts.push(format!("Capabilities drop: {}", caps.drop.join(",")));
            }
        }
        out.push_str(&format!("  {}: {}\n", c.name, parts.join(", ")));
    }
    out
}

fn hyper_get() -> podd_client_method::Method {
    podd_client_method::Method::GET
}

/// The HTTP method type the client takes.
mod podd_client_method {
    pub use hyper::Method;
}

async fn delete(client: &Client, ns: &str, kind: &str, name: &str) -> Result<()> {
    let kind = kind_of(kind)?;
    let ns_opt = kind.namespaced().then_some(ns);
    let path = podd_client::resource_path(kind, ns_opt, Some(name));
    let r = client
        .raw(hyper::Method::DELETE, &path, None, "application/json")
        .await?;
    if r.status.as_u16() == 404 {
        bail!(
            "{} {name:?} not found in namespace {ns:?}; list them with `podctl get {}`",
            kind.name().to_lowercase(),
            kind.plural()
        );
    }
    if !r.status.is_success() {
        bail!(
            "deleting {} {name}: {}",
            kind.name(),
            String::from_utf8_lossy(&r.body)
        );
    }
    println!("{}/{name} deleted", kind.name().to_lowercase());
    Ok(())
}

async fn apply(client: &Client, ns: &str, file: PathBuf) -> Result<()> {
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let manifests = manifest::parse(&text, &file.display().to_string())?;
    for m in manifests {
        let kind = m.kind();
        let name = m.name().to_string();
        let verb = match m {
            Manifest::Pod(o) => upsert(client, ns, o).await?,
            Manifest::Deployment(o) => upsert(client, ns, o).await?,
            Manifest::Service(o) => upsert(client, ns, o).await?,
            Manifest::Hpa(o) => upsert(client, ns, o).await?,
        };
        println!("{}/{name} {verb}", kind.name().to_lowercase());
    }
    Ok(())
}

/// Creates the object, or replaces the spec of the one that exists (keeping its status).
async fn upsert<T: Object>(client: &Client, ns: &str, mut obj: T) -> Result<&'static str> {
    let ns = if obj.metadata().namespace.is_empty() {
        ns.to_string()
    } else {
        obj.metadata().namespace.clone()
    };
    let api: Api<T> = client.api(T::KIND.namespaced().then_some(ns.as_str()));
    obj.metadata_mut().namespace = if T::KIND.namespaced() {
        ns.clone()
    } else {
        String::new()
    };
    let name = obj.metadata().name.clone();
    match api.get_opt(&name).await? {
        None => {
            api.create(&obj).await?;
            Ok("created")
        }
        Some(existing) => {
            let mut v = serde_json::to_value(&obj)?;
            let old = serde_json::to_value(&existing)?;
            if let (Some(status), Some(o)) = (old.get("status"), v.as_object_mut()) {
                o.insert("status".into(), status.clone());
            }
            if let Some(svc_ip) = old.pointer("/spec/clusterIP")
                && let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut())
            {
                spec.entry("clusterIP").or_insert(svc_ip.clone());
            }
            let mut merged: T = serde_json::from_value(v)?;
            *merged.metadata_mut() = ObjectMeta {
                labels: obj.metadata().labels.clone(),
                annotations: obj.metadata().annotations.clone(),
                ..existing.metadata().clone()
            };
            if serde_json::to_value(&merged)? == old {
                return Ok("unchanged");
            }
            api.update(&merged).await?;
            Ok("configured")
        }
    }
}

/// A pod named as `NAME`, `pod/NAME` or `pods/NAME` (what `get pods -o name` prints).
fn pod_name(arg: &str) -> &str {
    arg.strip_prefix("pod/")
        .or_else(|| arg.strip_prefix("pods/"))
        .unwrap_or(arg)
}

async fn logs(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Option<String>,
    follow: bool,
    tail: Option<usize>,
) -> Result<()> {
    let mut q = Vec::new();
    if let Some(c) = &container {
        q.push(format!("container={c}"));
    }
    if follow {
        q.push("follow=true".into());
    }
    if let Some(t) = tail {
        q.push(format!("tailLines={t}"));
    }
    let mut path = format!(
        "{}/log",
        podd_client::resource_path(Kind::Pod, Some(ns), Some(pod))
    );
    if !q.is_empty() {
        path = format!("{path}?{}", q.join("&"));
    }
    let mut stream = client
        .stream(hyper::Method::GET, &path)
        .await
        .map_err(|e| not_found_hint(e, "pod", pod, ns))?;
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

async fn exec(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Option<String>,
    command: Vec<String>,
) -> Result<()> {
    let mut q: Vec<String> = command
        .iter()
        .map(|c| format!("command={}", urlencode(c)))
        .collect();
    if let Some(c) = &container {
        q.push(format!("container={}", urlencode(c)));
    }
    let path = format!(
        "{}/exec?{}",
        podd_client::resource_path(Kind::Pod, Some(ns), Some(pod)),
        q.join("&")
    );
    let r = client
        .raw(hyper::Method::POST, &path, None, "application/json")
        .await?;
    let body: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|_| anyhow!("exec in {pod}: {}", String::from_utf8_lossy(&r.body)))?;
    if !r.status.is_success() {
        bail!(
            "exec in pod {pod}: {}",
            body.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("failed")
        );
    }
    print!(
        "{}",
        body.get("stdout").and_then(|s| s.as_str()).unwrap_or("")
    );
    eprint!(
        "{}",
        body.get("stderr").and_then(|s| s.as_str()).unwrap_or("")
    );
    let code = body.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0);
    if code != 0 {
        std::process::exit(code as i32);
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn top(client: &Client, ns: &str, what: TopWhat) -> Result<()> {
    let mut t;
    match what {
        TopWhat::Pods => {
            t = crate::table::Table::new(vec!["NAME", "CPU(cores)", "MEMORY(bytes)"]);
            for p in client
                .api::<Pod>(Some(ns))
                .list(&Default::default())
                .await?
                .items
            {
                let (cpu, mem) = p
                    .status
                    .usage
                    .as_ref()
                    .map(|u| (u.cpu_millis, u.memory_bytes))
                    .unwrap_or_default();
                t.push(vec![
                    p.metadata.name,
                    format!("{cpu}m"),
                    format!("{}Mi", mem >> 20),
                ]);
            }
        }
        TopWhat::Nodes => {
            t = crate::table::Table::new(vec![
                "NAME",
                "CPU(cores)",
                "CPU%",
                "MEMORY(bytes)",
                "MEMORY%",
            ]);
            for n in client
                .api::<Node>(None)
                .list(&Default::default())
                .await?
                .items
            {
                let (cpu, mem) = n
                    .status
                    .usage
                    .as_ref()
                    .map(|u| (u.cpu_millis, u.memory_bytes))
                    .unwrap_or_default();
                let pct = |used: u64, total: u64| (used * 100).checked_div(total).unwrap_or(0);
                t.push(vec![
                    n.metadata.name.clone(),
                    format!("{cpu}m"),
                    format!("{}%", pct(cpu, n.status.allocatable.cpu.millis())),
                    format!("{}Mi", mem >> 20),
                    format!("{}%", pct(mem, n.status.allocatable.memory.bytes())),
                ]);
            }
        }
    }
    print!("{}", t.render());
    Ok(())
}

async fn rollout_status(client: &Client, ns: &str, name: &str, timeout: u64) -> Result<()> {
    let api = client.api::<Deployment>(Some(ns));
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut last = String::new();
    loop {
        let d = api
            .get(name)
            .await
            .map_err(|e| not_found_hint(e, "deployment", name, ns))?;
        let (want, s) = (d.spec.replicas, &d.status);
        let msg = if s.observed_generation < d.metadata.generation {
            "Waiting for deployment spec update to be observed...".to_string()
        } else if s.updated_replicas < want {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                s.updated_replicas
            )
        } else if s.replicas > s.updated_replicas {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                s.replicas - s.updated_replicas
            )
        } else if s.available_replicas < want {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {want} updated replicas are available...",
                s.available_replicas
            )
        } else {
            println!("deployment {name:?} successfully rolled out");
            return Ok(());
        };
        if msg != last {
            println!("{msg}");
            last = msg;
        }
        if Instant::now() > deadline {
            bail!(
                "deployment {name:?} did not finish rolling out within {timeout}s; see `podctl describe deployment {name}`"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_named_as_get_prints_them() {
        assert_eq!(pod_name("web-1"), "web-1");
        assert_eq!(pod_name("pod/web-1"), "web-1");
        assert_eq!(pod_name("pods/web-1"), "web-1");
    }

    #[test]
    fn describe_shows_each_containers_security_context() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "plain", "image": "busybox"},
                {"name": "root", "image": "busybox", "securityContext": {"privileged": true}},
                {"name": "tight", "image": "busybox", "securityContext": {
                    "runAsUser": 1000, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}
            ]}
        }))
        .unwrap();
        assert_eq!(
            security_summary(&pod),
            "Security:\n  plain: Privileged: false\n  root: Privileged: true\n  tight: Privileged: false, RunAsUser: 1000, ReadOnlyRootFilesystem: true, AllowPrivilegeEscalation: false, Capabilities add: NET_BIND_SERVICE, Capabilities drop: ALL\n"
        );
    }
}
