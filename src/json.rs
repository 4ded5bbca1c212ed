//! JSON text written by hand where a response is plain data, byte for byte as serde_json
//! (and chrono, for times) would write it. serde_json escapes a string one byte at a
//! time, and writing a history page that way was a tenth of its instructions
//! (`docs/benchmarks.md` §8); here a string that needs no escaping (every id, cursor and
//! time, almost every title) is copied whole, and one that does goes through serde_json.

use async_graphql::Value;
use chrono::{DateTime, Datelike, Timelike, Utc};

/// `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        quoted(out, s);
    }
}

/// `s` as a JSON string, when nothing in it can need escaping: a GraphQL name (letters,
/// digits and `_`), a base64url cursor.
pub fn plain_string(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!needs_escape(s.as_bytes()), "{s:?} needs escaping");
    quoted(out, s);
}

/// `s` between quotes, as it is.
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The last `N` decimal digits of `n`, zero-padded: times and cursors are written with
/// these rather than through `write!`'s padding.
pub fn digits<const N: usize>(mut n: u64) -> [u8; N] {
    let mut text = [b'0'; N];
    for digit in text.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    text
}

/// Whether any byte is one serde_json escapes: a control character, `"` or `\`. Eight
/// bytes at a time ("determine if a word has a byte less than n", Bit Twiddling Hacks):
/// a check of one byte at a time was most of the time spent writing a page.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        let found = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `time` as the JSON string of its `to_rfc3339()`, the text async-graphql gives a
/// `DateTime<Utc>` (`2026-12-06T15:06:21.123456+00:00`: no fraction, or 3, 6 or 9
/// digits, whichever is shortest and exact). chrono's own writer formats the fraction and
/// the offset through `write!`, and times were a twentieth of a history page's
/// instructions; years outside 0–9999 are left to it.
pub fn rfc3339(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    // Each of `DateTime`'s own accessors works out the local time anew.
    let naive = time.naive_utc();
    let (date, clock) = (naive.date(), naive.time());
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return string(out, &time.to_rfc3339());
    }
    let two = |out: &mut Vec<u8>, n: u32| out.extend_from_slice(&digits::<2>(n.into()));
    out.push(b'"');
    two(out, year as u32 / 100);
    two(out, year as u32 % 100);
    out.push(b'-');
    two(out, date.month());
    out.push(b'-');
    two(out, date.day());
    out.push(b'T');
    two(out, clock.hour());
    out.push(b':');
    two(out, clock.minute());
    out.push(b':');
    let (mut second, mut nanos) = (clock.second(), clock.nanosecond());
    // A leap second: chrono writes it as second 60.
    if nanos >= 1_000_000_000 {
        second += 1;
        nanos -= 1_000_000_000;
    }
    two(out, second);
    let shown = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    if shown > 0 {
        out.push(b'.');
        out.extend_from_slice(&digits::<9>(nanos.into())[..shown]);
    }
    out.extend_from_slice(b"+00:00\"");
}

/// Request data saying the response will be written by `http::respond::graphql`, which
/// copies a `Value::Binary` as the JSON text it holds. Nothing in the schema resolves to
/// bytes otherwise; without this mark (a WebSocket, a test executing the schema) a
/// resolver gives values instead.
pub struct JsonText;

/// JSON text that resolvers wrote, read back into values, for a writer that does not know
/// [`JsonText`].
pub fn read_back(value: &mut Value) {
    match value {
        Value::Binary(text) => {
            *value = serde_json::from_slice(text).expect("a resolver's JSON text reads back")
        }
        Value::List(items) => items.iter_mut().for_each(read_back),
        Value::Object(fields) => fields.values_mut().for_each(read_back),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn finds_exactly_the_bytes_to_escape(bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            // Mostly nothing to escape, high bytes included.
            proptest::collection::vec(0x20u8..=0xff, 0..40),
        ]) {
            let expected = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escape(&bytes), expected);
        }

        #[test]
        fn writes_strings_as_serde_json_does(s in prop_oneof![any::<String>(), "[\\x00-\\x7f\"\\\\]{0,24}"]) {
            let mut mine = Vec::new();
            string(&mut mine, &s);
            prop_assert_eq!(String::from_utf8(mine).unwrap(), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn writes_times_as_async_graphql_does(
            seconds in prop_oneof![
                // Years 0 to 9999, and beyond them on both sides.
                -62_167_219_200i64..253_402_300_800,
                -70_000_000_000i64..300_000_000_000,
            ],
            nanos in prop_oneof![
                0u32..1_000_000_000,
                (0u32..1_000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                Just(0u32),
                // A leap second (chrono allows one at second 59).
                1_000_000_000u32..2_000_000_000,
            ],
        ) {
            // chrono allows a leap second only at second 59.
            let seconds = if nanos >= 1_000_000_000 {
                seconds - seconds.rem_euclid(60) + 59
            } else {
                seconds
            };
            let time = DateTime::from_timestamp(seconds, nanos);
            prop_assume!(time.is_some(), "beyond chrono's range");
            let time = time.unwrap();
            let mut mine = Vec::new();
            rfc3339(&mut mine, &time);
            let theirs = async_graphql::ScalarType::to_value(&time).into_json().unwrap();
            prop_assert_eq!(String::from_utf8(mine).unwrap(), theirs.to_string());
        }
    }
}
