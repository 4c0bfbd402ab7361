//! Ages as kubectl prints them ("45s", "3m12s", "5h", "2d").

use podd_api::Time;
use podd_api::jiff::Timestamp;
use std::time::Duration;

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

/// How long ago `t` was (zero for times in the future, as clocks differ).
pub fn since(t: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(t)).unwrap_or_default()
}

/// The age of an object created at `created`, or "<unknown>".
pub fn age(created: Option<&Time>, now: Timestamp) -> String {
    created
        .map(|t| human(since(t.0, now)))
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
    fn ages_of_api_timestamps() {
        let created: Time = serde_json::from_str("\"2026-11-27T17:21:41Z\"").unwrap();
        let now: Timestamp = "2026-11-27T17:24:53Z".parse().unwrap();
        assert_eq!(age(Some(&created), now), "3m12s");
        let future: Timestamp = "2026-11-27T17:00:00Z".parse().unwrap();
        assert_eq!(age(Some(&created), future), "0s");
    }

    #[test]
    fn kubectl_ages() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(1800)), "30m");
        assert_eq!(human(Duration::from_secs(5 * 3600)), "5h");
        assert_eq!(human(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(age(None, Timestamp::now()), "<unknown>");
    }
}
