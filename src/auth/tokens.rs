//! Access tokens (short-lived HS256 JWTs) and refresh tokens (random, stored as digests).

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
}

impl TokenKeys {
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
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
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .ok()
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
    fn refresh_tokens_are_random_and_digests_stable() {
        let (a, b) = (new_refresh_token(), new_refresh_token());
        assert_ne!(a, b);
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(digest(&a).len(), 64);
        assert!(!digest(&a).contains(&a));
    }
}
