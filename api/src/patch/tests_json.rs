//! RFC 6902 JSON patches.

use super::{PatchError, json_patch};
use proptest::prelude::*;
use serde_json::{Value, json};

fn pod() -> Value {
    json!({
        "metadata": {"name": "p", "labels": {"app": "a"},
                     "annotations": {"example.com/x~y": "1"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
    })
}

#[test]
fn every_operation() {
    let patch = json!([
        {"op": "test", "path": "/metadata/name", "value": "p"},
        {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:2"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "d", "image": "busybox"}},
        {"op": "copy", "from": "/metadata/labels", "path": "/metadata/copied"},
        {"op": "move", "from": "/metadata/labels/app", "path": "/metadata/annotations/app"},
        {"op": "remove", "path": "/metadata/copied/tier"}
    ]);
    let got = json_patch(&pod(), &patch).unwrap();
    assert_eq!(got["metadata"]["labels"], json!({"tier": "web"}));
    assert_eq!(got["metadata"]["copied"], json!({"app": "a"}));
    assert_eq!(got["metadata"]["annotations"]["app"], "a");
    assert_eq!(got["spec"]["containers"][0]["image"], "nginx:2");
    assert_eq!(got["spec"]["containers"][1]["name"], "d");
}

#[test]
fn pointer_escapes() {
    // `~1` is `/`, `~0` is `~`.
    let patch = json!([
        {"op": "replace", "path": "/metadata/annotations/example.com~1x~0y", "value": "2"},
        {"op": "add", "path": "/metadata/labels/a~1b", "value": "c"}
    ]);
    let got = json_patch(&pod(), &patch).unwrap();
    assert_eq!(got["metadata"]["annotations"]["example.com/x~y"], "2");
    assert_eq!(got["metadata"]["labels"]["a/b"], "c");
}

#[test]
fn a_failed_test_or_a_missing_path_fails_the_whole_patch() {
    let patch = json!([
        {"op": "replace", "path": "/metadata/name", "value": "q"},
        {"op": "test", "path": "/spec/containers/0/image", "value": "nginx:9"}
    ]);
    assert!(matches!(
        json_patch(&pod(), &patch),
        Err(PatchError::Failed(_))
    ));
    let patch = json!([{"op": "remove", "path": "/metadata/nothing"}]);
    assert!(matches!(
        json_patch(&pod(), &patch),
        Err(PatchError::Failed(_))
    ));
    let patch = json!([{"op": "add", "path": "/no/parent", "value": 1}]);
    assert!(matches!(
        json_patch(&pod(), &patch),
        Err(PatchError::Failed(_))
    ));
}

#[test]
fn malformed_patches() {
    for p in [
        json!({"op": "add"}),
        json!([{"op": "frobnicate", "path": "/a"}]),
        json!([{"op": "add", "path": "/a"}]),
        json!([{"op": "add", "path": "no-slash", "value": 1}]),
    ] {
        assert!(
            matches!(json_patch(&pod(), &p), Err(PatchError::Malformed(_))),
            "{p}"
        );
    }
}

proptest! {
    /// Adding then removing a label is the identity; replacing a present label then testing
    /// it succeeds.
    #[test]
    fn add_remove_round_trip(key in "[a-z/~.]{1,8}", value in "[a-z0-9]{0,8}") {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        let path = format!("/metadata/labels/{escaped}");
        let mut target = pod();
        target["metadata"]["labels"] = json!({});
        let added = json_patch(&target, &json!([{"op": "add", "path": path, "value": value}])).unwrap();
        prop_assert_eq!(&added["metadata"]["labels"][&key], &json!(value));
        let tested = json_patch(&added, &json!([{"op": "test", "path": path, "value": value},
                                                 {"op": "remove", "path": path}])).unwrap();
        prop_assert_eq!(tested, target);
    }
}
