//! Latency samples of mutating calls, for the benchmark and for operators.

use std::sync::Mutex;
use std::time::Duration;

/// Most samples kept between two `take`s (older ones are dropped past this).
const MAX_SAMPLES: usize = 4_000_000;

#[derive(Default)]
pub struct Latencies {
    micros: Mutex<Vec<u32>>,
}

impl Latencies {
    pub fn record(&self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let mut v = self.micros.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_SAMPLES {
            v.push(us);
        }
    }

    /// Takes the samples recorded so far, sorted.
    pub fn take(&self) -> Vec<u32> {
        let mut v = std::mem::take(&mut *self.micros.lock().unwrap_or_else(|p| p.into_inner()));
        v.sort_unstable();
        v
    }
}

/// The `p`-th percentile (0..=100) of sorted samples, in microseconds.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let l = Latencies::default();
        for i in (1..=100).rev() {
            l.record(Duration::from_micros(i));
        }
        let s = l.take();
        assert_eq!(percentile(&s, 50.0), 51);
        assert_eq!(percentile(&s, 99.0), 99);
        assert_eq!(percentile(&s, 100.0), 100);
        assert!(l.take().is_empty());
    }
}
