//! emptyDir sizeLimit on the node's disk: the shim measures each limited volume at an
//! interval and evicts the pod when one is over its limit, as the kubelet does.
//!
//! A disk-backed emptyDir is a plain directory, so nothing stops a write past the limit; the
//! defence is detection, then eviction. How far a container can overshoot is what it writes
//! between two measurements: (interval + one measurement) × its write rate. The interval is
//! `VolumeWatch::interval_ms` (1 s by default, as `PodConfig::volume_check_interval`), and a
//! measurement visits at most `max_entries` inodes, so its cost is bounded too; the interval
//! stretches to ten times the last measurement's duration, so measuring never takes more
//! than a tenth of one CPU. Eviction kills at once (SIGKILL, no grace period), as the
//! kubelet does for a local-storage eviction, so no further write lands. A hard limit needs
//! `medium: Memory`, whose tmpfs is mounted with `size=` the limit and refuses the write.

use super::plan::{VolumeLimit, VolumeWatch};
use super::status::Eviction;
use crate::tree::disk_usage;
use std::time::{Duration, Instant};

/// The reason an evicted pod reports.
pub const EVICTED: &str = "Evicted";

/// Why the pod must be evicted now, if one of its volumes is over its limit (or too large to
/// measure within the budget).
pub fn check(watch: &VolumeWatch) -> Option<Eviction> {
    watch
        .limits
        .iter()
        .find_map(|v| check_one(v, watch.max_entries))
}

fn check_one(v: &VolumeLimit, max_entries: u64) -> Option<Eviction> {
    let usage = match disk_usage(&v.path, max_entries) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(volume = %v.name, error = %e, "measuring an emptyDir");
            return None;
        }
    };
    let message = if usage.bytes > v.limit_bytes {
        // The kubelet's words (eviction_manager's emptyDirMessageFmt).
        format!(
            "Usage of EmptyDir volume {:?} exceeds the limit {:?}.",
            v.name, v.limit
        )
    } else if !usage.complete {
        format!(
            "EmptyDir volume {:?} holds more than {max_entries} files or is nested too deep \
             to measure against its limit {:?}.",
            v.name, v.limit
        )
    } else {
        return None;
    };
    tracing::warn!(volume = %v.name, used = usage.bytes, limit = v.limit_bytes, %message, "evicting the pod");
    Some(Eviction {
        reason: EVICTED.into(),
        message,
    })
}

/// How long to wait before the next measurement, given how long the last one took: the
/// configured interval, stretched so that measuring takes at most a tenth of the time.
pub fn next_interval(interval: Duration, last_measurement: Duration) -> Duration {
    interval.max(last_measurement.saturating_mul(10))
}

/// Measures until `stopping` says so; returns the eviction when a volume went over.
pub fn watch(
    watch: &VolumeWatch,
    sleep: impl Fn(Duration),
    stopping: impl Fn() -> bool,
) -> Option<Eviction> {
    if watch.limits.is_empty() {
        return None;
    }
    let interval = Duration::from_millis(watch.interval_ms.max(10));
    let mut wait = interval;
    loop {
        sleep(wait);
        if stopping() {
            return None;
        }
        let started = Instant::now();
        if let Some(e) = check(watch) {
            return Some(e);
        }
        wait = next_interval(interval, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_is_evicted_with_the_kubelets_message() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("scratch");
        std::fs::create_dir(&vol).unwrap();
        let mut w = VolumeWatch {
            limits: vec![VolumeLimit {
                name: "scratch".into(),
                path: vol.clone(),
                limit_bytes: 1 << 20,
                limit: "1Mi".into(),
            }],
            ..VolumeWatch::default()
        };
        assert_eq!(check(&w), None);
        std::fs::write(vol.join("f"), vec![1u8; 2 << 20]).unwrap();
        let e = check(&w).unwrap();
        assert_eq!(e.reason, "Evicted");
        assert_eq!(
            e.message,
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\"."
        );
        w.limits[0].limit_bytes = 4 << 20;
        assert_eq!(check(&w), None);
        for i in 0..5 {
            std::fs::write(vol.join(i.to_string()), "").unwrap();
        }
        w.max_entries = 4;
        assert!(check(&w).unwrap().message.contains("more than 4 files"));
    }

    #[test]
    fn measuring_takes_at_most_a_tenth_of_the_time() {
        let s = Duration::from_secs(1);
        assert_eq!(next_interval(s, Duration::from_millis(20)), s);
        assert_eq!(
            next_interval(s, Duration::from_millis(300)),
            Duration::from_secs(3)
        );
    }
}
