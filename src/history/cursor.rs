//! Opaque, stable page cursors. A conversation cursor is its position in "newest activity
//! first" order (`updatedAt`, `id`); a message cursor is the message id. Both are
//! base64url so clients treat them as opaque; a cursor never grants access by itself, the
//! owner filter stays on every query.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

const CONVERSATION_PREFIX: &str = "c1|";
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
        URL_SAFE_NO_PAD.encode(format!(
            "{CONVERSATION_PREFIX}{}|{}",
            self.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            self.id
        ))
    }

    pub fn decode(cursor: &str) -> Option<Self> {
        let text = decode(cursor)?;
        let rest = text.strip_prefix(CONVERSATION_PREFIX)?;
        let (timestamp, id) = rest.split_once('|')?;
        let updated_at = DateTime::parse_from_rfc3339(timestamp)
            .ok()?
            .with_timezone(&Utc);
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
        assert_eq!(ConversationCursor::decode(&cursor.encode()), Some(cursor));
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
