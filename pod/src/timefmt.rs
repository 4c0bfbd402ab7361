//! RFC 3339 timestamps in UTC, as the CRI log format and the container status use them, written
//! by jiff (the one date implementation of the workspace, through k8s-openapi's `Time`).

use std::time::SystemTime;

use podd_api::jiff::Timestamp;

fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Formats `t` as `2026-11-27T17:21:41.123456789Z` (always nine fraction digits, as the CRI
/// log format has them, so that records sort as text).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    format!("{:.9}", timestamp(t))
}

/// Formats `t` to whole seconds, the form the API's status fields use.
pub fn rfc3339(t: SystemTime) -> String {
    format!("{:.0}", timestamp(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_800_101, 5);
        assert_eq!(rfc3339_nanos(t), "2026-11-27T17:21:41.000000005Z");
        assert_eq!(rfc3339(t), "2026-11-27T17:21:41Z");
        // A leap day, and whole seconds cut (not rounded).
        let leap = UNIX_EPOCH + Duration::new(951_782_400, 999_999_999);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        // What is written reads back through the API's parser.
        let back: Timestamp = rfc3339_nanos(t).parse().unwrap();
        assert_eq!(back, timestamp(t));
    }
}
