//! Kubernetes' defaulting (what `SetDefaults_*` and the types' `+default` markers fill in on
//! create and update), applied by the registry before validation, so stored objects read as
//! kube-apiserver would store them. Each function names the Kubernetes function it follows
//! (pkg/apis/core/v1, apps/v1, autoscaling/v2, discovery/v1 `defaults.go`).

use crate::{
    Container, Deployment, DeploymentStrategy, EndpointSlice, Endpoints, HorizontalPodAutoscaler,
    IntOrString, Job, MetricSpec, MetricTarget, Node, Pod, PodSpec, Probe, ReplicaSet,
    ResourceMetricSource, RollingUpdateDeployment, Service,
};
use k8s_openapi::api::autoscaling::v2::{HPAScalingPolicy, HPAScalingRules};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, HTTPGetAction, PodSecurityContext, SessionAffinityConfig, Volume,
};
use std::any::Any;

/// The imagePullPolicy Kubernetes gives a container that sets none: `Always` for an image
/// tagged `:latest` or with no tag, otherwise `IfNotPresent`. A digest counts as a tag.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// `DefaultTerminationGracePeriodSeconds`.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// `DefaultCPUUtilization` of an HPA without metrics.
pub const HPA_CPU_UTILIZATION: i32 = 80;
/// `DefaultClientIPServiceAffinitySeconds` (3 hours).
const CLIENT_IP_AFFINITY_SECONDS: i32 = 10800;
/// The mode of secret, configMap, downwardAPI and projected volumes' files (0644).
const VOLUME_DEFAULT_MODE: i32 = 0o644;

fn set<T>(field: &mut Option<T>, v: impl FnOnce() -> T) {
    if field.is_none() {
        *field = Some(v());
    }
}

fn set_str(field: &mut Option<String>, v: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(v.to_string());
    }
}

/// Fills in an object's defaults, by kind (`T::API_KIND`).
pub fn apply<T: crate::Object>(obj: &mut T) {
    let any: &mut dyn Any = obj;
    if let Some(p) = any.downcast_mut::<Pod>() {
        pod(p);
    } else if let Some(d) = any.downcast_mut::<Deployment>() {
        deployment(d);
    } else if let Some(rs) = any.downcast_mut::<ReplicaSet>() {
        replica_set(rs);
    } else if let Some(s) = any.downcast_mut::<Service>() {
        service(s);
    } else if let Some(h) = any.downcast_mut::<HorizontalPodAutoscaler>() {
        hpa(h);
    } else if let Some(e) = any.downcast_mut::<Endpoints>() {
        endpoints(e);
    } else if let Some(s) = any.downcast_mut::<EndpointSlice>() {
        endpoint_slice(s);
    } else if let Some(n) = any.downcast_mut::<Node>() {
        node(n);
    } else if let Some(j) = any.downcast_mut::<Job>() {
        job(j);
    } else if let Some(c) = any.downcast_mut::<crate::CronJob>() {
        cron_job(c);
    } else if let Some(ds) = any.downcast_mut::<crate::DaemonSet>() {
        daemon_set(ds);
    } else if let Some(n) = any.downcast_mut::<crate::Namespace>() {
        namespace(n);
    } else if let Some(s) = any.downcast_mut::<crate::Secret>() {
        secret(s);
    }
    // Event, Lease and ConfigMap have no defaults.
}

/// `SetDefaults_Pod` (pods only, not templates) on top of the pod spec's defaults.
fn pod(p: &mut Pod) {
    let Some(spec) = p.spec.as_mut() else { return };
    pod_spec(spec);
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        // Requests default to limits when only limits are set.
        if let Some(r) = c.resources.as_mut()
            && let Some(limits) = &r.limits
        {
            let requests = r.requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if spec.host_network == Some(true) {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.is_none_or(|h| h == 0) {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    set(&mut spec.enable_service_links, || true);
}

/// `SetDefaults_PodSpec`, with the defaults of what it holds (containers, probes, volumes):
/// for pods and pod templates alike.
pub fn pod_spec(spec: &mut PodSpec) {
    set_str(&mut spec.dns_policy, "ClusterFirst");
    set_str(&mut spec.restart_policy, "Always");
    set(&mut spec.security_context, PodSecurityContext::default);
    set(&mut spec.termination_grace_period_seconds, || {
        TERMINATION_GRACE_PERIOD_SECONDS
    });
    set_str(&mut spec.scheduler_name, "default-scheduler");
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container(c);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
}

/// `SetDefaults_Container`, plus its ports', probes' and env's defaults.
fn container(c: &mut Container) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let policy = image_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.to_string());
    }
    set_str(&mut c.termination_message_path, "/dev/termination-log");
    set_str(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        set_str(&mut p.protocol, "TCP");
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe(p);
    }
    if let Some(l) = c.lifecycle.as_mut() {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = h.http_get.as_mut() {
                http_get(g);
            }
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_str(&mut f.api_version, "v1");
        }
    }
}

/// `SetDefaults_Probe`: a zero or unset timing takes Kubernetes' default.
fn probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.is_none_or(|v| v == 0) {
            *field = Some(default);
        }
    }
    if let Some(g) = p.http_get.as_mut() {
        http_get(g);
    }
}

/// `SetDefaults_HTTPGetAction`.
fn http_get(g: &mut HTTPGetAction) {
    set_str(&mut g.path, "/");
    set_str(&mut g.scheme, "HTTP");
}

/// `SetDefaults_Volume` and the defaults of its sources.
fn volume(v: &mut Volume) {
    let has_source = serde_json::to_value(&*v)
        .ok()
        .and_then(|j| j.as_object().map(|o| o.keys().any(|k| k != "name")))
        .unwrap_or(true);
    if !has_source {
        v.empty_dir = Some(Default::default());
    }
    if let Some(s) = v.secret.as_mut() {
        set(&mut s.default_mode, || VOLUME_DEFAULT_MODE);
    }
    if let Some(s) = v.config_map.as_mut() {
        set(&mut s.default_mode, || VOLUME_DEFAULT_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        set(&mut s.default_mode, || VOLUME_DEFAULT_MODE);
    }
    if let Some(s) = v.projected.as_mut() {
        set(&mut s.default_mode, || VOLUME_DEFAULT_MODE);
        for src in s.sources.iter_mut().flatten() {
            if let Some(t) = src.service_account_token.as_mut() {
                set(&mut t.expiration_seconds, || 3600);
            }
        }
    }
    if let Some(h) = v.host_path.as_mut() {
        set(&mut h.type_, String::new);
    }
}

/// `SetDefaults_Deployment`, and the template's pod spec.
fn deployment(d: &mut Deployment) {
    let Some(spec) = d.spec.as_mut() else { return };
    set(&mut spec.replicas, || 1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    set_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        set(&mut ru.max_unavailable, || {
            IntOrString::String("25%".into())
        });
        set(&mut ru.max_surge, || IntOrString::String("25%".into()));
    }
    set(&mut spec.revision_history_limit, || 10);
    set(&mut spec.progress_deadline_seconds, || 600);
    if let Some(s) = spec.template.spec.as_mut() {
        pod_spec(s);
    }
}

/// `SetDefaults_ReplicaSet`, and the template's pod spec.
fn replica_set(rs: &mut ReplicaSet) {
    let Some(spec) = rs.spec.as_mut() else { return };
    set(&mut spec.replicas, || 1);
    if let Some(s) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
        pod_spec(s);
    }
}

/// The annotation kube-apiserver keeps a DaemonSet's template generation in (apps/v1 has no
/// `templateGeneration` field): 1 on create, one more on each update that changes the template.
pub const DAEMON_SET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// `SetDefaults_DaemonSet`, the template's pod spec, and the strategy's first template
/// generation (`PrepareForCreate`; an update takes it from the stored object instead:
/// [`daemon_set_template_generation`]).
fn daemon_set(ds: &mut crate::DaemonSet) {
    let generation = ds
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .entry(DAEMON_SET_TEMPLATE_GENERATION.into())
        .or_default();
    if !generation.parse::<i64>().is_ok_and(|g| g >= 1) {
        *generation = "1".into();
    }
    let Some(spec) = ds.spec.as_mut() else { return };
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    set_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        set(&mut ru.max_unavailable, || IntOrString::Int(1));
        set(&mut ru.max_surge, || IntOrString::Int(0));
    }
    set(&mut spec.revision_history_limit, || 10);
    if let Some(s) = spec.template.spec.as_mut() {
        pod_spec(s);
    }
}

/// A DaemonSet update's template generation, as the strategy's `PrepareForUpdate` keeps it:
/// the stored one, plus one when the template changed. `old` and `new` are the stored and the
/// admitted JSON.
pub fn daemon_set_template_generation(old: &serde_json::Value, new: &mut serde_json::Value) {
    let ptr = "/metadata/annotations/deprecated.daemonset.template.generation";
    let stored = old
        .pointer(ptr)
        .and_then(serde_json::Value::as_str)
        .and_then(|g| g.parse::<i64>().ok())
        .unwrap_or(1);
    let next = if old.pointer("/spec/template") == new.pointer("/spec/template") {
        stored
    } else {
        stored + 1
    };
    if let Some(meta) = new
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                DAEMON_SET_TEMPLATE_GENERATION.into(),
                next.to_string().into(),
            );
        }
    }
}

/// The label every namespace carries with its own name, so that selectors can pick
/// namespaces by name (`kubernetes.io/metadata.name`, Kubernetes 1.21 on).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `SetDefaults_Namespace` and `SetDefaults_NamespaceStatus`: the name label, phase Active.
fn namespace(n: &mut crate::Namespace) {
    if let Some(name) = n.metadata.name.clone().filter(|n| !n.is_empty()) {
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NAMESPACE_NAME_LABEL.to_string(), name);
    }
    let status = n.status.get_or_insert_with(Default::default);
    set_str(&mut status.phase, "Active");
}

/// `SetDefaults_Job` (batch/v1), with what the Job strategy's `PrepareForCreate` adds
/// before validation: unless `manualSelector`, the template gets the Job's name and uid as
/// labels and the selector selects the uid (`generateSelector`); a Job without labels then
/// takes the template's, as kube-apiserver stores it.
fn job(j: &mut Job) {
    use crate::validation::{
        CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
    };
    let name = j.metadata.name.clone().unwrap_or_default();
    let uid = j.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = j.spec.as_mut() else { return };
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    set(&mut spec.parallelism, || 1);
    set(&mut spec.backoff_limit, || {
        if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        }
    });
    set_str(&mut spec.completion_mode, "NonIndexed");
    set(&mut spec.suspend, || false);
    set_str(
        &mut spec.pod_replacement_policy,
        if spec.pod_failure_policy.is_some() {
            "Failed"
        } else {
            "TerminatingOrFailed"
        },
    );
    for rule in spec
        .pod_failure_policy
        .iter_mut()
        .flat_map(|p| p.rules.iter_mut())
    {
        for pattern in rule.on_pod_conditions.iter_mut().flatten() {
            if pattern.status.is_empty() {
                pattern.status = "True".into();
            }
        }
    }
    set(&mut spec.manual_selector, || false);
    if spec.manual_selector != Some(true) && !uid.is_empty() {
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
            labels.entry(key.into()).or_insert_with(|| name.clone());
        }
        for key in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
            labels.entry(key.into()).or_insert_with(|| uid.clone());
        }
        spec.selector
            .get_or_insert_with(Default::default)
            .match_labels
            .get_or_insert_with(Default::default)
            .entry(CONTROLLER_UID_LABEL.into())
            .or_insert_with(|| uid.clone());
    }
    if let Some(s) = spec.template.spec.as_mut() {
        pod_spec(s);
    }
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    if j.metadata.labels.as_ref().is_none_or(|l| l.is_empty())
        && template_labels.as_ref().is_some_and(|l| !l.is_empty())
    {
        j.metadata.labels = template_labels;
    }
}

/// `SetDefaults_CronJob` (batch/v1), and what the generated defaulter fills in its Job
/// template: the pod spec's defaults and the failure policy's condition status, not the Job's
/// own (`SetDefaults_Job` runs on the Jobs the controller creates).
fn cron_job(c: &mut crate::CronJob) {
    let Some(spec) = c.spec.as_mut() else { return };
    set_str(&mut spec.concurrency_policy, "Allow");
    set(&mut spec.suspend, || false);
    set(&mut spec.successful_jobs_history_limit, || 3);
    set(&mut spec.failed_jobs_history_limit, || 1);
    let Some(job) = spec.job_template.spec.as_mut() else {
        return;
    };
    for rule in job
        .pod_failure_policy
        .iter_mut()
        .flat_map(|p| p.rules.iter_mut())
    {
        for pattern in rule.on_pod_conditions.iter_mut().flatten() {
            if pattern.status.is_empty() {
                pattern.status = "True".into();
            }
        }
    }
    if let Some(s) = job.template.spec.as_mut() {
        pod_spec(s);
    }
}

/// `SetDefaults_Service`, plus the IP family fields kube-apiserver's service strategy sets
/// on a single-stack IPv4 cluster, which podd is.
fn service(s: &mut Service) {
    let spec = s.spec.get_or_insert_with(Default::default);
    set_str(&mut spec.session_affinity, "None");
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if timeout.is_none() {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(CLIENT_IP_AFFINITY_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    set_str(&mut spec.type_, "ClusterIP");
    let type_ = spec.type_.clone().unwrap_or_default();
    for p in spec.ports.iter_mut().flatten() {
        set_str(&mut p.protocol, "TCP");
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    let external = type_ == "NodePort" || type_ == "LoadBalancer";
    if external {
        set_str(&mut spec.external_traffic_policy, "Cluster");
    }
    if external || type_ == "ClusterIP" {
        set(&mut spec.internal_traffic_policy, || "Cluster".to_string());
    }
    if type_ == "LoadBalancer" {
        set(&mut spec.allocate_load_balancer_node_ports, || true);
    }
    if type_ != "ExternalName" {
        set(&mut spec.ip_families, || vec!["IPv4".to_string()]);
        set(&mut spec.ip_family_policy, || "SingleStack".to_string());
    }
}

/// `SetDefaults_HorizontalPodAutoscaler` (autoscaling/v2).
fn hpa(h: &mut HorizontalPodAutoscaler) {
    let Some(spec) = h.spec.as_mut() else { return };
    set(&mut spec.min_replicas, || 1);
    if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
        spec.metrics = Some(vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(HPA_CPU_UTILIZATION),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]);
    }
    // A behavior given in part is completed with the default rules.
    if let Some(b) = spec.behavior.as_mut() {
        let policy = |type_: &str, value: i32| HPAScalingPolicy {
            type_: type_.into(),
            value,
            period_seconds: 15,
        };
        let up = b.scale_up.get_or_insert_with(Default::default);
        set(&mut up.stabilization_window_seconds, || 0);
        fill_rules(up, vec![policy("Pods", 4), policy("Percent", 100)]);
        let down = b.scale_down.get_or_insert_with(Default::default);
        fill_rules(down, vec![policy("Percent", 100)]);
    }
}

fn fill_rules(r: &mut HPAScalingRules, policies: Vec<HPAScalingPolicy>) {
    set(&mut r.select_policy, || "Max".to_string());
    set(&mut r.policies, || policies);
}

/// `SetDefaults_Endpoints`.
fn endpoints(e: &mut Endpoints) {
    for s in e.subsets.iter_mut().flatten() {
        for p in s.ports.iter_mut().flatten() {
            set_str(&mut p.protocol, "TCP");
        }
    }
}

/// `SetDefaults_EndpointPort` (discovery/v1).
fn endpoint_slice(s: &mut EndpointSlice) {
    for p in s.ports.iter_mut().flatten() {
        set(&mut p.name, String::new);
        set(&mut p.protocol, || "TCP".to_string());
    }
}

/// `SetDefaults_NodeStatus`: allocatable is the capacity unless told otherwise.
fn node(n: &mut Node) {
    if let Some(st) = n.status.as_mut()
        && st.allocatable.is_none()
        && st.capacity.is_some()
    {
        st.allocatable = st.capacity.clone();
    }
}

/// `SetDefaults_Secret` (type Opaque), with what the v1 conversion does first: `stringData`
/// is write-only, merged over `data` and never stored.
fn secret(s: &mut crate::Secret) {
    if let Some(strings) = s.string_data.take().filter(|m| !m.is_empty()) {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
    set_str(&mut s.type_, crate::validation::SECRET_TYPE_OPAQUE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaulted<T: crate::Object>(v: serde_json::Value) -> serde_json::Value {
        let mut obj: T = serde_json::from_value(v).unwrap();
        apply(&mut obj);
        serde_json::to_value(&obj).unwrap()
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(image_pull_policy("busybox"), "Always");
        assert_eq!(image_pull_policy("busybox:latest"), "Always");
        assert_eq!(image_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            image_pull_policy("localhost:5000/busybox:1"),
            "IfNotPresent"
        );
        assert_eq!(image_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn pod_defaults() {
        let p = defaulted::<Pod>(json!({"metadata": {"name": "p"}, "spec": {
            "hostNetwork": true,
            "containers": [{"name": "c", "image": "busybox:1",
                "ports": [{"containerPort": 8080}],
                "resources": {"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "500m"}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"port": 8080}, "periodSeconds": 0},
                "livenessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 5}}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}}));
        let s = &p["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(s["volumes"][1]["secret"]["defaultMode"], 420);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "64Mi"}),
            "only the missing request is taken from the limit"
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["livenessProbe"]["failureThreshold"], 5);
        // Defaulting is idempotent.
        assert_eq!(defaulted::<Pod>(p.clone()), p);
    }

    #[test]
    fn deployment_and_replica_set_defaults() {
        let d = defaulted::<Deployment>(json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}]}}}}));
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        let t = &s["template"]["spec"];
        assert_eq!(t["restartPolicy"], "Always");
        assert_eq!(t["containers"][0]["imagePullPolicy"], "Always");
        // Templates get the pod spec's defaults, not the pod's own (as Kubernetes).
        assert!(t.get("enableServiceLinks").is_none());
        assert!(t["containers"][0]["resources"].get("requests").is_none());
        let recreate = defaulted::<Deployment>(json!({"metadata": {"name": "d"}, "spec": {
            "selector": {}, "template": {}, "strategy": {"type": "Recreate"}, "replicas": 0}}));
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(recreate["spec"]["replicas"], 0);
        let rs =
            defaulted::<ReplicaSet>(json!({"metadata": {"name": "r"}, "spec": {"selector": {}}}));
        assert_eq!(rs["spec"]["replicas"], 1);
    }

    #[test]
    fn service_defaults() {
        let s = defaulted::<Service>(json!({"metadata": {"name": "s"}, "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "TCP"}]}}));
        assert_eq!(
            s["spec"],
            json!({"selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                          {"port": 443, "protocol": "TCP", "targetPort": "https"}]})
        );
        let np = defaulted::<Service>(
            json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort",
            "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
        );
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(
            np["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        let en = defaulted::<Service>(
            json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName",
            "externalName": "example.com"}}),
        );
        assert!(en["spec"].get("ipFamilies").is_none());
        assert!(en["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn hpa_endpoints_slice_node_defaults() {
        let h = defaulted::<HorizontalPodAutoscaler>(json!({"metadata": {"name": "h"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}}));
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(
            h["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        let h = defaulted::<HorizontalPodAutoscaler>(json!({"metadata": {"name": "h"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3, "minReplicas": 2,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}));
        assert_eq!(h["spec"]["minReplicas"], 2);
        assert_eq!(
            h["spec"]["behavior"],
            json!({"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
                   "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]}})
        );
        let e = defaulted::<Endpoints>(json!({"metadata": {"name": "e"},
            "subsets": [{"ports": [{"port": 80}]}]}));
        assert_eq!(e["subsets"][0]["ports"][0]["protocol"], "TCP");
        let s =
            defaulted::<EndpointSlice>(json!({"metadata": {"name": "e"}, "addressType": "IPv4",
            "endpoints": [], "ports": [{"port": 80}]}));
        assert_eq!(
            s["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        let n = defaulted::<Node>(json!({"metadata": {"name": "n"},
            "status": {"capacity": {"cpu": "2", "pods": "110"}}}));
        assert_eq!(
            n["status"]["allocatable"],
            json!({"cpu": "2", "pods": "110"})
        );
    }
}
