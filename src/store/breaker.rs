//! Fails fast while the database is known to be unreachable. Without it every call in an outage
//! waits out the pool's acquire timeout (a refused connection is retried until then), so a TPP
//! would wait seconds for its 503. Once a call finds the database unreachable, calls fail at once;
//! after a short window the next call starts one probe in the background (and fails at once
//! itself), and the probe's answer closes the breaker or opens another window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Breaker {
    epoch: Instant,
    window: Duration,
    /// Milliseconds since `epoch` until which calls fail fast; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    /// Milliseconds since `epoch` of the last call the database answered.
    last_answer: AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Go ahead.
    Closed,
    /// Fail at once.
    Open,
    /// Fail at once, and start the probe: this caller is the only one told so until the probe
    /// has reported with [`Breaker::probed`].
    ProbeDue,
}

impl Breaker {
    pub fn new(window: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            window,
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            last_answer: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn check(&self) -> Check {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Check::Closed;
        }
        if self.now_ms() >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Check::ProbeDue;
        }
        Check::Open
    }

    /// A call found the database unreachable: fail fast for a window.
    pub fn trip(&self) {
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        self.open_until
            .store((self.now_ms() + window).max(1), Ordering::Release);
    }

    /// A call was answered.
    pub fn answered(&self) {
        self.last_answer.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since a call was last answered.
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_answer.load(Ordering::Relaxed)),
        )
    }

    /// The probe's answer: `answered` closes the breaker, otherwise another window begins.
    pub fn probed(&self, answered: bool) {
        if answered {
            self.open_until.store(0, Ordering::Release);
        } else {
            self.trip();
        }
        self.probing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(30);

    #[test]
    fn an_unreachable_database_is_probed_once_per_window_until_it_answers() {
        let b = Breaker::new(WINDOW);
        assert_eq!(b.check(), Check::Closed);
        b.trip();
        assert_eq!(b.check(), Check::Open, "fails fast inside the window");

        std::thread::sleep(WINDOW);
        assert_eq!(b.check(), Check::ProbeDue, "one caller starts the probe");
        assert_eq!(b.check(), Check::Open, "only one probe at a time");
        b.probed(false);
        assert_eq!(b.check(), Check::Open, "still away: another window");

        std::thread::sleep(WINDOW);
        assert_eq!(b.check(), Check::ProbeDue);
        b.probed(true);
        assert_eq!(b.check(), Check::Closed, "an answer closes it");
    }
}
