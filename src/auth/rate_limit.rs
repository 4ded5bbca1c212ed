//! Limits on sign-in and registration attempts, per client address and per email, in the
//! spirit of Better Auth's 3 sign-ins per 10 seconds. `governor` does the counting (GCRA,
//! no background timers); keys that went quiet are dropped now and then so memory stays
//! bounded.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// The window the configured counts refer to.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Forget idle keys after this many checks.
const RETAIN_EVERY: u32 = 4096;

#[derive(Clone)]
pub struct AuthRateLimits {
    per_ip: Option<Arc<Limiter<IpAddr>>>,
    per_email: Option<Arc<Limiter<String>>>,
}

struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `None` when `per_window` is 0 (limit off).
    fn new(per_window: u32) -> Option<Self> {
        let burst = NonZeroU32::new(per_window)?;
        let quota = Quota::with_period(WINDOW / per_window)?.allow_burst(burst);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU32::new(0),
        })
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(RETAIN_EVERY)
        {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

impl AuthRateLimits {
    pub fn new(per_ip: u32, per_email: u32) -> Self {
        Self {
            per_ip: Limiter::new(per_ip).map(Arc::new),
            per_email: Limiter::new(per_email).map(Arc::new),
        }
    }

    /// Counts one attempt; `Err(wait)` when the caller must wait that long first.
    pub fn check(&self, ip: Option<IpAddr>, email: &str) -> Result<(), Duration> {
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            limiter.check(&ip)?;
        }
        if let Some(limiter) = &self.per_email {
            limiter.check(&email.to_owned())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fourth_attempt_within_the_window_waits() {
        let limits = AuthRateLimits::new(0, 3);
        for _ in 0..3 {
            assert!(limits.check(None, "a@example.com").is_ok());
        }
        let wait = limits.check(None, "a@example.com").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
        assert!(limits.check(None, "b@example.com").is_ok(), "per email");
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = AuthRateLimits::new(0, 0);
        for _ in 0..100 {
            assert!(
                limits
                    .check(Some([127, 0, 0, 1].into()), "a@example.com")
                    .is_ok()
            );
        }
    }
}
