//! Cron schedules as Kubernetes' CronJobs read them (robfig/cron's standard parser): five
//! fields (minute, hour, day of month, month, day of week) of `*`, `?`, numbers, names
//! (`jan`, `mon`, any case), ranges `a-b`, steps `/n` (`a/n` is `a-max/n`) and lists, or one of
//! the macros `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and
//! `@hourly`. When both day fields are restricted a day matching either runs (Vixie cron's
//! rule); when either is `*` or `?`, both must match.
//!
//! Times are wall-clock times in a time zone: a schedule fires at every whole minute whose
//! local time matches, so a time skipped by a DST change does not run and a time repeated by
//! one runs twice, as the controller's minute-by-minute search in Kubernetes does. A
//! hand-written parser: the cron crates take other dialects (seconds, `L`, `W`, `#`), which
//! Kubernetes rejects.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A parse failure, worded as robfig/cron words it (`expected exactly 5 fields, found 1: [x]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// Set when a field was `*` or `?` (without a step above 1): the day-matching rule reads it.
const STAR: u64 = 1 << 63;

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DAYS_OF_MONTH: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
/// Names index from `min`: `jan` is 1.
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAYS_OF_WEEK: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// How far ahead a next time is looked for (robfig/cron gives up after five years).
const SEARCH_DAYS: i32 = 5 * 366 + 1;

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

fn all(b: &Bounds) -> u64 {
    bits(b.min, b.max, 1) | STAR
}

fn bits(start: u32, end: u32, step: u32) -> u64 {
    (start..=end)
        .step_by(step as usize)
        .fold(0, |acc, v| acc | 1 << v)
}

fn has(set: u64, v: i8) -> bool {
    (0..63).contains(&v) && set & (1 << v) != 0
}

/// A number, or a name of the field: robfig's `parseIntOrName`.
fn int_or_name(s: &str, b: &Bounds) -> Result<u32, CronError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(b.min + i as u32);
    }
    number(s)
}

fn number(s: &str) -> Result<u32, CronError> {
    let n: i64 = s
        .parse()
        .map_err(|_| CronError(format!("failed to parse int from {s}: invalid syntax")))?;
    if n < 0 {
        return Err(CronError(format!("negative number ({n}) not allowed: {s}")));
    }
    u32::try_from(n).map_err(|_| CronError(format!("failed to parse int from {s}: out of range")))
}

/// One item of a comma list: `*`, `?`, `n`, `a-b`, each optionally `/step` (robfig's
/// `getRange`).
fn range(expr: &str, b: &Bounds) -> Result<u64, CronError> {
    let mut range_and_step = expr.split('/');
    let range = range_and_step.next().unwrap_or_default();
    let step = range_and_step.next();
    if range_and_step.next().is_some() {
        return Err(CronError(format!("too many slashes: {expr}")));
    }
    let low_high: Vec<&str> = range.split('-').collect();
    let (start, mut end, mut extra) = if low_high[0] == "*" || low_high[0] == "?" {
        (b.min, b.max, STAR)
    } else {
        let start = int_or_name(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => return Err(CronError(format!("too many hyphens: {expr}"))),
        };
        (start, end, 0)
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let step = number(s)?;
            // `n/step` means `n-max/step`.
            if low_high.len() == 1 {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
    };
    if start < b.min {
        return Err(CronError(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max {
        return Err(CronError(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(CronError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(CronError(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    Ok(bits(start, end, step) | extra)
}

/// A comma list of ranges; empty items are skipped, as robfig/cron does.
fn field(f: &str, b: &Bounds) -> Result<u64, CronError> {
    f.split(',')
        .filter(|r| !r.is_empty())
        .try_fold(0, |acc, r| Ok(acc | range(r, b)?))
}

impl Schedule {
    /// Parses a schedule as Kubernetes' `cron.ParseStandard` does.
    pub fn parse(spec: &str) -> Result<Schedule, CronError> {
        if spec.is_empty() {
            return Err(CronError("empty spec string".into()));
        }
        if spec.starts_with('@') {
            return Self::descriptor(spec);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
        Ok(Schedule {
            minute: field(fields[0], &MINUTES)?,
            hour: field(fields[1], &HOURS)?,
            dom: field(fields[2], &DAYS_OF_MONTH)?,
            month: field(fields[3], &MONTHS)?,
            dow: field(fields[4], &DAYS_OF_WEEK)?,
        })
    }

    fn descriptor(spec: &str) -> Result<Schedule, CronError> {
        let midnight = |dom: u64, month: u64, dow: u64| Schedule {
            minute: 1,
            hour: 1,
            dom,
            month,
            dow,
        };
        let (dom, month, dow) = (all(&DAYS_OF_MONTH), all(&MONTHS), all(&DAYS_OF_WEEK));
        Ok(match spec {
            "@yearly" | "@annually" => midnight(1 << 1, 1 << 1, dow),
            "@monthly" => midnight(1 << 1, month, dow),
            "@weekly" => midnight(dom, month, 1),
            "@daily" | "@midnight" => midnight(dom, month, dow),
            "@hourly" => Schedule {
                hour: all(&HOURS),
                ..midnight(dom, month, dow)
            },
            _ => return Err(CronError(format!("unrecognized descriptor: {spec}"))),
        })
    }

    /// Whether the schedule runs on `date` (robfig's `dayMatches`).
    pub fn runs_on(&self, date: Date) -> bool {
        if !has(self.month, date.month()) {
            return false;
        }
        let dom = has(self.dom, date.day());
        let dow = has(self.dow, date.weekday().to_sunday_zero_offset());
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the schedule runs at the wall-clock time `dt` (seconds ignored).
    pub fn matches(&self, dt: DateTime) -> bool {
        self.runs_on(dt.date()) && has(self.hour, dt.hour()) && has(self.minute, dt.minute())
    }

    /// The instants of one day's matching wall-clock times: none for a time a DST change
    /// skips, two for one it repeats.
    fn instants_on(&self, date: Date, tz: &TimeZone) -> Vec<Timestamp> {
        let mut out = Vec::new();
        if !self.runs_on(date) {
            return out;
        }
        for hour in (0..24).filter(|h| has(self.hour, *h)) {
            for minute in (0..60).filter(|m| has(self.minute, *m)) {
                let dt = date.at(hour, minute, 0, 0);
                let offsets = match tz.to_ambiguous_timestamp(dt).offset() {
                    AmbiguousOffset::Unambiguous { offset } => vec![offset],
                    AmbiguousOffset::Gap { .. } => vec![],
                    AmbiguousOffset::Fold { before, after } => vec![before, after],
                };
                out.extend(offsets.into_iter().filter_map(|o| o.to_timestamp(dt).ok()));
            }
        }
        out
    }

    /// The first time the schedule fires strictly after `after`, in `tz`; None when it does
    /// not within five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // A DST change may put a day's instants before the previous day's last ones: start a
        // day early, look at one more day after the first day with a candidate, and take the
        // earliest.
        let mut date = tz.to_datetime(after).date().yesterday().ok()?;
        let mut best: Option<Timestamp> = None;
        let mut days_after_best = 0;
        for _ in 0..SEARCH_DAYS {
            let found = self
                .instants_on(date, tz)
                .into_iter()
                .filter(|t| *t > after)
                .min();
            best = match (best, found) {
                (Some(b), Some(f)) => Some(b.min(f)),
                (b, f) => b.or(f),
            };
            if best.is_some() {
                if days_after_best == 1 {
                    break;
                }
                days_after_best += 1;
            }
            date = date.tomorrow().ok()?;
        }
        best
    }
}

/// The time zone a CronJob's `timeZone` names (UTC when unset), checked as Kubernetes'
/// `validateTimeZone` and Go's `time.LoadLocation` check it: an IANA name, spelled as the
/// database spells it, never `Local`. The one place CronJob time zones are read, by the
/// validation and by the controller.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    let Some(name) = name else {
        return Ok(TimeZone::UTC);
    };
    if name.is_empty() {
        return Err(CronError("timeZone must be nil or non-empty string".into()));
    }
    let unknown = || CronError(format!("unknown time zone {name}"));
    let valid_part = |p: &str| {
        (1..=14).contains(&p.len())
            && p != "."
            && p != ".."
            && !p.starts_with('-')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    };
    if !name.split('/').all(valid_part) {
        return Err(unknown());
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(CronError(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        ));
    }
    // jiff looks names up ignoring case; Go's lookup (a file name) does not.
    match TimeZone::get(name) {
        Ok(tz) if tz.iana_name() == Some(name) => Ok(tz),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests;
