//! Accepting sessions issued by a Better Auth server that shares the database.
//!
//! Better Auth hands browsers a `better-auth.session_token` cookie holding
//! `token.signature`, URL-encoded, where the signature is base64 HMAC-SHA256 of the token
//! under `BETTER_AUTH_SECRET`. Only signed tokens are accepted here (cookie or bearer),
//! so a copy of the `session` table alone signs nobody in.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// Better Auth's default cookie prefix (`advanced.cookiePrefix`).
pub const DEFAULT_COOKIE_PREFIX: &str = "better-auth";

#[derive(Clone)]
pub struct BetterAuthVerifier {
    secret: Secret,
    /// The session cookie's names: `{prefix}.session_token`, and with the `__Secure-`
    /// prefix Better Auth adds under `useSecureCookies` (HTTPS).
    session_cookies: [String; 2],
}

impl BetterAuthVerifier {
    /// `cookie_prefix` is Better Auth's `advanced.cookiePrefix` (`BETTER_AUTH_COOKIE_PREFIX`).
    pub fn new(secret: Secret, cookie_prefix: &str) -> Self {
        let name = format!("{cookie_prefix}.session_token");
        Self {
            secret,
            session_cookies: [format!("__Secure-{name}"), name],
        }
    }

    /// Whether `name` is the session cookie.
    pub fn is_session_cookie(&self, name: &str) -> bool {
        self.session_cookies.iter().any(|cookie| cookie == name)
    }

    /// The session token inside a signed value, if the signature is right. Accepts the
    /// value URL-encoded (as in the cookie) or plain.
    pub fn verify(&self, signed: &str) -> Option<String> {
        let decoded = percent_decode(signed)?;
        let (token, signature) = decoded.rsplit_once('.')?;
        // Better Auth's own check: a base64 HMAC-SHA256 is 44 characters ending in '='.
        if token.is_empty() || signature.len() != 44 || !signature.ends_with('=') {
            return None;
        }
        let signature = STANDARD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        mac.verify_slice(&signature).ok()?;
        Some(token.to_owned())
    }

    /// Signs a token the way Better Auth does; the tests use it to stand in for a cookie a
    /// Better Auth server set.
    pub fn sign(&self, token: &str) -> String {
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        format!("{token}.{signature}")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length")
    }
}

/// Decodes `%XX` escapes (what `encodeURIComponent` produces); `None` on a broken escape.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced by better-call's `signCookieValue` (Better Auth 1.7.25) for this token
    /// and secret.
    const COOKIE: &str =
        "k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi.OKkjlRgkakRsd7JOyLdm7CV4StqZGyj9J%2BQoHjGpwNc%3D";
    const SECRET: &str = "better-auth-secret-for-tests-0123456789";

    #[test]
    fn a_cookie_signed_by_better_auth_verifies() {
        let verifier = BetterAuthVerifier::new(Secret::new(SECRET), DEFAULT_COOKIE_PREFIX);
        assert_eq!(
            verifier.verify(COOKIE).as_deref(),
            Some("k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi")
        );
        assert_eq!(verifier.sign("k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi"), COOKIE);
    }

    #[test]
    fn wrong_secret_or_tampering_is_refused() {
        let other = BetterAuthVerifier::new(Secret::new("another-secret"), DEFAULT_COOKIE_PREFIX);
        assert_eq!(other.verify(COOKIE), None);
        let verifier = BetterAuthVerifier::new(Secret::new(SECRET), DEFAULT_COOKIE_PREFIX);
        let tampered = COOKIE.replacen("k3J", "k4J", 1);
        assert_eq!(verifier.verify(&tampered), None);
        for garbage in ["", ".", "abc", "abc.%zz", "token.short=", "%"] {
            assert_eq!(verifier.verify(garbage), None, "{garbage}");
        }
    }
}
