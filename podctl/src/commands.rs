//! What each podctl command does against the API.

use crate::cli::{Cascade, Cli, Command, Proto, RolloutAction, RunArgs, TopWhat};
use crate::{apply, get};
use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use podd_api::k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscalerBehavior,
};
use podd_api::{
    Container, ContainerPort, CrossVersionObjectReference, Deployment, DeploymentSpec, EnvVar,
    HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, IntOrString, Kind, LabelSelector,
    MetricSpec, MetricTarget, Node, ObjectMeta, PodSpec, PodTemplateSpec, Quantity,
    ResourceMetricSource, ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use podd_client::{Client, ClientConfig, DeleteParams, Propagation};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
        Command::Get(args) => get::get(&client, &ns, args).await,
        Command::Describe { kind, name } => get::describe(&client, &ns, &kind, &name).await,
        Command::Delete {
            kind,
            name,
            cascade,
            grace_period,
        } => delete(&client, &ns, &kind, &name, cascade, grace_period).await,
        Command::Apply {
            file,
            force_conflicts,
            dry_run,
        } => {
            let opts = apply::Options {
                force: force_conflicts,
                dry_run: dry_run == crate::cli::DryRun::Server,
            };
            apply::apply(&client, &ns, &file, opts).await
        }
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

pub fn not_found_hint(e: podd_client::Error, kind: &str, name: &str, ns: &str) -> anyhow::Error {
    if e.is_not_found() {
        anyhow!(
            "{kind} {name:?} not found in namespace {ns:?}; list them with `podctl get {kind}s -n {ns}`"
        )
    } else {
        anyhow!(e)
    }
}

/// A kind named as kubectl names it (plural, singular, short name, `kind.group`).
pub fn kind_of(s: &str) -> Result<Kind> {
    Kind::from_plural(s).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        anyhow!(
            "unknown resource type {s:?}; podd serves {}",
            names.join(", ")
        )
    })
}

/// `--cpu 250m` / `--memory 128Mi` as a Quantity, checked here so that a typo is named.
fn quantity(flag: &str, value: &str, check: fn(&Quantity) -> bool) -> Result<Quantity> {
    let q = Quantity(value.to_string());
    if !check(&q) {
        bail!("{flag} {value:?} is not a quantity (e.g. 250m, 1, 128Mi, 1Gi)");
    }
    Ok(q)
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
            value: Some(v.into()),
            ..EnvVar::default()
        });
    }
    let mut resources = BTreeMap::new();
    if let Some(c) = &a.cpu {
        let q = quantity("--cpu", c, |q| podd_api::Cpu::try_from(q).is_ok())?;
        resources.insert("cpu".to_string(), q);
    }
    if let Some(m) = &a.memory {
        let q = quantity("--memory", m, |q| podd_api::Memory::try_from(q).is_ok())?;
        resources.insert("memory".to_string(), q);
    }
    let container = Container {
        name: a.name.clone(),
        image: Some(a.image.clone()),
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        env: (!env.is_empty()).then_some(env),
        ports: a.port.map(|p| {
            vec![ContainerPort {
                container_port: i32::from(p),
                ..ContainerPort::default()
            }]
        }),
        resources: (!resources.is_empty()).then(|| ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some(a.name.clone()),
            namespace: Some(ns.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(a.replicas).context("--replicas is too large")?),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
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
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .ok_or_else(|| {
            anyhow!("deployment {name:?} selects its pods by expressions only; write the Service's selector in a manifest")
        })?;
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: d.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                port: i32::from(port),
                target_port: target.map(|t| IntOrString::Int(i32::from(t))),
                protocol: Some(
                    match proto {
                        Proto::Tcp => "TCP",
                        Proto::Udp => "UDP",
                    }
                    .into(),
                ),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let created = client.api::<Service>(Some(ns)).create(&svc).await?;
    let ip = created
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_else(|| "<none>".into());
    println!("service/{name} exposed at {ip}:{port} ({name}.{ns}.svc.cluster.local)");
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
    let int = |v: u32| i32::try_from(v).context("value too large");
    let behavior = t
        .scale_down_window
        .map(|w| -> Result<_> {
            Ok(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(int(w)?),
                    ..HPAScalingRules::default()
                }),
                ..HorizontalPodAutoscalerBehavior::default()
            })
        })
        .transpose()?;
    let hpa = HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.into(),
            },
            min_replicas: Some(int(min)?),
            max_replicas: int(max)?,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(int(t.cpu_percent)?),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior,
        }),
        ..HorizontalPodAutoscaler::default()
    };
    client
        .api::<HorizontalPodAutoscaler>(Some(ns))
        .create(&hpa)
        .await?;
    println!("horizontalpodautoscaler.autoscaling/{name} autoscaled");
    Ok(())
}

async fn delete(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    cascade: Cascade,
    grace_period: Option<i64>,
) -> Result<()> {
    let kind = kind_of(kind)?;
    let ns_opt = kind.namespaced().then_some(ns);
    let path = podd_client::resource_path(kind, ns_opt, Some(name));
    let dp = DeleteParams {
        propagation: Some(match cascade {
            Cascade::Background => Propagation::Background,
            Cascade::Foreground => Propagation::Foreground,
            Cascade::Orphan => Propagation::Orphan,
        }),
        grace_period_seconds: grace_period,
        ..DeleteParams::default()
    };
    let body = serde_json::to_vec(&dp.options())?;
    let r = client
        .raw(hyper::Method::DELETE, &path, Some(body), "application/json")
        .await?;
    if r.status.as_u16() == 404 {
        bail!(
            "{} {name:?} not found in namespace {ns:?}; list them with `podctl get {}`",
            kind.name().to_lowercase(),
            kind.plural()
        );
    }
    if !r.status.is_success() {
        let e = podd_client::Error::Api(Box::new(serde_json::from_slice(&r.body).unwrap_or_else(
            |_| {
                podd_api::status_failure(
                    r.status.as_u16(),
                    r.status.canonical_reason().unwrap_or("Unknown"),
                    String::from_utf8_lossy(&r.body),
                )
            },
        )));
        bail!("deleting {} {name}: {e}", kind.name());
    }
    println!("{}/{name} deleted", kind.name().to_lowercase());
    Ok(())
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
        q.push(format!("container={}", urlencode(c)));
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
        std::process::exit(i32::try_from(code).unwrap_or(1));
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

/// A metrics.k8s.io list (PodMetricsList, NodeMetricsList).
#[derive(serde::Deserialize)]
struct MetricsList<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

const METRICS: &str = "/apis/metrics.k8s.io/v1beta1";

fn usage_of(u: &podd_api::metrics::Usage) -> (podd_api::Cpu, podd_api::Memory) {
    let cpu = u.get("cpu").and_then(|q| podd_api::Cpu::try_from(q).ok());
    let mem = u
        .get("memory")
        .and_then(|q| podd_api::Memory::try_from(q).ok());
    (cpu.unwrap_or_default(), mem.unwrap_or_default())
}

/// `kubectl top`: usage from metrics.k8s.io/v1beta1, the same API kubectl reads.
async fn top(client: &Client, ns: &str, what: TopWhat) -> Result<()> {
    let hint = |e: podd_client::Error| {
        if e.is_not_found() {
            anyhow!(
                "metrics not available yet: the server has no usage reports from the nodes ({e})"
            )
        } else {
            anyhow!(e)
        }
    };
    let mut t;
    match what {
        TopWhat::Pods => {
            t = crate::table::Table::new(vec!["NAME", "CPU(cores)", "MEMORY(bytes)"]);
            let path = format!("{METRICS}/namespaces/{ns}/pods");
            let list: MetricsList<podd_api::metrics::PodMetrics> = client
                .request(hyper::Method::GET, &path, None, "application/json")
                .await
                .map_err(hint)?;
            for p in list.items {
                t.push(vec![
                    p.metadata.name.clone().unwrap_or_default(),
                    format!("{}m", p.cpu().millis()),
                    format!("{}Mi", p.memory().bytes() >> 20),
                ]);
            }
        }
        TopWhat::Nodes => {
            t = crate::table::Table::new(vec![
                "NAME",
                "CPU(cores)",
                "CPU(%)",
                "MEMORY(bytes)",
                "MEMORY(%)",
            ]);
            let path = format!("{METRICS}/nodes");
            let list: MetricsList<podd_api::metrics::NodeMetrics> = client
                .request(hyper::Method::GET, &path, None, "application/json")
                .await
                .map_err(hint)?;
            let nodes = client.api::<Node>(None).list(&Default::default()).await?;
            for m in list.items {
                let name = m.metadata.name.clone().unwrap_or_default();
                let (cpu, mem) = usage_of(&m.usage);
                let allocatable = nodes
                    .items
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
                    .and_then(|n| n.status.as_ref())
                    .and_then(|s| s.allocatable.clone())
                    .unwrap_or_default();
                let (acpu, amem) = usage_of(&allocatable);
                let pct = |used: u64, total: u64| (used * 100).checked_div(total).unwrap_or(0);
                t.push(vec![
                    name,
                    format!("{}m", cpu.millis()),
                    format!("{}%", pct(cpu.millis(), acpu.millis())),
                    format!("{}Mi", mem.bytes() >> 20),
                    format!("{}%", pct(mem.bytes(), amem.bytes())),
                ]);
            }
        }
    }
    print!("{}", t.render());
    Ok(())
}

/// kubectl's rollout status messages, from the Deployment's status.
fn rollout_message(d: &Deployment) -> Option<String> {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let updated = s.updated_replicas.unwrap_or(0);
    let replicas = s.replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if s.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        Some("Waiting for deployment spec update to be observed...".to_string())
    } else if updated < want {
        Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
        ))
    } else if replicas > updated {
        Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ))
    } else if available < updated {
        Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ))
    } else {
        None
    }
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
        let Some(msg) = rollout_message(&d) else {
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
    fn rollout_messages_follow_the_status() {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3,
                       "availableReplicas": 3}
        }))
        .unwrap();
        assert!(
            rollout_message(&d)
                .unwrap()
                .contains("1 old replicas are pending")
        );
        d.status.as_mut().unwrap().replicas = Some(3);
        assert_eq!(rollout_message(&d), None);
        d.metadata.generation = Some(3);
        assert!(rollout_message(&d).unwrap().contains("spec update"));
    }
}
