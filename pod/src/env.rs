//! A container's environment as the kubelet makes it: `envFrom` sources first (with their
//! `prefix`), then `env` in order, each plain value expanded against what is defined so far
//! (`$(VAR)`), `valueFrom` resolved from ConfigMaps, Secrets and the downward API; then
//! `$(VAR)` in command and args against the result.

use crate::downward::{self, FieldUse, NodeFacts};
use crate::sources::{ConfigSources, SourceKind};
use podd_api::{Container, Pod};

/// A container's resolved environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedEnv {
    /// Name and value, in definition order, names unique (a later definition replaces the
    /// value of an earlier one in place).
    pub vars: Vec<(String, String)>,
    /// Keys of envFrom sources that are not valid variable names, skipped as the kubelet
    /// skips them (it records an event naming them).
    pub skipped: Vec<String>,
}

impl ResolvedEnv {
    fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name.to_string(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `$(VAR)` in `s`, from this environment.
    pub fn expand(&self, s: &str) -> String {
        expand(s, |name| self.get(name).map(str::to_string))
    }
}

/// Whether `name` may be a variable name, with the rule the API server validates `env` names
/// by: printable ASCII without `=` (Kubernetes' relaxed environment variable names).
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// Resolves `c`'s environment. Err is the reason the container cannot start yet (a missing
/// ConfigMap, Secret or key that is not optional, an unsupported field), naming what is
/// missing: the kubelet's CreateContainerConfigError.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    sources: &ConfigSources,
    facts: &NodeFacts,
) -> Result<ResolvedEnv, String> {
    let mut env = ResolvedEnv::default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let refs = [
            from.config_map_ref
                .as_ref()
                .map(|r| (SourceKind::ConfigMap, &r.name, r.optional)),
            from.secret_ref
                .as_ref()
                .map(|r| (SourceKind::Secret, &r.name, r.optional)),
        ];
        for (kind, name, optional) in refs.into_iter().flatten() {
            let Some(data) = sources.get(kind, name) else {
                if optional == Some(true) {
                    continue;
                }
                return Err(format!("envFrom: {}", ConfigSources::not_found(kind, name)));
            };
            for (key, value) in data {
                let var = format!("{prefix}{key}");
                if !valid_env_name(&var) {
                    env.skipped.push(var);
                    continue;
                }
                env.set(&var, String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else {
            let value = env.expand(e.value.as_deref().unwrap_or_default());
            env.set(&e.name, value);
            continue;
        };
        let context =
            |what: &str, reason: String| format!("env {} (valueFrom.{what}): {reason}", e.name);
        let key_refs = [
            from.config_map_key_ref.as_ref().map(|r| {
                (
                    "configMapKeyRef",
                    SourceKind::ConfigMap,
                    &r.name,
                    &r.key,
                    r.optional,
                )
            }),
            from.secret_key_ref.as_ref().map(|r| {
                (
                    "secretKeyRef",
                    SourceKind::Secret,
                    &r.name,
                    &r.key,
                    r.optional,
                )
            }),
        ];
        if let Some((what, kind, name, key, optional)) = key_refs.into_iter().flatten().next() {
            let optional = optional == Some(true);
            match sources.get(kind, name).map(|d| d.get(key)) {
                Some(Some(v)) => env.set(&e.name, String::from_utf8_lossy(v).into_owned()),
                _ if optional => {}
                None => return Err(context(what, ConfigSources::not_found(kind, name))),
                Some(None) => return Err(context(what, sources.key_not_found(kind, name, key))),
            }
        } else if let Some(f) = &from.field_ref {
            let v = downward::field_value(pod, &f.field_path, facts, FieldUse::Env)
                .map_err(|r| context("fieldRef", r))?;
            env.set(&e.name, v);
        } else if let Some(r) = &from.resource_field_ref {
            let container = r.container_name.as_deref().filter(|n| !n.is_empty());
            let v = downward::resource_value(
                pod,
                container.unwrap_or(&c.name),
                &r.resource,
                r.divisor.as_ref(),
                facts,
            )
            .map_err(|r| context("resourceFieldRef", r))?;
            env.set(&e.name, v);
        } else {
            return Err(format!(
                "env {} (valueFrom): no source this node supports (configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef)",
                e.name
            ));
        }
    }
    Ok(env)
}

/// Expands `$(NAME)` references as Kubernetes does: a defined name becomes its value, an
/// undefined one stays as written, `$$` is an escaped `$`, and any other `$` is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'$' => {
                out.push(b'$');
                i += 2;
            }
            b'(' => match bytes[i + 2..].iter().position(|&b| b == b')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(v) => out.extend_from_slice(v.as_bytes()),
                        None => out.extend_from_slice(format!("$({name})").as_bytes()),
                    }
                    i += 3 + len;
                }
                // An unclosed reference is kept as written.
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            _ => {
                out.push(b'$');
                i += 1;
            }
        }
    }
    // Only ASCII bytes were consumed or inserted between whole characters.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": containers}
        }))
        .unwrap()
    }

    fn sources() -> ConfigSources {
        let mut s = ConfigSources::new("ns");
        s.config_maps.insert(
            "cfg".into(),
            [
                ("MODE".to_string(), b"fast".to_vec()),
                ("bad key=".to_string(), b"x".to_vec()),
                ("1ST".to_string(), b"one".to_vec()),
            ]
            .into(),
        );
        s.secrets
            .insert("db".into(), [("pw".to_string(), b"s3cret".to_vec())].into());
        s
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            pod_ip: Some("10.42.0.9".parse().unwrap()),
            allocatable_cpu_millis: 2000,
            ..NodeFacts::default()
        }
    }

    fn env_of(containers: serde_json::Value) -> Result<ResolvedEnv, String> {
        let p = pod(containers);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        container_env(&p, &c, &sources(), &facts())
    }

    #[test]
    fn every_source_in_kubernetes_order() {
        let env = env_of(serde_json::json!([{"name": "c",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "db"}}],
            "env": [
                {"name": "CFG_MODE", "value": "slow"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "URL", "value": "http://$(IP):80/$(POD)/$(LATER)/$$(POD)"},
                {"name": "LATER", "value": "late"},
                {"name": "OPT1", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": true}}},
                {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nokey", "optional": true}}}]}]))
        .unwrap();
        let get = |n| env.get(n);
        assert_eq!(get("CFG_MODE"), Some("slow"), "env wins over envFrom");
        assert_eq!(get("CFG_1ST"), Some("one"), "a prefix makes a key valid");
        assert_eq!(get("pw"), Some("s3cret"));
        assert_eq!(get("PASSWORD"), Some("s3cret"));
        assert_eq!(get("M"), Some("fast"));
        assert_eq!(get("POD"), Some("p"));
        assert_eq!(get("IP"), Some("10.42.0.9"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("CPU"), Some("2"), "unset limit: node allocatable");
        assert_eq!(get("URL"), Some("http://10.42.0.9:80/p/$(LATER)/$(POD)"));
        assert_eq!((get("OPT1"), get("OPT2")), (None, None));
        assert_eq!(env.skipped, ["CFG_bad key="]);
        assert_eq!(env.vars[0].0, "CFG_1ST", "envFrom keys first, sorted");
    }

    #[test]
    fn missing_sources_name_what_is_missing() {
        let err = |env: serde_json::Value| {
            env_of(serde_json::json!([{"name": "c", "env": env}])).unwrap_err()
        };
        let e = err(
            serde_json::json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]),
        );
        assert_eq!(
            e,
            "env A (valueFrom.configMapKeyRef): configmap \"gone\" not found"
        );
        let e = err(
            serde_json::json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]),
        );
        assert_eq!(
            e,
            "env A (valueFrom.secretKeyRef): couldn't find key k in Secret ns/db"
        );
        let e = err(
            serde_json::json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]),
        );
        assert!(e.contains("spec.nope"), "{e}");
        let e = env_of(
            serde_json::json!([{"name": "c", "envFrom": [{"secretRef": {"name": "gone"}}]}]),
        )
        .unwrap_err();
        assert_eq!(e, "envFrom: secret \"gone\" not found");
        let ok = env_of(serde_json::json!([{"name": "c", "envFrom": [{"secretRef": {"name": "gone", "optional": true}}]}])).unwrap();
        assert!(ok.vars.is_empty());
    }

    #[test]
    fn expansion_as_kubernetes() {
        let vars = |n: &str| match n {
            "A" => Some("a".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for (input, want) in [
            ("$(A)", "a"),
            ("x$(A)y$(A)", "xaya"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("$", "$"),
            ("a$", "a$"),
            ("$()", "$()"),
            ("$(EMPTY)!", "!"),
            ("é$(A)ü", "éaü"),
            ("$(A)$(", "a$("),
        ] {
            assert_eq!(expand(input, vars), want, "{input}");
        }
    }

    proptest! {
        /// Text without `$` is never changed.
        #[test]
        fn text_without_dollars_is_kept(s in "[^$]{0,60}") {
            prop_assert_eq!(expand(&s, |_| Some("X".into())), s);
        }

        /// With nothing defined and no `$$` escape, every reference stays as written.
        #[test]
        fn undefined_references_stay(s in "[a-z$()]{0,40}") {
            prop_assume!(!s.contains("$$"));
            prop_assert_eq!(expand(&s, |_| None), s);
        }

        /// Defined names are replaced wherever referenced, whatever the value holds.
        #[test]
        fn defined_names_are_replaced(name in "[A-Z_]{1,10}", value in "\\PC{0,20}", pre in "[a-z ]{0,10}") {
            let input = format!("{pre}$({name}){pre}");
            let got = expand(&input, |n| (n == name).then(|| value.clone()));
            prop_assert_eq!(got, format!("{pre}{value}{pre}"));
        }

        /// A prefix is put in front of every valid key of an envFrom source.
        #[test]
        fn env_from_prefixes_every_key(prefix in "[A-Z_]{0,6}", keys in proptest::collection::btree_set("[A-Za-z_][A-Za-z0-9_.-]{0,8}", 0..6)) {
            let mut s = ConfigSources::new("ns");
            s.config_maps.insert("m".into(), keys.iter().map(|k| (k.clone(), k.as_bytes().to_vec())).collect());
            let p = pod(serde_json::json!([{"name": "c", "envFrom": [{"configMapRef": {"name": "m"}, "prefix": prefix}]}]));
            let c = p.spec.as_ref().unwrap().containers[0].clone();
            let env = container_env(&p, &c, &s, &facts()).unwrap();
            prop_assert_eq!(env.vars.len(), keys.len());
            for k in &keys {
                let var = format!("{prefix}{k}");
                prop_assert_eq!(env.get(&var), Some(k.as_str()));
            }
        }
    }
}
