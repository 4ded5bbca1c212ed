//! Opaque, stable page cursors. A conversation cursor is its position in "newest activity
//! first" order (`updatedAt`, `id`); a message cursor is the message id. Both are
//! base64url so clients treat them as opaque; a cursor never grants access by itself, the
//! owner filter stays on every query.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

/// `c2|{seconds}.{nanoseconds}|{id}`: the time as integers since the Unix epoch, which
/// costs a fraction of writing RFC 3339 (a page writes twenty of these).
const CONVERSATION_PREFIX: &str = "c2|";
/// `c1|{RFC 3339}|{id}`, written before; still read, so a client's cursor from before an
/// upgrade goes on working.
const CONVERSATION_PREFIX_RFC3339: &str = "c1|";
const MESSAGE_PREFIX: &str = "m1|";
/// Longer input cannot be a cursor of ours; refuse it before decoding.
const MAX_CURSOR_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationCursor {
    pub updated_at: DateTime<Utc>,
    pub id: String,
}

impl ConversationCursor {
    pub fn encode(&self) -> String {
        Self::encode_at(self.updated_at, &self.id)
    }

    /// The cursor of the conversation `id` last active at `updated_at`.
    pub fn encode_at(updated_at: DateTime<Utc>, id: &str) -> String {
        Self::with_text(updated_at, id, |text| URL_SAFE_NO_PAD.encode(text))
    }

    /// [`ConversationCursor::encode_at`], appended to `out` (JSON text being written).
    pub fn write_at(out: &mut Vec<u8>, updated_at: DateTime<Utc>, id: &str) {
        Self::with_text(updated_at, id, |text| {
            let start = out.len();
            out.resize(
                start + base64::encoded_len(text.len(), false).unwrap_or(0),
                0,
            );
            let written = URL_SAFE_NO_PAD
                .encode_slice(text, &mut out[start..])
                .expect("sized by encoded_len");
            out.truncate(start + written);
        })
    }

    /// `encode` given the cursor's text before base64. The text is put together on the
    /// stack: with `write!` (its zero padding) and base64's chunked encoder a page's
    /// twenty cursors were 7% of its instructions (`docs/benchmarks.md` §8).
    fn with_text<R>(updated_at: DateTime<Utc>, id: &str, encode: impl FnOnce(&[u8]) -> R) -> R {
        const ON_STACK: usize = 128;
        let mut text = [0u8; ON_STACK];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            text[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        // Prefix, seconds (at most 20 bytes with the sign), '.', 9 digits, '|'.
        if CONVERSATION_PREFIX.len() + 20 + 1 + 9 + 1 + id.len() > ON_STACK {
            let text = format!(
                "{CONVERSATION_PREFIX}{}.{:09}|{id}",
                updated_at.timestamp(),
                updated_at.timestamp_subsec_nanos(),
            );
            return encode(text.as_bytes());
        }
        put(CONVERSATION_PREFIX.as_bytes());
        let seconds = updated_at.timestamp();
        if seconds < 0 {
            put(b"-");
        }
        let mut digits = [0u8; 20];
        let mut rest = seconds.unsigned_abs();
        let mut first = digits.len();
        loop {
            first -= 1;
            digits[first] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        put(&digits[first..]);
        put(b".");
        put(&crate::json::digits::<9>(
            updated_at.timestamp_subsec_nanos().into(),
        ));
        put(b"|");
        put(id.as_bytes());
        encode(&text[..at])
    }

    pub fn decode(cursor: &str) -> Option<Self> {
        let text = decode(cursor)?;
        let (updated_at, id) = if let Some(rest) = text.strip_prefix(CONVERSATION_PREFIX) {
            let (timestamp, id) = rest.split_once('|')?;
            let (seconds, nanos) = timestamp.split_once('.')?;
            let nanos: u32 = nanos.parse().ok().filter(|n| *n < 1_000_000_000)?;
            (DateTime::from_timestamp(seconds.parse().ok()?, nanos)?, id)
        } else {
            let rest = text.strip_prefix(CONVERSATION_PREFIX_RFC3339)?;
            let (timestamp, id) = rest.split_once('|')?;
            let updated_at = DateTime::parse_from_rfc3339(timestamp).ok()?;
            (updated_at.with_timezone(&Utc), id)
        };
        valid_id(id).then(|| Self {
            updated_at,
            id: id.to_owned(),
        })
    }
}

pub fn encode_message(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{MESSAGE_PREFIX}{id}"))
}

pub fn decode_message(cursor: &str) -> Option<String> {
    let text = decode(cursor)?;
    let id = text.strip_prefix(MESSAGE_PREFIX)?;
    valid_id(id).then(|| id.to_owned())
}

fn decode(cursor: &str) -> Option<String> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()
}

/// Ids are UUIDs; anything else cannot be ours.
pub fn valid_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_cursors_round_trip() {
        let cursor = ConversationCursor {
            updated_at: DateTime::parse_from_rfc3339("2026-11-22T13:48:18.123456789Z")
                .unwrap()
                .with_timezone(&Utc),
            id: uuid::Uuid::now_v7().to_string(),
        };
        assert_eq!(
            ConversationCursor::decode(&cursor.encode()),
            Some(cursor.clone())
        );
        let before_epoch = ConversationCursor {
            updated_at: DateTime::from_timestamp(-1, 5).unwrap(),
            ..cursor
        };
        assert_eq!(
            ConversationCursor::decode(&before_epoch.encode()),
            Some(before_epoch)
        );
    }

    #[test]
    fn cursors_are_the_integer_form_encoded() {
        // Encoded, and appended to JSON text being written: the same.
        let encoded = |at, id: &str| {
            let cursor = ConversationCursor::encode_at(at, id);
            let mut out = b"{".to_vec();
            ConversationCursor::write_at(&mut out, at, id);
            assert_eq!(out, [b"{", cursor.as_bytes()].concat());
            cursor
        };
        let id = uuid::Uuid::now_v7().to_string();
        for (seconds, nanos) in [
            (1_796_553_180, 823_227_000),
            (0, 0),
            (-1, 5),
            (-62_135_596_800, 999_999_999),
            (253_402_300_799, 1),
        ] {
            let at = DateTime::from_timestamp(seconds, nanos).unwrap();
            let expected = URL_SAFE_NO_PAD.encode(format!("c2|{seconds}.{nanos:09}|{id}"));
            assert_eq!(encoded(at, &id), expected);
        }
        let long = "x".repeat(200);
        let at = DateTime::from_timestamp(7, 8).unwrap();
        let expected = URL_SAFE_NO_PAD.encode(format!("c2|7.000000008|{long}"));
        assert_eq!(encoded(at, &long), expected);
    }

    #[test]
    fn cursors_written_before_the_integer_form_still_read() {
        let id = uuid::Uuid::now_v7().to_string();
        let old = URL_SAFE_NO_PAD.encode(format!("c1|2026-11-22T13:48:18.123456789Z|{id}"));
        let cursor = ConversationCursor::decode(&old).unwrap();
        assert_eq!(cursor.id, id);
        assert_eq!(cursor.updated_at.timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(
            ConversationCursor::decode(&cursor.encode()),
            Some(cursor),
            "and are answered with the new form"
        );
    }

    #[test]
    fn message_cursors_round_trip() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(decode_message(&encode_message(&id)), Some(id));
    }

    #[test]
    fn foreign_and_malformed_cursors_are_refused() {
        let message = encode_message(&uuid::Uuid::now_v7().to_string());
        assert_eq!(
            ConversationCursor::decode(&message),
            None,
            "kinds do not mix"
        );
        for garbage in [
            "",
            "!!!",
            "bm9wZQ",
            &"A".repeat(10_000),
            "YzF8bm90LWEtZGF0ZXx4",
        ] {
            assert_eq!(ConversationCursor::decode(garbage), None, "{garbage}");
            assert_eq!(decode_message(garbage), None, "{garbage}");
        }
    }
}
