//! Parse, don't validate: the inputs of registration and login as types that can only
//! hold acceptable values. Each `parse` says what is accepted when it refuses.

/// Better Auth's defaults, so both servers accept the same passwords.
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
const NAME_MAX_CHARS: usize = 100;
const EMAIL_MAX_CHARS: usize = 254;

/// An email address in the form it is stored and compared in: trimmed, NFKC-normalised
/// (so a full-width `ｄ` is a `d`) and lower-cased. Characters a reader cannot see are
/// refused rather than removed, so `dana\u{200B}@example.com` can never be a second
/// account beside `dana@example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// Invisible or look-alike-making characters: format characters (zero-width spaces and
/// joiners, soft hyphens, bidi marks and isolates, the BOM), controls, separators, private
/// use and unassigned code points, variation selectors and Hangul fillers.
fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::Control
            | GeneralCategory::SpaceSeparator
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
    ) || matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
        || c.is_whitespace()
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        use unicode_normalization::UnicodeNormalization as _;
        let email: String = raw.trim().nfkc().collect::<String>().to_lowercase();
        if email.chars().any(invisible) {
            return Err(
                "email must not contain invisible, formatting or direction characters".into(),
            );
        }
        let well_formed = email.chars().count() <= EMAIL_MAX_CHARS
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if well_formed {
            Ok(Self(email))
        } else {
            Err(format!(
                "email must be an address like reader@example.com (at most {EMAIL_MAX_CHARS} characters)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of acceptable length. Deliberately without `Debug`, so it cannot be logged
/// by accident.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "password must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters long"
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        let chars = name.chars().count();
        if (1..=NAME_MAX_CHARS).contains(&chars) && !name.chars().any(char::is_control) {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "name must be 1 to {NAME_MAX_CHARS} characters without control characters"
            ))
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Reader@Example.COM ").unwrap().as_str(),
            "reader@example.com"
        );
    }

    #[test]
    fn look_alike_emails_normalise_or_are_refused() {
        assert_eq!(
            Email::parse("ｄana@ｅxample.com").unwrap().as_str(),
            "dana@example.com"
        );
        for invisible in [
            "dana\u{200B}@example.com",
            "da\u{00AD}na@example.com",
            "\u{202E}dana@example.com",
            "dana\u{200E}@example.com",
            "dana@exa\u{2060}mple.com",
            "\u{FEFF}dana@example.com",
            "dana\u{FE0F}@example.com",
        ] {
            let err = Email::parse(invisible).unwrap_err();
            assert!(err.contains("invisible"), "{invisible:?}: {err}");
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "reader",
            "@example.com",
            "reader@",
            "reader@localhost",
            "a@b@c.com",
            "read er@example.com",
            "reader@example.com\0",
            &format!("{}@example.com", "x".repeat(250)),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().into_inner(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
    }
}
