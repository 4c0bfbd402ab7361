"""The official Python client (pip install kubernetes) against a podd server.

Run by the kubectl compatibility suite with KUBECONFIG set to the server's kubeconfig:
creates, reads, lists, watches, patches and deletes every kind podd serves, through the
client's typed models, so any field podd encodes in a shape Kubernetes does not (a number
for a quantity, a string for an ObjectReference, a null where a string belongs) fails here.
Prints one line per check and exits non-zero on the first failure.
"""
import os
import sys
import time

from kubernetes import client, config, watch

NS = os.environ.get("PODD_TEST_NAMESPACE", "default")


def check(what, cond, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def main():
    config.load_kube_config(os.environ["KUBECONFIG"])
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    auto = client.AutoscalingV2Api()
    disc = client.DiscoveryV1Api()
    coord = client.CoordinationV1Api()
    # Objects go into NS, which must exist first (as in Kubernetes).
    if NS not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

    v = client.VersionApi().get_code()
    check("version", v.major == "1" and v.git_version.startswith("v1."), v)

    nodes = core.list_node().items
    check("nodes decode", len(nodes) >= 1, nodes)
    for n in nodes:
        pods = n.status.allocatable.get("pods")
        check(f"node {n.metadata.name} allocatable.pods is a quantity string",
              isinstance(pods, str), repr(pods))
        ready = [c for c in n.status.conditions or [] if c.type == "Ready"]
        check(f"node {n.metadata.name} has a Ready condition", len(ready) == 1, n.status.conditions)

    labels = {"app": "py"}
    container = client.V1Container(
        name="web", image="busybox-httpd",
        command=["httpd", "-f", "-p", "8080"],
        ports=[client.V1ContainerPort(name="http", container_port=8080)],
        env=[client.V1EnvVar(name="A", value="1")],
        readiness_probe=client.V1Probe(
            tcp_socket=client.V1TCPSocketAction(port="http"), period_seconds=1),
        resources=client.V1ResourceRequirements(requests={"cpu": "10m", "memory": "8Mi"}),
    )
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container])),
        ),
    )
    created = apps.create_namespaced_deployment(NS, dep)
    check("deployment created", created.metadata.uid is not None, created.metadata)
    got = apps.read_namespaced_deployment("py-web", NS)
    c = got.spec.template.spec.containers[0]
    check("deployment round trip keeps the container",
          c.command == ["httpd", "-f", "-p", "8080"] and c.ports[0].name == "http"
          and c.env[0].value == "1" and c.readiness_probe.tcp_socket.port == "http"
          and c.resources.requests["cpu"] == "10m", c)
    check("imagePullPolicy defaulted", c.image_pull_policy == "Always", c.image_pull_policy)

    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1ServiceSpec(
            selector=labels,
            ports=[client.V1ServicePort(name="http", port=80, target_port="http")]),
    )
    s = core.create_namespaced_service(NS, svc)
    check("service gets a cluster IP", s.spec.cluster_ip not in (None, "", "None"), s.spec)
    check("service type defaults to ClusterIP", s.spec.type == "ClusterIP", s.spec.type)

    hpa = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="py-web"),
            min_replicas=1, max_replicas=3,
            metrics=[client.V2MetricSpec(
                type="Resource",
                resource=client.V2ResourceMetricSource(
                    name="cpu",
                    target=client.V2MetricTarget(type="Utilization", average_utilization=50)))]),
    )
    h = auto.create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    check("hpa v2 metrics kept",
          h.spec.metrics[0].resource.target.average_utilization == 50, h.spec)

    # Watch the deployment's pods until both are ready (or time out).
    w = watch.Watch()
    ready = set()
    deadline = time.time() + 120
    for ev in w.stream(core.list_namespaced_pod, NS, label_selector="app in (py)",
                       timeout_seconds=120):
        p = ev["object"]
        check_status = p.status
        if check_status.container_statuses:
            for cs in check_status.container_statuses:
                if cs.state.running is not None and cs.image_id is None:
                    check("containerStatuses[].imageID is set", False, cs)
        if any(cd.type == "Ready" and cd.status == "True" for cd in check_status.conditions or []):
            ready.add(p.metadata.name)
        if len(ready) >= 2 or time.time() > deadline:
            w.stop()
    check("watch saw 2 ready pods", len(ready) >= 2, ready)

    rs = apps.list_namespaced_replica_set(NS, label_selector="app=py").items
    check("deployment owns a replicaset", len(rs) >= 1
          and rs[0].metadata.owner_references[0].kind == "Deployment", rs)

    deadline = time.time() + 30
    while True:
        ep = core.read_namespaced_endpoints("py-web", NS)
        addrs = [a for s in ep.subsets or [] for a in s.addresses or []]
        if len(addrs) >= 2 or time.time() > deadline:
            break
        time.sleep(0.5)
    check("endpoints list the ready pods", len(addrs) >= 2, ep)
    check("endpoints targetRef is an ObjectReference",
          addrs[0].target_ref.kind == "Pod" and addrs[0].target_ref.name, addrs[0].target_ref)
    check("endpoints port resolved from the name",
          ep.subsets[0].ports[0].port == 8080, ep.subsets[0].ports)

    slices = disc.list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=py-web").items
    check("an endpointslice for the service", len(slices) == 1
          and len(slices[0].endpoints or []) >= 2, slices)

    leases = coord.list_namespaced_lease("kube-node-lease").items
    check("node leases", len(leases) >= 1 and leases[0].spec.renew_time is not None, leases)

    events = core.list_namespaced_event(NS).items
    check("events decode", isinstance(events, list), events)

    patched = apps.patch_namespaced_deployment(
        "py-web", NS, {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "busybox-httpd:latest"}]}}}})
    pc = patched.spec.template.spec.containers[0]
    check("strategic patch changes the image only",
          pc.image == "busybox-httpd:latest" and pc.command == ["httpd", "-f", "-p", "8080"]
          and pc.ports[0].container_port == 8080, pc)

    list_and_watch_every_kind(core, apps, auto, disc, coord)

    auto.delete_namespaced_horizontal_pod_autoscaler("py-web", NS)
    core.delete_namespaced_service("py-web", NS)
    apps.delete_namespaced_deployment("py-web", NS)
    print("OK", flush=True)


# Groups the server serves that are not kinds of podd's table (kubectl top's metrics).
NOT_KINDS = {"metrics.k8s.io"}


def served_kinds(core, apps, auto, disc, coord):
    """(group, kind) of every top-level resource discovery lists, metrics aside. A group
    this script has no client class for fails: a new group needs a line here."""
    resources = {
        "": core.get_api_resources,
        "apps": apps.get_api_resources,
        "autoscaling": auto.get_api_resources,
        "discovery.k8s.io": disc.get_api_resources,
        "coordination.k8s.io": coord.get_api_resources,
        "batch": client.BatchV1Api(core.api_client).get_api_resources,
        "authentication.k8s.io": client.AuthenticationV1Api(core.api_client).get_api_resources,
    }
    groups = [g.name for g in client.ApisApi(core.api_client).get_api_versions().groups
              if g.name not in NOT_KINDS]
    unknown = [g for g in groups if g not in resources]
    check("every served group is known to this script", not unknown, unknown)
    kinds = set()
    for group in [""] + groups:
        for r in resources[group]().resources:
            # Create-only resources (SelfSubjectReview) have nothing to list or watch.
            if "/" not in r.name and "list" in (r.verbs or []):
                kinds.add((group, r.kind))
    return kinds


def list_and_watch_every_kind(core, apps, auto, disc, coord):
    """Lists (all namespaces) and watches (a short watch: the ADDED events of what exists)
    every kind the server serves, decoding each object into the client's generated model."""
    every = {
        ("", "Pod"): (core.list_pod_for_all_namespaces, client.V1Pod),
        ("", "Service"): (core.list_service_for_all_namespaces, client.V1Service),
        ("", "Endpoints"): (core.list_endpoints_for_all_namespaces, client.V1Endpoints),
        ("", "Node"): (core.list_node, client.V1Node),
        ("", "Namespace"): (core.list_namespace, client.V1Namespace),
        ("", "Event"): (core.list_event_for_all_namespaces, client.CoreV1Event),
        ("", "ConfigMap"): (core.list_config_map_for_all_namespaces, client.V1ConfigMap),
        ("", "Secret"): (core.list_secret_for_all_namespaces, client.V1Secret),
        ("apps", "Deployment"): (apps.list_deployment_for_all_namespaces, client.V1Deployment),
        ("apps", "ReplicaSet"): (apps.list_replica_set_for_all_namespaces, client.V1ReplicaSet),
        ("apps", "DaemonSet"): (apps.list_daemon_set_for_all_namespaces, client.V1DaemonSet),
        ("autoscaling", "HorizontalPodAutoscaler"): (
            auto.list_horizontal_pod_autoscaler_for_all_namespaces,
            client.V2HorizontalPodAutoscaler),
        ("discovery.k8s.io", "EndpointSlice"): (
            disc.list_endpoint_slice_for_all_namespaces, client.V1EndpointSlice),
        ("coordination.k8s.io", "Lease"): (
            coord.list_lease_for_all_namespaces, client.V1Lease),
        ("batch", "Job"): (
            client.BatchV1Api(core.api_client).list_job_for_all_namespaces, client.V1Job),
        ("batch", "CronJob"): (
            client.BatchV1Api(core.api_client).list_cron_job_for_all_namespaces,
            client.V1CronJob),
    }
    served = served_kinds(core, apps, auto, disc, coord)
    check("this script covers every kind discovery lists",
          served <= set(every), sorted(served - set(every)))
    for (group, kind), (list_fn, model) in sorted(every.items()):
        what = f"{group or 'core'}/{kind}"
        listed = list_fn()
        check(f"{what} list decodes ({len(listed.items)} items)",
              all(isinstance(o, model) for o in listed.items)
              and listed.metadata.resource_version, listed.metadata)
        for o in listed.items:
            # Every field through the model and back: a shape the model cannot take fails.
            client.ApiClient().sanitize_for_serialization(o)
        seen = []
        w = watch.Watch()
        for ev in w.stream(list_fn, timeout_seconds=2, _request_timeout=10):
            check(f"{what} watch event decodes",
                  ev["type"] in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")
                  and isinstance(ev["object"], model), ev)
            seen.append(ev["object"].metadata.name)
            if len(seen) >= len(listed.items):
                w.stop()
        names = {o.metadata.name for o in listed.items}
        check(f"{what} watch starts with what the list holds",
              names <= set(seen) or len(seen) >= len(names), (names, seen))
        # A change made after the list arrives, decoded, on a watch from the list's
        # resourceVersion (the patch is made first; the watch replays what followed the list).
        if kind in ("Deployment", "Service", "Node") and listed.items:
            o = listed.items[0]
            patch_one(core, apps, kind, o, {"metadata": {"labels": {"py-watched": "yes"}}})
            got = None
            w = watch.Watch()
            for ev in w.stream(list_fn, resource_version=listed.metadata.resource_version,
                               timeout_seconds=10, _request_timeout=20):
                obj = ev["object"]
                if (obj.metadata.name == o.metadata.name
                        and (obj.metadata.labels or {}).get("py-watched") == "yes"):
                    got = ev
                    w.stop()
            check(f"{what} watch from the list's resourceVersion sees the MODIFIED",
                  got is not None and got["type"] == "MODIFIED"
                  and isinstance(got["object"], model), got)


def patch_one(core, apps, kind, o, body):
    ns = o.metadata.namespace
    if kind == "Deployment":
        apps.patch_namespaced_deployment(o.metadata.name, ns, body)
    elif kind == "Service":
        core.patch_namespaced_service(o.metadata.name, ns, body)
    else:
        core.patch_node(o.metadata.name, body)


if __name__ == "__main__":
    main()
