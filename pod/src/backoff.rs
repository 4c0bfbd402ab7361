//! Restart decisions and crash-loop back-off, as the kubelet makes them.
//!
//! Back-off starts at 10 s and doubles after each restart up to 5 minutes; a container that
//! ran for 10 minutes without exiting has its back-off reset.

use crate::shim::RestartPolicy;
use std::time::Duration;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A run this long counts as healthy and resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether a container that exited with `exit_code` should be started again.
pub fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// Per-container back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// A custom schedule; tests and simulated nodes use short ones.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: Duration::ZERO,
        }
    }

    /// The delay before the restart that follows an exit after running for `ran_for`.
    /// The first restart is immediate, as in Kubernetes; later ones wait 10 s, 20 s, 40 s...
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESET_AFTER {
            self.next = Duration::ZERO;
        }
        let delay = self.next;
        self.next = if delay.is_zero() {
            self.initial
        } else {
            (delay * 2).min(self.max)
        };
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert!(should_restart(RestartPolicy::Always, 0));
        assert!(should_restart(RestartPolicy::OnFailure, 1));
        assert!(!should_restart(RestartPolicy::OnFailure, 0));
        assert!(!should_restart(RestartPolicy::Never, 1));
    }

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..8).map(|_| b.on_exit(short).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.on_exit(RESET_AFTER), Duration::ZERO);
        assert_eq!(b.on_exit(short), INITIAL_BACKOFF);
    }
}
