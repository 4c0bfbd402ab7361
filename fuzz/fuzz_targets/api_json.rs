//! The API's JSON decoders: what the server does with a request body (decode it at the edge
//! into each kind's k8s-openapi type with `podd_api::schema::decode` under every
//! `fieldValidation`, apply the defaults, validate, as `control-plane/src/registry.rs` does)
//! and what clients do with a response (lists, watch events, Status errors), plus label
//! selectors from query strings.
//!
//! Beyond "no panic": a body that decodes as a kind re-encodes to JSON that decodes to an equal
//! object and re-encodes to the same JSON (normalising twice changes nothing); the stricter
//! field validations never accept what a laxer one refuses, and agree on the object; defaulting
//! is idempotent; and validation gives the same verdict on the normalised form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podd_api::schema::{FieldValidation, decode};
use podd_api::selector::Selector;
use podd_api::validation::validate;
use podd_api::{Kind, List, Object, Pod, Status, WatchEventType, defaults, with_kind_type};
use serde::Deserialize;
use serde_json::Value;

/// A watch line as a client reads it.
#[derive(Debug, Deserialize)]
struct WatchLine<T> {
    #[serde(rename = "type")]
    _type: WatchEventType,
    object: T,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<Value>(data) {
        for kind in Kind::ALL {
            with_kind_type!(kind, T => round_trip::<T>(&body));
        }
    }

    // The client's envelopes, straight from response bytes.
    let _ = serde_json::from_slice::<Status>(data);
    let _ = serde_json::from_slice::<List<Pod>>(data);
    let _ = serde_json::from_slice::<WatchLine<Value>>(data);
    if let Ok(event) = serde_json::from_slice::<WatchLine<Pod>>(data) {
        let wire = serde_json::to_vec(&event.object).expect("a pod serialises");
        let back: Pod = serde_json::from_slice(&wire).expect("a serialised pod decodes");
        assert_eq!(back, event.object);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(selector) = Selector::parse(text) {
            // Matching never panics, on empty and on arbitrary labels.
            let _ = selector.matches(&Default::default());
        }
        let _ = Kind::from_plural(text);
    }
});

/// Decodes, defaults and validates `body` as the server would store it, and checks that doing
/// so is stable.
fn round_trip<T: Object>(body: &Value) {
    let kind = T::API_KIND;
    let ignore = decode::<T>(body.clone(), FieldValidation::Ignore);
    let warn = decode::<T>(body.clone(), FieldValidation::Warn);
    let strict = decode::<T>(body.clone(), FieldValidation::Strict);
    // Strict refuses at least what Warn refuses, which refuses at least what Ignore refuses;
    // what they accept, they decode alike.
    match (&ignore, &warn, &strict) {
        (Err(_), Ok(_), _) | (_, Err(_), Ok(_)) => {
            panic!("{kind:?}: a stricter fieldValidation accepted what a laxer refused")
        }
        _ => {}
    }
    if let (Ok((a, _)), Ok((b, _))) = (&ignore, &warn) {
        assert_eq!(a, b, "{kind:?}: Ignore and Warn decode differently");
    }
    if let (Ok((a, warnings)), Ok((b, _))) = (&warn, &strict) {
        assert_eq!(a, b, "{kind:?}: Warn and Strict decode differently");
        assert!(
            warnings.is_empty(),
            "{kind:?}: Strict accepted a body Warn warns about: {warnings:?}"
        );
    }
    let Ok((mut object, _)) = ignore else {
        return;
    };

    defaults::apply(&mut object);
    let mut twice = object.clone();
    defaults::apply(&mut twice);
    assert_eq!(twice, object, "{kind:?}: defaulting twice changed it");
    let verdict = validate(&object).is_ok();

    let normal = serde_json::to_value(&object).expect("a decoded object serialises");
    let (again, _) = decode::<T>(normal.clone(), FieldValidation::Strict).unwrap_or_else(|e| {
        panic!("{kind:?}: the normalised form does not decode strictly: {e:?}\n{normal}")
    });
    assert_eq!(again, object, "{kind:?}: decode(encode(x)) != x");
    let normal_again = serde_json::to_value(&again).expect("a decoded object serialises");
    assert_eq!(
        normal_again, normal,
        "{kind:?}: normalising twice changed it"
    );
    // Through bytes too, as the store keeps it.
    let bytes = serde_json::to_vec(&object).expect("a decoded object serialises");
    let stored: T = serde_json::from_slice(&bytes).expect("stored bytes decode");
    assert_eq!(
        stored, object,
        "{kind:?}: the stored bytes decode differently"
    );
    assert_eq!(
        validate(&again).is_ok(),
        verdict,
        "{kind:?}: validation changed its verdict after normalising"
    );
}
