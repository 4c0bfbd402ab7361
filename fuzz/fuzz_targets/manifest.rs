//! `podctl apply -f` manifests: YAML (several documents, anchors, lists) or JSON, decoded by
//! podctl's own parser (`podctl/src/manifest.rs`, compiled in here as it is, since podctl is a
//! binary crate).
//!
//! Beyond "no panic": every object a manifest yields, written back out as a manifest (YAML and
//! JSON, with its apiVersion and kind), parses to exactly one equal object.
#![no_main]

#[allow(dead_code)]
#[path = "../../podctl/src/manifest.rs"]
mod manifest;

use libfuzzer_sys::fuzz_target;
use manifest::{Manifest, parse};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = parse(text, "fuzz.yaml") else {
        return;
    };
    assert!(!objects.is_empty(), "parse succeeded with no objects");
    for object in &objects {
        let doc = as_document(object);
        let yaml = serde_yaml::to_string(&doc).expect("a manifest serialises as YAML");
        check_same(object, &yaml, "YAML");
        let json = serde_json::to_string_pretty(&doc).expect("a manifest serialises as JSON");
        check_same(object, &json, "JSON");
    }
});

/// The object as a manifest document: its typed fields plus apiVersion and kind.
fn as_document(object: &Manifest) -> Value {
    let mut doc = match object {
        Manifest::Pod(o) => serde_json::to_value(o),
        Manifest::Deployment(o) => serde_json::to_value(o),
        Manifest::Service(o) => serde_json::to_value(o),
        Manifest::Hpa(o) => serde_json::to_value(o),
    }
    .expect("a typed object serialises");
    let kind = object.kind();
    let map = doc.as_object_mut().expect("objects serialise as maps");
    map.insert("apiVersion".into(), kind.api_version().into());
    map.insert("kind".into(), kind.name().into());
    doc
}

fn check_same(object: &Manifest, text: &str, form: &str) {
    let again = parse(text, "again")
        .unwrap_or_else(|e| panic!("the {form} written back does not parse: {e:#}\n{text}"));
    assert_eq!(again.len(), 1, "{form} written back:\n{text}");
    let same = match (object, &again[0]) {
        (Manifest::Pod(a), Manifest::Pod(b)) => a == b,
        (Manifest::Deployment(a), Manifest::Deployment(b)) => a == b,
        (Manifest::Service(a), Manifest::Service(b)) => a == b,
        (Manifest::Hpa(a), Manifest::Hpa(b)) => a == b,
        _ => false,
    };
    assert!(
        same,
        "the {form} written back decodes differently:\n{object:?}\n{:?}\n{text}",
        again[0]
    );
}
