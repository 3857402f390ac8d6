//! Deadlines of blocking calls: the one place a timeout becomes an instant.
//!
//! `Instant::now() + timeout` panics when the sum does not fit (e.g.
//! `Duration::MAX`), so every blocking call turns its timeout into a
//! [`Deadline`] here instead. A timeout too large to represent means "wait
//! forever", which is what a caller passing `Duration::MAX` asks for.

use std::time::{Duration, Instant};

/// When a blocking call gives up: an instant, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now; never if the sum overflows `Instant`.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// A deadline that never passes.
    pub(crate) fn never() -> Deadline {
        Deadline(None)
    }

    /// `Some(timeout)` from now, or never for `None`.
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::never(), Deadline::after)
    }

    /// Whether it has passed (never, for a deadline that never passes).
    pub(crate) fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// Time left (zero once passed), or `None` if it never passes.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Time left, but at most `cap`: how long one bounded wait may sleep.
    pub(crate) fn remaining_at_most(&self, cap: Duration) -> Duration {
        self.remaining().map_or(cap, |left| left.min(cap))
    }

    /// The earlier of this deadline and `cap` from now, as an instant: the
    /// end of one bounded wait (`cap` is small, so the sum cannot overflow;
    /// if it did, the wait would end now rather than panic).
    pub(crate) fn capped(&self, cap: Duration) -> Instant {
        let now = Instant::now();
        let end = now.checked_add(cap).unwrap_or(now);
        self.0.map_or(end, |d| d.min(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_never_pass() {
        for t in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(i64::MAX as u64),
        ] {
            let d = Deadline::after(t);
            assert!(!d.passed());
            assert!(d
                .remaining()
                .map_or(true, |left| left > Duration::from_secs(86400)));
            let end = d.capped(Duration::from_millis(5));
            assert!(end <= Instant::now() + Duration::from_millis(5));
        }
        assert_eq!(Deadline::from_timeout(None), Deadline::never());
        assert!(Deadline::from_timeout(None).remaining().is_none());
    }

    #[test]
    fn zero_timeout_passes_at_once() {
        let d = Deadline::after(Duration::ZERO);
        assert!(d.passed());
        assert_eq!(d.remaining(), Some(Duration::ZERO));
        assert_eq!(d.remaining_at_most(Duration::from_secs(1)), Duration::ZERO);
        assert!(d.capped(Duration::from_secs(1)) <= Instant::now());
    }
}
