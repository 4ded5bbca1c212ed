//! Limits on sign-in and registration attempts, per client address and per account, in
//! the spirit of Better Auth's 3 sign-ins per 10 seconds. `governor` does the counting
//! (GCRA, no background timers); keys that went quiet are dropped now and then so memory
//! stays bounded.
//!
//! The per-account limit follows OWASP's "Slow Down Online Guessing Attacks with Device
//! Cookies" scheme, so that a stranger guessing at an account cannot lock its owner out:
//! every successful sign-in hands the client a *device token* bound to that email, and
//! attempts that present a valid one are counted in a bucket of that device's own.
//! Attempts without one share the account's "untrusted clients" bucket, which is all a
//! stranger can exhaust.
//!
//! On PostgreSQL every limit is counted in the database instead, once for all replicas
//! ([`crate::replicas::SharedCounter`]); the in-memory count is what each replica falls
//! back to while the database does not answer.

use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::config::Secret;
use crate::replicas::SharedCounter;

/// The window the configured sign-in counts refer to.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Forget idle keys after this many checks.
const RETAIN_EVERY: u32 = 4096;

/// `count` events per `window` per key, as a burst that refills evenly.
pub struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU32,
    /// What is limited, as the shared counter's keys are scoped (`auth-ip`, …).
    scope: &'static str,
    count: u32,
    window: Duration,
}

impl<K: Hash + Eq + Clone + Display> Limiter<K> {
    /// `None` when `count` is 0 (limit off).
    pub fn new(scope: &'static str, count: u32, window: Duration) -> Option<Self> {
        let burst = NonZeroU32::new(count)?;
        let quota = Quota::with_period(window / count)?.allow_burst(burst);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU32::new(0),
            scope,
            count,
            window,
        })
    }

    /// Counts one event in PostgreSQL when `shared` is given and it answers in time,
    /// otherwise here; `Err(wait)` when the caller must wait that long first.
    pub async fn check_shared(
        &self,
        shared: Option<&SharedCounter>,
        key: &K,
    ) -> Result<(), Duration> {
        if let Some(shared) = shared
            && let Some(verdict) = shared
                .check(self.scope, &key.to_string(), self.count, self.window)
                .await
        {
            return verdict;
        }
        self.check(key)
    }

    /// Counts one event; `Err(wait)` when the caller must wait that long first.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
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

/// Whose bucket an attempt on an account counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AccountKey {
    /// Clients without a device token for this email: strangers and new devices.
    Untrusted(String),
    /// One device that signed in to this account before.
    Device(String),
}

impl Display for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountKey::Untrusted(email) => write!(f, "untrusted:{email}"),
            AccountKey::Device(id) => write!(f, "device:{id}"),
        }
    }
}

#[derive(Clone)]
pub struct AuthRateLimits {
    per_ip: Option<Arc<Limiter<IpAddr>>>,
    per_account: Option<Arc<Limiter<AccountKey>>>,
    devices: DeviceTokens,
    shared: Option<SharedCounter>,
}

impl AuthRateLimits {
    pub fn new(per_ip: u32, per_email: u32, secret: &Secret) -> Self {
        Self {
            per_ip: Limiter::new("auth-ip", per_ip, WINDOW).map(Arc::new),
            per_account: Limiter::new("auth-account", per_email, WINDOW).map(Arc::new),
            devices: DeviceTokens::new(secret),
            shared: None,
        }
    }

    /// Counts in PostgreSQL through `shared` (once for all replicas) when given.
    pub fn shared(mut self, shared: Option<SharedCounter>) -> Self {
        self.shared = shared;
        self
    }

    /// Counts one attempt on `email` from `ip`, with the device token the client sent;
    /// `Err(wait)` when the caller must wait that long first.
    pub async fn check(
        &self,
        ip: Option<IpAddr>,
        email: &str,
        device: Option<&str>,
    ) -> Result<(), Duration> {
        let shared = self.shared.as_ref();
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            limiter.check_shared(shared, &ip).await?;
        }
        if let Some(limiter) = &self.per_account {
            let key = match device.and_then(|token| self.devices.verify(token, email)) {
                Some(device) => AccountKey::Device(device),
                None => AccountKey::Untrusted(email.to_owned()),
            };
            limiter.check_shared(shared, &key).await?;
        }
        Ok(())
    }

    /// A new device token for a client that just signed in as `email`.
    pub fn device_token(&self, email: &str) -> String {
        self.devices.issue(email)
    }
}

/// Device tokens: `id.mac`, where the MAC binds a random id to one email under a key
/// derived from the server's signing secret. Nothing is stored.
#[derive(Clone)]
struct DeviceTokens {
    key: [u8; 32],
}

type HmacSha256 = hmac::Hmac<Sha256>;

impl DeviceTokens {
    fn new(secret: &Secret) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"lectern device token\0");
        hasher.update(secret.expose().as_bytes());
        Self {
            key: hasher.finalize().into(),
        }
    }

    fn mac(&self, id: &str, email: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b"\0");
        mac.update(email.as_bytes());
        mac
    }

    fn issue(&self, email: &str) -> String {
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&id, email).finalize().into_bytes());
        format!("{id}.{tag}")
    }

    /// The device id when `token` was issued for `email` by this server.
    fn verify(&self, token: &str, email: &str) -> Option<String> {
        let (id, tag) = token.split_once('.')?;
        if id.len() > 64 {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(id, email).verify_slice(&tag).ok()?;
        Some(id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, per_email: u32) -> AuthRateLimits {
        AuthRateLimits::new(
            per_ip,
            per_email,
            &Secret::new("unit-test-secret-unit-test-secret"),
        )
    }

    #[tokio::test]
    async fn the_fourth_attempt_within_the_window_waits() {
        let limits = limits(0, 3);
        for _ in 0..3 {
            assert!(limits.check(None, "a@example.com", None).await.is_ok());
        }
        let wait = limits.check(None, "a@example.com", None).await.unwrap_err();
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
        assert!(
            limits.check(None, "b@example.com", None).await.is_ok(),
            "per email"
        );
    }

    #[tokio::test]
    async fn a_known_device_is_not_locked_out_by_strangers() {
        let limits = limits(0, 3);
        let device = limits.device_token("owner@example.com");
        for _ in 0..3 {
            let _ = limits.check(None, "owner@example.com", None).await;
        }
        assert!(limits.check(None, "owner@example.com", None).await.is_err());
        assert!(
            limits
                .check(None, "owner@example.com", Some(&device))
                .await
                .is_ok()
        );
        // A token for another account, or a forged one, is a stranger's.
        let other = limits.device_token("other@example.com");
        assert!(
            limits
                .check(None, "owner@example.com", Some(&other))
                .await
                .is_err()
        );
        let forged = format!("{}.AAAA", device.split_once('.').unwrap().0);
        assert!(
            limits
                .check(None, "owner@example.com", Some(&forged))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn zero_turns_a_limit_off() {
        let limits = limits(0, 0);
        for _ in 0..100 {
            assert!(
                limits
                    .check(Some([127, 0, 0, 1].into()), "a@example.com", None)
                    .await
                    .is_ok()
            );
        }
    }
}
