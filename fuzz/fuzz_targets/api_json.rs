//! The API's JSON decoders: what the server does with a request body (decode to a value,
//! validate it as each kind, normalise it through the typed object, as
//! `control-plane/src/registry.rs` does) and what clients do with a response (lists, watch
//! events, Status errors), plus label selectors from query strings.
//!
//! Beyond "no panic": a body that decodes as a kind re-encodes to JSON that decodes to an equal
//! object and re-encodes to the same JSON (normalising twice changes nothing), and validation
//! gives the same verdict on the normalised form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podd_api::meta::Selector;
use podd_api::validation::validate_value;
use podd_api::{
    Deployment, Endpoints, HorizontalPodAutoscaler, Kind, List, Node, Object, Pod, Service, Status,
    WatchEvent,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<Value>(data) {
        round_trip::<Pod>(&body);
        round_trip::<Deployment>(&body);
        round_trip::<Service>(&body);
        round_trip::<Endpoints>(&body);
        round_trip::<Node>(&body);
        round_trip::<HorizontalPodAutoscaler>(&body);
    }

    // The client's envelopes, straight from response bytes.
    let _ = serde_json::from_slice::<Status>(data);
    let _ = serde_json::from_slice::<List<Pod>>(data);
    let _ = serde_json::from_slice::<WatchEvent<Value>>(data);
    if let Ok(event) = serde_json::from_slice::<WatchEvent<Pod>>(data) {
        let wire = serde_json::to_vec(&event).expect("a watch event serialises");
        let back: WatchEvent<Pod> =
            serde_json::from_slice(&wire).expect("a serialised watch event decodes");
        assert_eq!(back.kind, event.kind);
        assert_eq!(back.object, event.object);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(selector) = Selector::parse(text) {
            // Matching never panics, on empty and on arbitrary labels.
            let _ = selector.matches(&Default::default());
        }
        let _ = Kind::from_plural(text);
    }
});

/// Normalises `body` as the server would store it, and checks that doing so is stable.
fn round_trip<T: Object + PartialEq + std::fmt::Debug>(body: &Value) {
    let verdict = validate_value(T::KIND, body).is_ok();
    let Ok(object) = serde_json::from_value::<T>(body.clone()) else {
        assert!(
            !verdict,
            "{:?}: validation passed a body that does not decode",
            T::KIND
        );
        return;
    };
    let normal = serde_json::to_value(&object).expect("a decoded object serialises");
    let again: T = serde_json::from_value(normal.clone()).unwrap_or_else(|e| {
        panic!(
            "{:?}: the normalised form does not decode: {e}\n{normal}",
            T::KIND
        )
    });
    assert_eq!(again, object, "{:?}: decode(encode(x)) != x", T::KIND);
    let normal_again = serde_json::to_value(&again).expect("a decoded object serialises");
    assert_eq!(
        normal_again,
        normal,
        "{:?}: normalising twice changed it",
        T::KIND
    );
    // Through bytes too, as the store keeps it.
    let bytes = serde_json::to_vec(&object).expect("a decoded object serialises");
    let stored: T = serde_json::from_slice(&bytes).expect("stored bytes decode");
    assert_eq!(
        stored,
        object,
        "{:?}: the stored bytes decode differently",
        T::KIND
    );
    assert_eq!(
        validate_value(T::KIND, &normal).is_ok(),
        verdict,
        "{:?}: validation changed its verdict after normalising",
        T::KIND
    );
}
