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

    auto.delete_namespaced_horizontal_pod_autoscaler("py-web", NS)
    core.delete_namespaced_service("py-web", NS)
    apps.delete_namespaced_deployment("py-web", NS)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
