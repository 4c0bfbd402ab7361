//! `podctl apply -f` manifests: YAML (several documents, anchors, lists) or JSON, decoded by
//! podctl's own parser (`podctl/src/manifest.rs`, compiled in here as it is, since podctl is a
//! binary crate), which checks each document against its kind's k8s-openapi type.
//!
//! Beyond "no panic": every object a manifest yields decodes as its kind's type, and, written
//! back out as a manifest (YAML and JSON), parses to exactly one equal object of the same kind
//! that decodes to an equal typed object.
#![no_main]

#[allow(dead_code)]
#[path = "../../podctl/src/manifest.rs"]
mod manifest;

use libfuzzer_sys::fuzz_target;
use manifest::{Manifest, parse};
use podd_api::{Object, with_kind_type};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = parse(text, "fuzz.yaml") else {
        return;
    };
    assert!(!objects.is_empty(), "parse succeeded with no objects");
    for object in &objects {
        let yaml = serde_yaml::to_string(&object.doc).expect("a manifest serialises as YAML");
        check_same(object, &yaml, "YAML");
        let json =
            serde_json::to_string_pretty(&object.doc).expect("a manifest serialises as JSON");
        check_same(object, &json, "JSON");
    }
});

fn check_same(object: &Manifest, text: &str, form: &str) {
    let again = parse(text, "again")
        .unwrap_or_else(|e| panic!("the {form} written back does not parse: {e:#}\n{text}"));
    assert_eq!(again.len(), 1, "{form} written back:\n{text}");
    assert_eq!(
        again[0].kind, object.kind,
        "{form} written back changed the kind:\n{text}"
    );
    with_kind_type!(object.kind, T => same_typed::<T>(object, &again[0], form, text));
}

/// Both documents decode as `T` (the parser accepted them), to equal objects.
fn same_typed<T: Object>(a: &Manifest, b: &Manifest, form: &str, text: &str) {
    let decode = |m: &Manifest| -> T {
        serde_json::from_value(m.doc.clone()).unwrap_or_else(|e| {
            panic!(
                "{:?}: an accepted manifest does not decode: {e}\n{}",
                T::API_KIND,
                m.doc
            )
        })
    };
    assert_eq!(
        decode(a),
        decode(b),
        "the {form} written back decodes differently:\n{text}"
    );
}
