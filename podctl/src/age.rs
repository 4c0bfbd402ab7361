//! Ages as kubectl prints them ("45s", "3m12s", "5h", "2d"), from RFC 3339 timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC, the only form the API writes).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    let frac = s.get(19..s.len() - 1).unwrap_or("");
    let nanos = match frac.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        _ => 0,
    };
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// (year, month, day) to days since 1970-01-01, the inverse of the civil calendar mapping.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10_799 => format!("{}m", s / 60),
        10_800..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A whole number of seconds from "90", "90s", "5m" or "1h" (flags such as
/// `--scale-down-window`); up to one hour, Kubernetes' limit for stabilisation windows.
pub fn parse_window(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u32 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration: use seconds (\"30\", \"30s\"), \"5m\" or \"1h\"")
    })?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?}: unknown unit {unit:?}; use s, m or h (\"30s\", \"5m\")"))?;
    if secs > 3600 {
        return Err(format!("{s:?} is longer than the 1h maximum"));
    }
    Ok(secs)
}

/// The age of an object created at `created`, or "<unknown>".
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    created
        .and_then(parse_rfc3339)
        .map(|t| human(now.duration_since(t).unwrap_or_default()))
        .unwrap_or_else(|| "<unknown>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("30"), Ok(30));
        assert_eq!(parse_window("30s"), Ok(30));
        assert_eq!(parse_window("5m"), Ok(300));
        assert_eq!(parse_window("1h"), Ok(3600));
        assert_eq!(parse_window("0s"), Ok(0));
        assert!(parse_window("2h").unwrap_err().contains("1h maximum"));
        assert!(parse_window("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_window("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn parses_api_timestamps() {
        let t = parse_rfc3339("2026-11-27T17:21:41Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_800_101
        );
        let t = parse_rfc3339("2000-02-29T00:00:00.5Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(951_782_400, 500_000_000)
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn kubectl_ages() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(1800)), "30m");
        assert_eq!(human(Duration::from_secs(5 * 3600)), "5h");
        assert_eq!(human(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(age(None, SystemTime::now()), "<unknown>");
    }
}
