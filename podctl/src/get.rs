//! `podctl get` and `podctl describe`: tables with kubectl's columns, `-o json|yaml|name`,
//! watches.

use crate::cli::{GetArgs, Output};
use crate::commands::{kind_of, not_found_hint};
use crate::table::Table;
use crate::views;
use anyhow::Result;
use futures::StreamExt;
use podd_api::jiff::Timestamp;
use podd_api::{
    Deployment, EndpointSlice, Endpoints, Event, HorizontalPodAutoscaler, Job, Kind, Lease, Node,
    Object, Pod, ReplicaSet, Service,
};
use podd_client::{Api, Client, ListParams, WatcherEvent, watcher};
use std::io::Write;

pub async fn get(client: &Client, ns: &str, a: GetArgs) -> Result<()> {
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
        Kind::ReplicaSet => {
            get_kind::<ReplicaSet>(client, ns, &a, |i, w| views::replicasets(i, w, now())).await
        }
        Kind::Service => {
            get_kind::<Service>(client, ns, &a, |i, w| views::services(i, w, now())).await
        }
        Kind::Endpoints => {
            get_kind::<Endpoints>(client, ns, &a, |i, _| views::endpoints(i, now())).await
        }
        Kind::EndpointSlice => {
            get_kind::<EndpointSlice>(client, ns, &a, |i, _| views::endpointslices(i, now())).await
        }
        Kind::Node => get_kind::<Node>(client, ns, &a, |i, w| views::nodes(i, w, now())).await,
        Kind::HorizontalPodAutoscaler => {
            get_kind::<HorizontalPodAutoscaler>(client, ns, &a, |i, _| views::hpas(i, now())).await
        }
        Kind::Event => get_kind::<Event>(client, ns, &a, |i, _| views::events(i, now())).await,
        Kind::Lease => get_kind::<Lease>(client, ns, &a, |i, _| views::leases(i, now())).await,
        Kind::Job => get_kind::<Job>(client, ns, &a, |i, _| views::jobs(i, now())).await,
        Kind::CronJob => {
            get_kind::<podd_api::CronJob>(client, ns, &a, |i, _| views::cronjobs(i, now())).await
        }
        Kind::Namespace => {
            get_kind::<podd_api::Namespace>(client, ns, &a, |i, _| views::namespaces(i, now()))
                .await
        }
        Kind::ConfigMap => {
            get_kind::<podd_api::ConfigMap>(client, ns, &a, |i, _| views::configmaps(i, now()))
                .await
        }
        Kind::Secret => {
            get_kind::<podd_api::Secret>(client, ns, &a, |i, _| views::secrets(i, now())).await
        }
        Kind::DaemonSet => {
            get_kind::<podd_api::DaemonSet>(client, ns, &a, |i, w| views::daemonsets(i, w, now()))
                .await
        }
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

async fn get_kind<T: Object>(
    client: &Client,
    ns: Option<&str>,
    a: &GetArgs,
    table: impl Fn(&[T], bool) -> Table,
) -> Result<()> {
    let api: Api<T> = client.api(ns);
    let wide = a.output == Some(Output::Wide);
    let lp = ListParams {
        label_selector: a.selector.clone(),
        ..ListParams::default()
    };
    let items: Vec<T> = match &a.name {
        Some(name) => vec![api.get(name).await.map_err(|e| {
            not_found_hint(
                e,
                &T::API_KIND.name().to_lowercase(),
                name,
                ns.unwrap_or(""),
            )
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
                    if a.name.is_none() || a.name == o.metadata().name {
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

/// kubectl's `-o json` of several objects: a v1 List.
fn as_value<T: Object>(items: &[T], single: bool) -> Result<serde_json::Value> {
    Ok(if items.len() == 1 && single {
        serde_json::to_value(&items[0])?
    } else {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": items,
        })
    })
}

fn print_items<T: Object>(
    items: &[T],
    output: Option<Output>,
    table: &impl Fn(&[T], bool) -> Table,
    wide: bool,
    header: bool,
    single: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Some(Output::Json) => {
            let v = as_value(items, single)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Some(Output::Yaml) => {
            write!(out, "{}", serde_yaml::to_string(&as_value(items, single)?)?)?;
        }
        Some(Output::Name) => {
            let kind = T::API_KIND;
            let qualified = match kind.group() {
                "" => kind.name().to_lowercase(),
                g => format!("{}.{g}", kind.name().to_lowercase()),
            };
            for o in items {
                writeln!(
                    out,
                    "{qualified}/{}",
                    o.metadata().name.as_deref().unwrap_or("")
                )?;
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

pub async fn describe(client: &Client, ns: &str, kind: &str, name: &str) -> Result<()> {
    let kind = kind_of(kind)?;
    let ns_opt = kind.namespaced().then_some(ns);
    let path = podd_client::resource_path(kind, ns_opt, Some(name));
    let obj: serde_json::Value = client
        .request(hyper::Method::GET, &path, None, "application/json")
        .await
        .map_err(|e| not_found_hint(e, &kind.name().to_lowercase(), name, ns))?;
    print!("{}", serde_yaml::to_string(&obj)?);
    if kind == Kind::Pod
        && let Ok(pod) = serde_json::from_value::<Pod>(obj.clone())
    {
        print!("{}", security_summary(&pod));
    }
    let selector = match kind {
        Kind::Deployment => serde_json::from_value::<Deployment>(obj.clone())
            .ok()
            .and_then(|d| d.spec)
            .map(|s| views::selector_query(&s.selector)),
        Kind::ReplicaSet => serde_json::from_value::<ReplicaSet>(obj.clone())
            .ok()
            .and_then(|d| d.spec)
            .map(|s| views::selector_query(&s.selector)),
        Kind::Service => serde_json::from_value::<Service>(obj.clone())
            .ok()
            .and_then(|s| s.spec?.selector)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        _ => None,
    };
    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
        let pods = client
            .api::<Pod>(Some(ns))
            .list(&ListParams::labels(&selector))
            .await?;
        println!("Pods:");
        print!("{}", views::pods(&pods.items, true, now()).render());
    }
    // Events about this object, as `kubectl describe` ends with them.
    if kind != Kind::Event
        && let Ok(events) = client
            .api::<Event>(ns_opt.or(Some("default")))
            .list(&ListParams::default())
            .await
    {
        let mine: Vec<Event> = events
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.involved_object.kind.as_deref() == Some(kind.name())
            })
            .collect();
        if mine.is_empty() {
            println!("Events: <none>");
        } else {
            println!("Events:");
            print!("{}", views::events(&mine, now()).render());
        }
    }
    Ok(())
}

/// Each container's security context in one line, privileged ones first in the eye:
/// `Privileged: true` is the pod's way to the node's devices and every capability.
fn security_summary(pod: &Pod) -> String {
    let mut out = String::from("Security:\n");
    let spec = pod.spec.clone().unwrap_or_default();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let sc = c.security_context.clone().unwrap_or_default();
        let privileged = sc.privileged.unwrap_or(false);
        let mut parts = vec![format!("Privileged: {privileged}")];
        if let Some(u) = sc.run_as_user {
            parts.push(format!("RunAsUser: {u}"));
        }
        if let Some(g) = sc.run_as_group {
            parts.push(format!("RunAsGroup: {g}"));
        }
        if sc.read_only_root_filesystem == Some(true) {
            parts.push("ReadOnlyRootFilesystem: true".into());
        }
        if let Some(a) = sc.allow_privilege_escalation {
            parts.push(format!("AllowPrivilegeEscalation: {a}"));
        }
        if let Some(caps) = sc.capabilities.as_ref().filter(|_| !privileged) {
            if let Some(add) = caps.add.as_ref().filter(|a| !a.is_empty()) {
                parts.push(format!("Capabilities add: {}", add.join(",")));
            }
            if let Some(drop) = caps.drop.as_ref().filter(|d| !d.is_empty()) {
                parts.push(format!("Capabilities drop: {}", drop.join(",")));
            }
        }
        out.push_str(&format!("  {}: {}\n", c.name, parts.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn lists_print_as_kubectl_lists() {
        let pods = vec![Pod::default(), Pod::default()];
        let v = as_value(&pods, false).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"][0]["kind"], "Pod");
        assert_eq!(v["items"][0]["apiVersion"], "v1");
    }
}
