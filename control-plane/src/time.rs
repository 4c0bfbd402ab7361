//! RFC 3339 timestamps, as Kubernetes writes them.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in RFC 3339 with millisecond precision (leases need sub-second resolution).
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 time; None when absent or malformed.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Seconds (fractional) since `s`, or None when `s` does not parse.
pub fn age_seconds(s: &str) -> Option<f64> {
    let t = parse_rfc3339(s)?;
    Some((OffsetDateTime::now_utc() - t).as_seconds_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert!(age_seconds(&s).unwrap() < 1.0);
        assert!(parse_rfc3339("nope").is_none());
    }
}
