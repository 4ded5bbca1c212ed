//! Password hashing off the async workers.
//!
//! New hashes are written in the configured [`PasswordFormat`]: argon2id with the argon2
//! crate's defaults (OWASP: m=19456 KiB, t=2, p=1) as PHC strings, or Better Auth's scrypt
//! format when a Better Auth server shares the database. Both formats always verify, and
//! [`Verified::Upgrade`] tells the caller to rewrite a hash in the configured one.
//! Passwords are NFKC-normalised before hashing, as Better Auth does. Every hash runs on a small pool of threads of its own,
//! one per core, so a login storm queues instead of starving other requests. The threads
//! live as long as the hasher: each keeps argon2's 19 MiB warm in its allocator, where
//! tokio's blocking pool would hand hashes to fresh threads that fault that memory in
//! anew (a quarter of a hash's cost, measured in docs/benchmarks.md). An unknown
//! email is checked against a dummy hash so it takes as long as a wrong password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Right password, hash current.
    Yes,
    /// Right password, but the stored hash is in an older format: store a new one.
    Upgrade,
    /// Wrong password, unknown user, or an unreadable stored hash.
    No,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing thread did not answer")]
    Task,
    /// The queue is full: the caller is told to come back rather than wait for seconds.
    #[error("too many password hashes are waiting")]
    Busy,
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct PasswordHasher {
    /// One permit per core: more concurrent hashes would only add memory and latency.
    permits: Arc<Semaphore>,
    /// Hands work to the hashing threads; they end when the last clone is dropped.
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// A real argon2id hash of a random password, verified when the user is unknown.
    dummy_hash: Arc<str>,
    /// Hashes waiting or running, and how many may: a login storm is shed with
    /// `RATE_LIMITED` instead of queueing (300 queued logins waited 4–7 s each).
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// The format new hashes are written in (`PASSWORD_HASH`).
    format: PasswordFormat,
}

/// The format new password hashes are written in. Both are always verified; a hash in
/// the other format is rewritten in this one at the next sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFormat {
    /// argon2id PHC strings with the OWASP parameters.
    Argon2id,
    /// Better Auth's own `salt:key` scrypt format, so that a Better Auth server sharing
    /// the database can verify every password (it cannot verify argon2id by default).
    Scrypt,
}

/// One place in the hashing queue, given back when dropped (also when the request that
/// held it is cancelled after its hash started: the place travels with the hash).
struct QueuePlace(Arc<AtomicUsize>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordHasher {
    /// `max_queued` hashes may wait or run at once (`AUTH_HASH_QUEUE`); new hashes are
    /// written as `format`.
    pub fn new(max_queued: usize, format: PasswordFormat) -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let random: [u8; 16] = rand::random();
        let dummy_hash = hash_now(&hex(&random))?;
        // Capacity `cores`: with one permit per job in flight, sending never blocks.
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(cores);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..cores {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| HashError::Hash(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self {
            permits: Arc::new(Semaphore::new(cores)),
            jobs,
            dummy_hash: dummy_hash.into(),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued: max_queued.max(1),
            format,
        })
    }

    /// The number of hashes that may run at once.
    pub fn parallelism(&self) -> usize {
        self.permits.available_permits()
    }

    /// Hashes a new password in the configured format, NFKC-normalised first as Better
    /// Auth does, so the same password typed in another Unicode form still matches.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let normalized: String = password.nfkc().collect();
        match self.format {
            PasswordFormat::Argon2id => {
                self.on_hashing_threads(move || hash_now(&normalized))
                    .await?
            }
            PasswordFormat::Scrypt => {
                let salt = hex(&rand::random::<[u8; 16]>());
                self.on_hashing_threads(move || {
                    Ok::<_, HashError>(better_auth_scrypt_hash(&normalized, &salt))
                })
                .await?
            }
        }
    }

    /// Checks `password` against a stored hash, or against the dummy when there is none.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let password = password.to_owned();
        let (stored, known) = match stored {
            Some(s) => (s.to_owned(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        let format = self.format;
        let verdict = self
            .on_hashing_threads(move || verify_now(&password, &stored, format))
            .await?;
        Ok(if known { verdict } else { Verified::No })
    }

    async fn on_hashing_threads<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let place = QueuePlace(self.queued.clone());
        // The semaphore is never closed, so acquiring cannot fail. The permit moves into
        // the job: if the request is dropped (the client gave up), the hash already
        // running still holds its permit until it ends, so no more than `cores` hashes
        // (19 MiB each) ever run at once.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Hash(e.to_string()))?;
        let span = tracing::Span::current();
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _place = place;
            let _ = done.send(span.in_scope(work));
        });
        self.jobs.send(job).map_err(|_| HashError::Task)?;
        result.await.map_err(|_| HashError::Task)
    }
}

/// One argon2id hash with the server's parameters, on the calling thread. Request paths
/// use [`PasswordHasher::hash`]; this is public for the benchmark's login ceiling.
pub fn hash_now(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Checks a password against a stored hash of either format. `Upgrade` when it matches
/// but the hash should be written again: it is in the other format, or it is an argon2id
/// hash of the password as typed, from before passwords were normalised.
fn verify_now(password: &str, stored: &str, format: PasswordFormat) -> Verified {
    let matched = |current: bool| match current {
        true => Verified::Yes,
        false => Verified::Upgrade,
    };
    if stored.starts_with("$argon2") {
        let Ok(parsed) = PasswordHash::new(stored) else {
            tracing::warn!("stored password hash is not a valid PHC string");
            return Verified::No;
        };
        let normalized: String = password.nfkc().collect();
        let verifies = |candidate: &str| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        };
        if verifies(&normalized) {
            return matched(format == PasswordFormat::Argon2id);
        }
        if normalized != password && verifies(password) {
            return Verified::Upgrade;
        }
        return Verified::No;
    }
    match verify_better_auth_scrypt(password, stored) {
        Some(true) => matched(format == PasswordFormat::Scrypt),
        Some(false) => Verified::No,
        None => {
            tracing::warn!("stored password hash has an unknown format");
            Verified::No
        }
    }
}

/// Better Auth's format: `saltHex:keyHex`, scrypt N=16384 r=16 p=1 dkLen=64 over the
/// NFKC-normalised password. Better Auth passes the salt *as its hex string* to scrypt,
/// so the salt bytes are that string's ASCII, not the decoded bytes. `None` when `stored`
/// is not in this format.
fn verify_better_auth_scrypt(password: &str, stored: &str) -> Option<bool> {
    let (salt, key_hex) = stored.split_once(':')?;
    let expected = unhex(key_hex)?;
    if salt.is_empty() || !salt.bytes().all(|b| b.is_ascii_hexdigit()) || expected.len() != 64 {
        return None;
    }
    let params = scrypt::Params::new(14, 16, 1).ok()?;
    let normalized: String = password.nfkc().collect();
    let mut derived = [0u8; 64];
    scrypt::scrypt(
        normalized.as_bytes(),
        salt.as_bytes(),
        &params,
        &mut derived,
    )
    .ok()?;
    Some(constant_time_eq(&derived, &expected))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A hash in Better Auth's scrypt format (`PASSWORD_HASH=scrypt`); the tests also use
/// it to stand in for a database row written by a Better Auth server.
pub fn better_auth_scrypt_hash(password: &str, salt_hex: &str) -> String {
    let params = scrypt::Params::new(14, 16, 1).expect("constant scrypt parameters are valid");
    let normalized: String = password.nfkc().collect();
    let mut derived = [0u8; 64];
    scrypt::scrypt(
        normalized.as_bytes(),
        salt_hex.as_bytes(),
        &params,
        &mut derived,
    )
    .expect("64 bytes is a valid scrypt output length");
    format!("{salt_hex}:{}", hex(&derived))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_round_trip_with_owasp_parameters() {
        let hasher = PasswordHasher::new(8, PasswordFormat::Argon2id).unwrap();
        let hash = hasher.hash("correct horse battery").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(
            hasher
                .verify("correct horse battery", Some(&hash))
                .await
                .unwrap(),
            Verified::Yes
        );
        assert_eq!(
            hasher
                .verify("wrong horse battery", Some(&hash))
                .await
                .unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let hasher = PasswordHasher::new(8, PasswordFormat::Argon2id).unwrap();
        let a = hasher.hash("same password").await.unwrap();
        let b = hasher.hash("same password").await.unwrap();
        assert_ne!(a, b, "a fresh salt every time");
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let hasher = PasswordHasher::new(8, PasswordFormat::Argon2id).unwrap();
        assert_eq!(
            hasher.verify("anything at all", None).await.unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn better_auth_scrypt_hashes_verify_and_ask_for_an_upgrade() {
        let hasher = PasswordHasher::new(8, PasswordFormat::Argon2id).unwrap();
        let stored = better_auth_scrypt_hash("päss wörd 123", "0123456789abcdef0123456789abcdef");
        assert_eq!(
            hasher.verify("päss wörd 123", Some(&stored)).await.unwrap(),
            Verified::Upgrade
        );
        assert_eq!(
            hasher.verify("pass word 123", Some(&stored)).await.unwrap(),
            Verified::No
        );
    }

    /// Written by Better Auth 1.7.25's own `hashPassword` (better-auth/crypto).
    const BETTER_AUTH_HASH: &str = "267acad5588d114fc65ba7a731d5b96d:44a028f108da3213211b7d3f4bc1c2d62cb645111e2b4f5170ac019f3799ffc02db388c641e0142d3fcd40a00da8e9cfa45fbe95c96f3325e299031c7b8d88ef";
    const BETTER_AUTH_PASSWORD: &str = "päss wörd \u{FB01}ne 123";

    #[test]
    fn a_hash_written_by_better_auth_verifies() {
        assert_eq!(
            verify_better_auth_scrypt(BETTER_AUTH_PASSWORD, BETTER_AUTH_HASH),
            Some(true)
        );
        assert_eq!(
            verify_better_auth_scrypt("päss wörd fine 123", BETTER_AUTH_HASH),
            Some(true),
            "NFKC"
        );
        assert_eq!(
            verify_better_auth_scrypt("pass word fine 123", BETTER_AUTH_HASH),
            Some(false)
        );
        let (salt, _) = BETTER_AUTH_HASH.split_once(':').unwrap();
        assert_eq!(
            better_auth_scrypt_hash(BETTER_AUTH_PASSWORD, salt),
            BETTER_AUTH_HASH
        );
    }

    #[test]
    fn scrypt_is_over_the_nfkc_form() {
        // U+FB01 (the "fi" ligature) normalises to "fi" under NFKC.
        let stored = better_auth_scrypt_hash("\u{FB01}le-password", "aa");
        assert_eq!(
            verify_better_auth_scrypt("file-password", &stored),
            Some(true)
        );
    }

    #[test]
    fn garbage_hashes_are_refused_not_panicked_on() {
        for stored in ["", ":", "zz:zz", "$argon2id$nonsense", "abc:1234"] {
            assert_eq!(
                verify_now("whatever password", stored, PasswordFormat::Argon2id),
                Verified::No,
                "{stored}"
            );
        }
    }

    #[tokio::test]
    async fn scrypt_format_writes_hashes_better_auth_verifies() {
        let hasher = PasswordHasher::new(8, PasswordFormat::Scrypt).unwrap();
        let hash = hasher.hash("päss wörd ﬁne").await.unwrap();
        assert!(!hash.starts_with('$'), "{hash}");
        assert_eq!(
            verify_better_auth_scrypt("päss wörd fine", &hash),
            Some(true)
        );
        assert_eq!(
            hasher.verify("päss wörd ﬁne", Some(&hash)).await.unwrap(),
            Verified::Yes,
            "no upgrade away from the format Better Auth reads"
        );
        let argon = hash_now("päss wörd fine").unwrap();
        assert_eq!(
            hasher.verify("päss wörd fine", Some(&argon)).await.unwrap(),
            Verified::Upgrade
        );
    }

    #[tokio::test]
    async fn passwords_are_normalised_and_old_unnormalised_hashes_still_verify() {
        let hasher = PasswordHasher::new(8, PasswordFormat::Argon2id).unwrap();
        let hash = hasher.hash("ﬁne password").await.unwrap();
        assert_eq!(
            hasher.verify("fine password", Some(&hash)).await.unwrap(),
            Verified::Yes
        );
        // Written before normalisation: the password as typed.
        let legacy = hash_now("ﬁne password").unwrap();
        assert_eq!(
            hasher.verify("ﬁne password", Some(&legacy)).await.unwrap(),
            Verified::Upgrade
        );
    }
}
