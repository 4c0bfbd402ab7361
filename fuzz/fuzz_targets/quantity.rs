//! Resource quantities (`api/src/quantity.rs`): every manifest and API body carries them.
//!
//! Beyond "no panic": a quantity that parses prints in a form that parses back to the same
//! value, through `Display` and through serde (the wire form); plain decimal integers parse to
//! exactly their value; and the JSON decoder (strings and bare numbers) agrees with `FromStr`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podd_api::{Cpu, Memory};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // The wire decoder sees arbitrary bytes too.
        let _ = serde_json::from_slice::<Cpu>(data);
        let _ = serde_json::from_slice::<Memory>(data);
        return;
    };

    if let Ok(cpu) = text.parse::<Cpu>() {
        let shown = cpu.to_string();
        assert_eq!(
            shown.parse::<Cpu>(),
            Ok(cpu),
            "cpu {text:?} printed as {shown:?}"
        );
        let wire = serde_json::to_string(&cpu).expect("a Cpu serialises");
        let back: Cpu = serde_json::from_str(&wire).expect("a serialised Cpu decodes");
        assert_eq!(back, cpu, "cpu {text:?} went over the wire as {wire}");
    }
    if let Ok(mem) = text.parse::<Memory>() {
        let shown = mem.to_string();
        assert_eq!(
            shown.parse::<Memory>(),
            Ok(mem),
            "memory {text:?} printed as {shown:?}"
        );
        let wire = serde_json::to_string(&mem).expect("a Memory serialises");
        let back: Memory = serde_json::from_str(&wire).expect("a serialised Memory decodes");
        assert_eq!(back, mem, "memory {text:?} went over the wire as {wire}");
    }

    // A plain integer is that many bytes, or that many cores.
    let trimmed = text.trim();
    if !trimmed.is_empty()
        && trimmed.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = trimmed.parse::<u64>()
    {
        assert_eq!(text.parse::<Memory>(), Ok(Memory(n)), "{text:?}");
        match n.checked_mul(1000) {
            Some(millis) => assert_eq!(text.parse::<Cpu>(), Ok(Cpu(millis)), "{text:?}"),
            None => assert!(
                text.parse::<Cpu>().is_err(),
                "{text:?} overflows millicores"
            ),
        }
    }

    // A quoted string decodes as FromStr parses it.
    let quoted = serde_json::to_string(text).expect("a str serialises");
    assert_eq!(
        serde_json::from_str::<Cpu>(&quoted).ok(),
        text.parse::<Cpu>().ok(),
        "cpu {text:?}"
    );
    assert_eq!(
        serde_json::from_str::<Memory>(&quoted).ok(),
        text.parse::<Memory>().ok(),
        "memory {text:?}"
    );
    // Bare JSON numbers (`cpu: 2`) must not panic either.
    let _ = serde_json::from_str::<Cpu>(text);
    let _ = serde_json::from_str::<Memory>(text);
});
