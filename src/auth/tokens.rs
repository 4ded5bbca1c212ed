//! Access tokens (short-lived HS256 JWTs) and refresh tokens (random, stored as digests).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// How long an access token works; clients refresh after that.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a session lives without being refreshed (Better Auth's default: 7 days).
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const ISSUER: &str = "lectern";
/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY: i64 = 5;
/// Access tokens remembered as verified ([`TokenKeys::verify`]): about 500 bytes each
/// (the token's ~280 characters, its claims and the LRU's links), so about 8 MB at most.
const VERIFIED_CAPACITY: usize = 16_384;

/// What a verified access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The session the token was issued for; logout and reuse detection revoke it.
    pub sid: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens that passed [`TokenKeys::verify`] in full, by their exact text, with what
    /// they say. A reader's token comes with every request for a quarter of an hour,
    /// and its signature check, two JSON parses and three base64 decodes were a sixth
    /// of a history page's instructions (`docs/benchmarks.md` §8).
    verified: Arc<Mutex<lru::LruCache<Box<str>, AccessClaims>>>,
}

impl TokenKeys {
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY as u64;
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            verified: Arc::new(Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(VERIFIED_CAPACITY).expect("a positive capacity"),
            ))),
        }
    }

    /// A random secret for development when `JWT_SECRET` is unset: tokens then stop
    /// working at every restart, which is why production refuses to start without one.
    pub fn generated() -> Secret {
        let bytes: [u8; 32] = rand::random();
        Secret::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn issue(&self, user_id: &str, session_id: &str) -> (String, DateTime<Utc>) {
        let now = Utc::now();
        let expires_at = now + ACCESS_TOKEN_TTL;
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        self.sign(&claims)
            .map(|token| (token, expires_at))
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Signs arbitrary claims; `issue` is the normal way, tests use this for edge cases.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Accepts only HS256 tokens signed with our secret, from our issuer, inside their
    /// validity window. `alg: none` and every other algorithm are refused.
    ///
    /// A token accepted before is recognised by its exact text instead of being checked
    /// again: its signature and claims cannot have changed (the secret lives as long as
    /// the process), so only its validity window is checked again, by the rule
    /// jsonwebtoken applies. Only accepted tokens are remembered, so what is kept is
    /// bounded by what this server issued, and by [`VERIFIED_CAPACITY`].
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        if let Some(claims) = self.recall(token, now) {
            return Some(claims);
        }
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .ok()?;
        self.remembered().put(token.into(), claims.clone());
        Some(claims)
    }

    /// The claims of `token` if it was verified before and is still inside its validity
    /// window at `now` (seconds since the epoch). A remembered token past its window is
    /// forgotten.
    fn recall(&self, token: &str, now: i64) -> Option<AccessClaims> {
        let mut verified = self.remembered();
        let claims = verified.get(token)?;
        if claims.exp >= now - LEEWAY && claims.nbf <= now + LEEWAY {
            return Some(claims.clone());
        }
        verified.pop(token);
        None
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Box<str>, AccessClaims>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new refresh token: 256 random bits, URL-safe.
pub fn new_refresh_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored instead of a refresh token.
pub fn digest(token: &str) -> String {
    super::password::hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&Secret::new("unit-test-secret-unit-test-secret"))
    }

    #[test]
    fn issued_tokens_verify() {
        let (token, expires_at) = keys().issue("user-1", "session-1");
        let claims = keys().verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.sid.as_str()),
            ("user-1", "session-1")
        );
        assert_eq!(claims.exp, expires_at.timestamp());
    }

    #[test]
    fn other_secrets_and_garbage_do_not_verify() {
        let (token, _) = keys().issue("user-1", "session-1");
        let other = TokenKeys::new(&Secret::new("another-secret-another-secret-xx"));
        assert!(other.verify(&token).is_none());
        for garbage in ["", "a.b.c", "not a token", &"x".repeat(10_000)] {
            assert!(keys().verify(garbage).is_none());
        }
    }

    #[test]
    fn a_token_verified_before_is_recognised_only_as_itself_and_only_while_valid() {
        let keys = keys();
        let now = Utc::now().timestamp();
        let (token, expires_at) = keys.issue("user-1", "session-1");
        assert_eq!(keys.recall(&token, now), None, "not verified yet");
        let claims = keys.verify(&token).unwrap();
        assert_eq!(keys.recall(&token, now), Some(claims.clone()));
        // Clones share what was verified.
        assert_eq!(keys.clone().recall(&token, now), Some(claims));
        // Another token (one character changed, or another reader's) is not recognised.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(keys.recall(&tampered, now), None);
        assert!(keys.verify(&tampered).is_none());
        assert_eq!(
            keys.recall(&tampered, now),
            None,
            "a refused token is not kept"
        );
        // Inside the leeway after expiry it still works; past it, it is refused and
        // forgotten, as jsonwebtoken refuses it.
        let exp = expires_at.timestamp();
        assert!(keys.recall(&token, exp + LEEWAY).is_some());
        assert_eq!(keys.recall(&token, exp + LEEWAY + 1), None);
        assert_eq!(keys.recall(&token, now), None, "forgotten once expired");
        // Not valid before `nbf` (a clock set back).
        keys.verify(&token).unwrap();
        assert_eq!(keys.recall(&token, now - LEEWAY - 1), None);
    }

    #[test]
    fn a_token_past_its_window_is_refused_and_not_kept() {
        let keys = keys();
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            sub: "user-1".into(),
            sid: "session-1".into(),
            iss: ISSUER.into(),
            iat: now - 900,
            nbf: now - 900,
            exp: now - LEEWAY - 1,
        };
        let token = keys.sign(&claims).unwrap();
        assert!(keys.verify(&token).is_none());
        assert_eq!(keys.recall(&token, now), None);
    }

    #[test]
    fn refresh_tokens_are_random_and_digests_stable() {
        let (a, b) = (new_refresh_token(), new_refresh_token());
        assert_ne!(a, b);
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(digest(&a).len(), 64);
        assert!(!digest(&a).contains(&a));
    }
}
