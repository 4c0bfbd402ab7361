use super::*;
use jiff::SignedDuration;
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn next(spec: &str, after: &str, zone: &str) -> Option<String> {
    Schedule::parse(spec)
        .unwrap()
        .next_after(ts(after), &tz(zone))
        .map(|t| t.to_string())
}

/// The first instant after `after` (within `minutes`) whose wall-clock time matches, found
/// by walking every minute: the definition `next_after` must agree with.
fn walk(s: &Schedule, after: Timestamp, zone: &TimeZone, minutes: i64) -> Option<Timestamp> {
    let start = after.as_second().div_euclid(60) * 60 + 60;
    (0..minutes)
        .map(|i| Timestamp::from_second(start + i * 60).unwrap())
        .find(|t| s.matches(zone.to_datetime(*t)))
}

#[test]
fn parses_kubernetes_forms() {
    for ok in [
        "* * * * *",
        "*/1 * * * *",
        "0 */2 * * *",
        "5,10-20/5 0-23 1,15 * mon-fri",
        "0 0 ? JAN,Jul SUN",
        "30 6-16/4 * * 1-5",
        "0 0 30 2 *",
        "1,,2 * * * *",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ] {
        Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let err = |s: &str| Schedule::parse(s).unwrap_err().to_string();
    assert_eq!(err(""), "empty spec string");
    assert_eq!(err("foo"), "expected exactly 5 fields, found 1: [foo]");
    assert_eq!(
        err("* * * * * *"),
        "expected exactly 5 fields, found 6: [* * * * * *]"
    );
    assert_eq!(
        err("60 * * * *"),
        "end of range (60) above maximum (59): 60"
    );
    assert_eq!(
        err("* * 0 * *"),
        "beginning of range (0) below minimum (1): 0"
    );
    assert_eq!(err("* * * * 7"), "end of range (7) above maximum (6): 7");
    assert_eq!(
        err("5-1 * * * *"),
        "beginning of range (5) beyond end of range (1): 5-1"
    );
    assert_eq!(
        err("*/0 * * * *"),
        "step of range should be a positive number: */0"
    );
    assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
    assert_eq!(err("*/2/3 * * * *"), "too many slashes: */2/3");
    assert_eq!(err("@every"), "unrecognized descriptor: @every");
    assert!(err("x * * * *").starts_with("failed to parse int from x"));
    assert!(err("L * * * *").starts_with("failed to parse int from L"));
}

#[test]
fn macros_are_their_five_fields() {
    for (m, f) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ] {
        assert_eq!(Schedule::parse(m), Schedule::parse(f), "{m}");
    }
}

#[test]
fn next_times_in_utc() {
    let n = |s, a| next(s, a, "UTC");
    assert_eq!(
        n("* * * * *", "2026-01-01T00:00:00Z").unwrap(),
        "2026-01-01T00:01:00Z"
    );
    assert_eq!(
        n("* * * * *", "2026-01-01T00:00:30.5Z").unwrap(),
        "2026-01-01T00:01:00Z"
    );
    assert_eq!(
        n("*/15 * * * *", "2026-01-01T00:14:00Z").unwrap(),
        "2026-01-01T00:15:00Z"
    );
    assert_eq!(
        n("@monthly", "2026-01-31T12:00:00Z").unwrap(),
        "2026-02-01T00:00:00Z"
    );
    assert_eq!(
        n("0 0 29 2 *", "2026-03-01T00:00:00Z").unwrap(),
        "2028-02-29T00:00:00Z"
    );
    // Day of month or day of week when both are restricted; both when one is `*`.
    assert_eq!(
        n("0 0 13 * fri", "2026-01-01T00:00:00Z").unwrap(),
        "2026-01-02T00:00:00Z"
    );
    assert_eq!(
        n("0 0 13 * ?", "2026-01-01T00:00:00Z").unwrap(),
        "2026-01-13T00:00:00Z"
    );
    // A step above 1 is not `*` for that rule: `*/2` days of month or Fridays.
    assert_eq!(
        n("0 0 */2 * 5", "2026-01-01T00:00:00Z").unwrap(),
        "2026-01-02T00:00:00Z"
    );
    assert_eq!(n("0 0 30 2 *", "2026-01-01T00:00:00Z"), None);
}

#[test]
fn time_zones_and_dst() {
    // 09:00 in Tokyo is 00:00 UTC.
    assert_eq!(
        next("0 9 * * *", "2026-01-01T01:00:00Z", "Asia/Tokyo").unwrap(),
        "2026-01-02T00:00:00Z"
    );
    // New York springs forward at 02:00 on 2026-03-08: 02:30 does not exist that day.
    assert_eq!(
        next("30 2 * * *", "2026-03-07T08:00:00Z", "America/New_York").unwrap(),
        "2026-03-09T06:30:00Z"
    );
    // ... and falls back at 02:00 on 2026-11-01: 01:30 happens twice, and runs twice.
    let ny = "America/New_York";
    let first = next("30 1 * * *", "2026-11-01T04:00:00Z", ny).unwrap();
    assert_eq!(first, "2026-11-01T05:30:00Z");
    assert_eq!(
        next("30 1 * * *", &first, ny).unwrap(),
        "2026-11-01T06:30:00Z"
    );
    // A daily schedule keeps its wall-clock time across the change.
    assert_eq!(
        next("0 12 * * *", "2026-03-08T12:00:00Z", ny).unwrap(),
        "2026-03-08T16:00:00Z"
    );
    assert_eq!(
        next("0 12 * * *", "2026-03-07T12:00:00Z", ny).unwrap(),
        "2026-03-07T17:00:00Z"
    );
}

/// A random field: a list of ranges with steps, as text, and the values it allows.
fn field_text(min: u32, max: u32) -> impl Strategy<Value = (String, Vec<u32>)> {
    let item = (min..=max, min..=max, 1..=(max - min + 1), any::<bool>());
    prop::collection::vec(item, 1..4).prop_map(move |items| {
        let mut values = Vec::new();
        let text: Vec<String> = items
            .into_iter()
            .map(|(a, b, step, star)| {
                let (a, b) = (a.min(b), a.max(b));
                if star {
                    values.extend((min..=max).step_by(step as usize));
                    format!("*/{step}")
                } else {
                    values.extend((a..=b).step_by(step as usize));
                    format!("{a}-{b}/{step}")
                }
            })
            .collect();
        values.sort_unstable();
        values.dedup();
        (text.join(","), values)
    })
}

fn schedule_text() -> impl Strategy<Value = String> {
    (
        field_text(0, 59),
        field_text(0, 23),
        field_text(1, 31),
        field_text(1, 12),
        field_text(0, 6),
    )
        .prop_map(|(m, h, d, mo, w)| format!("{} {} {} {} {}", m.0, h.0, d.0, mo.0, w.0))
}

fn instant() -> impl Strategy<Value = Timestamp> {
    // 2000..2040, at any second.
    (946_684_800i64..2_208_988_800).prop_map(|s| Timestamp::from_second(s).unwrap())
}

proptest! {
    #[test]
    fn a_field_allows_exactly_its_values((text, values) in field_text(0, 59)) {
        let s = Schedule::parse(&format!("{text} * * * *")).unwrap();
        let allowed: Vec<u32> = (0..60).filter(|m| has(s.minute, *m as i8)).collect();
        prop_assert_eq!(allowed, values);
    }

    #[test]
    fn next_is_the_first_matching_minute(
        spec in schedule_text(),
        after in instant(),
        zone in prop::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
    ) {
        let s = Schedule::parse(&spec).unwrap();
        let zone = tz(zone);
        // Walk three days of minutes: the answer must be the walk's when it finds one, and
        // later than the walk's horizon when it finds none.
        let horizon = 3 * 24 * 60;
        let walked = walk(&s, after, &zone, horizon);
        let got = s.next_after(after, &zone);
        match walked {
            Some(w) => prop_assert_eq!(got, Some(w), "{}", spec),
            None => if let Some(g) = got {
                prop_assert!(g > after + SignedDuration::from_mins(horizon), "{} {}", spec, g);
                prop_assert!(s.matches(zone.to_datetime(g)));
                prop_assert_eq!(g.as_second() % 60, 0);
            },
        }
    }

    #[test]
    fn parse_never_panics(spec in "[-0-9a-zA-Z*?/,@ ]{0,30}") {
        let _ = Schedule::parse(&spec);
    }
}

#[test]
fn time_zones_as_kubernetes_checks_them() {
    assert_eq!(time_zone(None).unwrap(), TimeZone::UTC);
    for ok in [
        "UTC",
        "Etc/UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Etc/GMT+5",
    ] {
        time_zone(Some(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let err = |s: &str| time_zone(Some(s)).unwrap_err().to_string();
    assert_eq!(err("Mars/Olympus"), "unknown time zone Mars/Olympus");
    assert_eq!(
        err("america/new_york"),
        "unknown time zone america/new_york"
    );
    assert_eq!(err("../etc/passwd"), "unknown time zone ../etc/passwd");
    assert_eq!(err(""), "timeZone must be nil or non-empty string");
    assert_eq!(
        err("Local"),
        "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
    );
}
