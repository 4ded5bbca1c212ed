//! Property tests for the parsers Lectern owns: page cursors, access tokens, Better Auth
//! signed cookies and ingest chunking. Arbitrary input must never panic, and what the
//! server writes it must read back exactly.

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use lectern::auth::better_auth::{BetterAuthVerifier, DEFAULT_COOKIE_PREFIX};
use lectern::auth::tokens::TokenKeys;
use lectern::config::Secret;
use lectern::history::cursor::{self, ConversationCursor};
use lectern::retrieval::chunk::{CHUNK_CHARS, Format, chunk_document};

fn uuid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string())
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // Year 1970 to 2400, with nanoseconds.
    (0i64..13_569_465_600, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Markdown),
        Just(Format::Mdx),
        Just(Format::Html),
        Just(Format::Text)
    ]
}

/// Text built from the pieces that steer the parsers: headings, front matter, fences,
/// tags, JSX, entities, odd whitespace and non-ASCII.
fn markup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("# ".to_owned()),
        Just("## ".to_owned()),
        Just("---".to_owned()),
        Just("```".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("<h2>".to_owned()),
        Just("</h2>".to_owned()),
        Just("<script>".to_owned()),
        Just("<title>".to_owned()),
        Just("<Tabs>".to_owned()),
        Just("import X from 'y'".to_owned()),
        Just("&amp;".to_owned()),
        Just("title: ".to_owned()),
        Just("\t \u{a0}".to_owned()),
        "[a-z]{1,12}",
        "\\PC{1,8}",
    ];
    prop::collection::vec(piece, 0..200).prop_map(|pieces| pieces.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn conversation_cursors_round_trip(updated_at in timestamp(), id in uuid()) {
        let cursor = ConversationCursor { updated_at, id };
        prop_assert_eq!(ConversationCursor::decode(&cursor.encode()), Some(cursor));
    }

    #[test]
    fn message_cursors_round_trip(id in uuid()) {
        prop_assert_eq!(cursor::decode_message(&cursor::encode_message(&id)), Some(id));
    }

    #[test]
    fn arbitrary_cursors_never_panic_and_only_yield_ids(text in "\\PC{0,300}") {
        if let Some(decoded) = ConversationCursor::decode(&text) {
            prop_assert!(cursor::valid_id(&decoded.id));
        }
        if let Some(id) = cursor::decode_message(&text) {
            prop_assert!(cursor::valid_id(&id));
        }
    }

    #[test]
    fn arbitrary_base64_cursors_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        let _ = ConversationCursor::decode(&text);
        let _ = cursor::decode_message(&text);
    }

    #[test]
    fn arbitrary_tokens_are_refused(text in "\\PC{0,400}") {
        let keys = TokenKeys::new(&Secret::new("a-secret-of-at-least-thirty-two-characters"));
        prop_assert!(keys.verify(&text).is_none());
    }

    #[test]
    fn any_change_to_a_token_is_refused(position in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let keys = TokenKeys::new(&Secret::new("a-secret-of-at-least-thirty-two-characters"));
        let (token, _) = keys.issue("user-1", "session-1");
        let mut chars: Vec<char> = token.chars().collect();
        let at = position.index(chars.len());
        prop_assume!(chars[at] != replacement);
        chars[at] = replacement;
        let tampered: String = chars.into_iter().collect();
        prop_assert!(keys.verify(&tampered).is_none(), "{} accepted", tampered);
    }

    #[test]
    fn better_auth_cookies_round_trip_and_garbage_is_refused(
        token in "[A-Za-z0-9]{1,64}",
        garbage in "\\PC{0,200}",
    ) {
        let verifier = BetterAuthVerifier::new(Secret::new("better-auth-secret"), DEFAULT_COOKIE_PREFIX);
        prop_assert_eq!(verifier.verify(&verifier.sign(&token)), Some(token.clone()));
        prop_assert!(verifier.verify(&garbage).is_none());
        let other = BetterAuthVerifier::new(Secret::new("another-secret"), DEFAULT_COOKIE_PREFIX);
        prop_assert!(other.verify(&verifier.sign(&token)).is_none());
    }

    #[test]
    fn chunking_never_panics_and_numbers_bounded_chunks(text in markup(), format in format()) {
        let chunks = chunk_document(&text, format, "fallback");
        for (n, chunk) in chunks.iter().enumerate() {
            prop_assert_eq!(chunk.index, n);
            prop_assert!(!chunk.text.trim().is_empty(), "empty chunk from {:?}", text);
            prop_assert!(chunk.text.chars().count() <= CHUNK_CHARS, "oversized chunk");
            prop_assert!(!chunk.title.is_empty());
        }
    }

    #[test]
    fn plain_text_chunks_cover_every_word(words in prop::collection::vec("[a-z]{1,20}", 1..600)) {
        let text = words.join(" ");
        let chunks = chunk_document(&text, Format::Text, "t");
        for word in &words {
            prop_assert!(
                chunks.iter().any(|c| c.text.split(' ').any(|w| w == word)),
                "{} lost", word
            );
        }
        prop_assert_eq!(chunk_document(&text, Format::Text, "t"), chunks, "deterministic");
    }
}
