//! ConfigMaps and Secrets (Kubernetes' `ValidateConfigMap`, `ValidateSecret` and their update
//! rules): keys, the 1 MiB bound on the data, the keys each Secret type requires, and what an
//! `immutable` object keeps.

use super::meta::{NameRule, check_object_meta};
use super::{FieldError, ValidationErrors};
use crate::{ConfigMap, Secret};
use std::collections::BTreeMap;

/// The most bytes of values one ConfigMap or Secret may hold (Kubernetes' `MaxSecretSize`).
pub const MAX_CONFIG_DATA_BYTES: usize = 1024 * 1024;

const CONFIG_KEY_MAX: usize = 253;
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, \
     '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for \
     validation is '[-._a-zA-Z0-9]+')";
const IMMUTABLE_MSG: &str = "field is immutable when `immutable` is set";

/// The Secret types whose keys Kubernetes checks, and those keys.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
pub const SECRET_TYPE_SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const SECRET_TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";
pub const SECRET_TYPE_SSH_AUTH: &str = "kubernetes.io/ssh-auth";
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";
/// The annotation a service-account-token Secret names its ServiceAccount with.
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// Every reason `key` cannot be a key of a ConfigMap or Secret (apimachinery's
/// `IsConfigMapKey`): the file name it becomes in a volume must be plain.
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.len() > CONFIG_KEY_MAX {
        out.push(format!("must be no more than {CONFIG_KEY_MAX} characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if key.is_empty() || !key.chars().all(allowed) {
        out.push(CONFIG_KEY_MSG.to_string());
    }
    match key {
        "." => out.push("must not be '.'".into()),
        ".." => out.push("must not be '..'".into()),
        k if k.starts_with("..") => out.push("must not start with '..'".into()),
        _ => {}
    }
    out
}

fn check_keys<'a>(errs: &mut ValidationErrors, bag: &str, keys: impl Iterator<Item = &'a String>) {
    for key in keys {
        for e in config_key_errors(key) {
            errs.push(FieldError::invalid(format!("{bag}[{key}]"), key, e));
        }
    }
}

fn too_large(field: &str) -> FieldError {
    FieldError::too_long(
        field,
        format!("may not be more than {MAX_CONFIG_DATA_BYTES} bytes"),
    )
}

pub(crate) fn validate_config_map(errs: &mut ValidationErrors, c: &ConfigMap) {
    check_object_meta(errs, &c.metadata, true, NameRule::Subdomain);
    let data = c.data.as_ref();
    let binary = c.binary_data.as_ref();
    check_keys(errs, "data", data.into_iter().flat_map(BTreeMap::keys));
    check_keys(
        errs,
        "binaryData",
        binary.into_iter().flat_map(BTreeMap::keys),
    );
    for key in data.into_iter().flat_map(BTreeMap::keys) {
        if binary.is_some_and(|b| b.contains_key(key)) {
            errs.push(FieldError::invalid(
                format!("data[{key}]"),
                key,
                "duplicate of key present in binaryData",
            ));
        }
    }
    let size: usize = data
        .into_iter()
        .flatten()
        .map(|(_, v)| v.len())
        .sum::<usize>()
        + binary
            .into_iter()
            .flatten()
            .map(|(_, v)| v.0.len())
            .sum::<usize>();
    if size > MAX_CONFIG_DATA_BYTES {
        // Kubernetes names the whole object (an empty path); podd names the data.
        errs.push(too_large("data"));
    }
}

pub(crate) fn validate_secret(errs: &mut ValidationErrors, s: &Secret) {
    check_object_meta(errs, &s.metadata, true, NameRule::Subdomain);
    let empty = BTreeMap::new();
    let data = s.data.as_ref().unwrap_or(&empty);
    check_keys(errs, "data", data.keys());
    if data.values().map(|v| v.0.len()).sum::<usize>() > MAX_CONFIG_DATA_BYTES {
        errs.push(too_large("data"));
    }
    let has = |k: &str| data.contains_key(k);
    let required = |errs: &mut ValidationErrors, k: &str| {
        errs.push(FieldError::required(format!("data[{k}]"), ""));
    };
    // A JSON document under `key`, as the registry credentials types require.
    let json_at = |errs: &mut ValidationErrors, key: &str| match data.get(key) {
        None => required(errs, key),
        Some(v) => {
            if let Err(e) =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&v.0)
            {
                errs.push(FieldError::invalid(
                    format!("data[{key}]"),
                    "<secret contents redacted>",
                    e,
                ));
            }
        }
    };
    match s.type_.as_deref().unwrap_or_default() {
        SECRET_TYPE_SERVICE_ACCOUNT_TOKEN => {
            let named = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
                .is_some_and(|n| !n.is_empty());
            if !named {
                errs.push(FieldError::required(
                    format!("metadata.annotations[{SERVICE_ACCOUNT_NAME_ANNOTATION}]"),
                    "",
                ));
            }
        }
        SECRET_TYPE_DOCKERCFG => json_at(errs, ".dockercfg"),
        SECRET_TYPE_DOCKER_CONFIG_JSON => json_at(errs, ".dockerconfigjson"),
        // Either may be empty, but one of them must be there.
        SECRET_TYPE_BASIC_AUTH if !has("username") && !has("password") => {
            required(errs, "username");
            required(errs, "password");
        }
        SECRET_TYPE_SSH_AUTH if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            required(errs, "ssh-privatekey");
        }
        SECRET_TYPE_TLS => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    required(errs, key);
                }
            }
        }
        // Opaque and every other type: any keys.
        _ => {}
    }
}

/// A map, with an empty one the same as none (as Kubernetes' JSON round trip makes it).
fn bag<V>(m: &Option<BTreeMap<String, V>>) -> Option<&BTreeMap<String, V>> {
    m.as_ref().filter(|m| !m.is_empty())
}

/// `immutable` once true stays true.
fn check_immutable_flag(errs: &mut ValidationErrors, old: Option<bool>, new: Option<bool>) {
    if old == Some(true) && new != Some(true) {
        errs.push(FieldError::forbidden("immutable", IMMUTABLE_MSG));
    }
}

pub(crate) fn validate_config_map_update(
    errs: &mut ValidationErrors,
    old: &ConfigMap,
    new: &ConfigMap,
) {
    if old.immutable != Some(true) {
        return;
    }
    check_immutable_flag(errs, old.immutable, new.immutable);
    if bag(&old.data) != bag(&new.data) {
        errs.push(FieldError::forbidden("data", IMMUTABLE_MSG));
    }
    if bag(&old.binary_data) != bag(&new.binary_data) {
        errs.push(FieldError::forbidden("binaryData", IMMUTABLE_MSG));
    }
}

/// `new` is admitted: its stringData is already in its data, so a change through stringData
/// is reported on `data`, as Kubernetes does.
pub(crate) fn validate_secret_update(errs: &mut ValidationErrors, old: &Secret, new: &Secret) {
    if old.type_ != new.type_ {
        errs.push(FieldError::invalid(
            "type",
            new.type_.as_deref().unwrap_or_default(),
            "field is immutable",
        ));
    }
    if old.immutable != Some(true) {
        return;
    }
    check_immutable_flag(errs, old.immutable, new.immutable);
    if bag(&old.data) != bag(&new.data) {
        errs.push(FieldError::forbidden("data", IMMUTABLE_MSG));
    }
}

/// The update rules of ConfigMaps and Secrets, on the stored and the admitted JSON.
pub(crate) fn validate_update(
    errs: &mut ValidationErrors,
    kind: crate::Kind,
    old: &serde_json::Value,
    new: &serde_json::Value,
) {
    fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<T> {
        T::deserialize(v).ok()
    }
    match kind {
        crate::Kind::ConfigMap => {
            if let (Some(o), Some(n)) = (typed(old), typed(new)) {
                validate_config_map_update(errs, &o, &n);
            }
        }
        crate::Kind::Secret => {
            if let (Some(o), Some(n)) = (typed(old), typed(new)) {
                validate_secret_update(errs, &o, &n);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::validate;
    use serde_json::json;

    fn secret(v: serde_json::Value) -> Secret {
        let mut s: Secret = serde_json::from_value(v).unwrap();
        crate::defaults::apply(&mut s);
        s
    }

    /// The fields of the problems found, sorted.
    fn fields(r: Result<(), ValidationErrors>) -> Vec<String> {
        let mut f: Vec<String> = r
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default();
        f.sort();
        f
    }

    #[test]
    fn keys_follow_kubernetes() {
        for ok in ["a", "A_b-c.d", ".hidden", "x..y", &"k".repeat(253)] {
            assert!(config_key_errors(ok).is_empty(), "{ok}");
        }
        for bad in ["", ".", "..", "..x", "a/b", "a b", "é", &"k".repeat(254)] {
            assert!(!config_key_errors(bad).is_empty(), "{bad:?}");
        }
        assert_eq!(config_key_errors("..").len(), 1);
    }

    #[test]
    fn config_map_problems_are_all_reported() {
        let c: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "default"},
            "data": {"a/b": "x", "dup": "y", "..": "z"},
            "binaryData": {"dup": "eQ==", "bad key": "eQ=="},
        }))
        .unwrap();
        assert_eq!(
            fields(validate(&c)),
            ["binaryData[bad key]", "data[..]", "data[a/b]", "data[dup]"]
        );
    }

    #[test]
    fn data_over_one_mib_is_refused() {
        let at_limit = "x".repeat(MAX_CONFIG_DATA_BYTES / 2);
        let c: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "default"},
            "data": {"a": at_limit, "b": at_limit},
        }))
        .unwrap();
        assert!(validate(&c).is_ok());
        let mut over = c.clone();
        over.binary_data = Some([("c".to_string(), k8s_openapi::ByteString(vec![0]))].into());
        assert_eq!(fields(validate(&over)), ["data"]);
        let s = secret(serde_json::json!({
            "metadata": {"name": "s", "namespace": "default"},
            "stringData": {"a": at_limit, "b": format!("{at_limit}x")},
        }));
        assert_eq!(fields(validate(&s)), ["data"]);
    }

    #[test]
    fn secret_types_require_their_keys() {
        let s = |ty: &str, data: serde_json::Value| {
            validate(&secret(serde_json::json!({
                "metadata": {"name": "s", "namespace": "default"},
                "type": ty,
                "stringData": data,
            })))
        };
        assert!(s("Opaque", json!({"any": "x"})).is_ok());
        assert!(s("example.com/custom", json!({})).is_ok());
        assert_eq!(
            fields(s("kubernetes.io/tls", json!({}))),
            ["data[tls.crt]", "data[tls.key]"]
        );
        assert!(s("kubernetes.io/tls", json!({"tls.crt": "", "tls.key": ""})).is_ok());
        assert_eq!(
            fields(s("kubernetes.io/dockerconfigjson", json!({}))),
            ["data[.dockerconfigjson]"]
        );
        assert_eq!(
            fields(s(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "not json"})
            )),
            ["data[.dockerconfigjson]"]
        );
        assert!(
            s(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "{\"auths\":{}}"})
            )
            .is_ok()
        );
        assert_eq!(
            fields(s("kubernetes.io/basic-auth", json!({}))),
            ["data[password]", "data[username]"]
        );
        assert!(s("kubernetes.io/basic-auth", json!({"username": "u"})).is_ok());
        assert_eq!(
            fields(s("kubernetes.io/ssh-auth", json!({"ssh-privatekey": ""}))),
            ["data[ssh-privatekey]"]
        );
        assert_eq!(
            fields(s("kubernetes.io/service-account-token", json!({}))),
            ["metadata.annotations[kubernetes.io/service-account.name]"]
        );
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let old = secret(serde_json::json!({
            "metadata": {"name": "s", "namespace": "default"},
            "immutable": true,
            "stringData": {"a": "1"},
        }));
        let mut new = old.clone();
        new.immutable = Some(false);
        new.type_ = Some("kubernetes.io/basic-auth".into());
        new.data = Some([("a".to_string(), k8s_openapi::ByteString(b"2".to_vec()))].into());
        let mut errs = ValidationErrors::default();
        validate_secret_update(&mut errs, &old, &new);
        assert_eq!(fields(errs.into_result()), ["data", "immutable", "type"]);

        let old_cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}
        }))
        .unwrap();
        let mut new_cm = old_cm.clone();
        new_cm.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        let mut errs = ValidationErrors::default();
        validate_config_map_update(&mut errs, &old_cm, &new_cm);
        assert!(errs.is_empty(), "metadata may change: {errs}");
        new_cm.binary_data = Some(Default::default());
        let mut errs = ValidationErrors::default();
        validate_config_map_update(&mut errs, &old_cm, &new_cm);
        assert!(errs.is_empty(), "an empty binaryData is none: {errs}");
        new_cm.immutable = None;
        new_cm.binary_data = Some([("b".to_string(), k8s_openapi::ByteString(vec![1]))].into());
        let mut errs = ValidationErrors::default();
        validate_config_map_update(&mut errs, &old_cm, &new_cm);
        assert_eq!(fields(errs.into_result()), ["binaryData", "immutable"]);
    }
}
