//! A GraphQL response written as JSON by hand when it is plain data: no errors, no
//! extensions, no cache control or headers to add. serde_json escapes a string one byte
//! at a time, and writing a history page that way was a tenth of its instructions
//! (`docs/benchmarks.md` §8); here a string that needs no escaping (every id, cursor and
//! time, almost every title) is copied whole, and one that does goes through serde_json.
//! The bytes are serde_json's, as `async_graphql_axum::GraphQLResponse` would send them.
//! Anything else is sent by `GraphQLResponse` itself.

use async_graphql::Value;
use async_graphql_axum::GraphQLResponse;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub fn graphql(response: async_graphql::Response) -> Response {
    let plain = response.errors.is_empty()
        && response.extensions.is_empty()
        && response.http_headers.is_empty()
        && response.cache_control.value().is_none();
    if !plain {
        return GraphQLResponse::from(response).into_response();
    }
    let mut body = Vec::with_capacity(4096);
    body.extend_from_slice(b"{\"data\":");
    write(&mut body, &response.data);
    body.push(b'}');
    let mut sent = Response::new(axum::body::Body::from(body));
    sent.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    sent
}

/// `value` as serde_json writes it (compact).
fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::String(s) => string(out, s),
        Value::Enum(name) => string(out, name),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        Value::Object(fields) => {
            out.push(b'{');
            for (i, (name, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, name);
                out.push(b':');
                write(out, item);
            }
            out.push(b'}');
        }
        // Numbers and bytes are rare in our responses: serde_json writes them.
        Value::Number(_) | Value::Binary(_) => {
            serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail")
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::Name;
    use async_graphql::indexmap::IndexMap;
    use proptest::prelude::*;

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f\"\\\\]{0,12}".prop_map(Value::String),
            "[A-Z_]{1,8}".prop_map(|s| Value::Enum(Name::new(s))),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(|b| Value::Binary(b.into())),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec((any::<String>(), inner), 0..6).prop_map(|fields| {
                    Value::Object(
                        fields
                            .into_iter()
                            .map(|(k, v)| (Name::new(k), v))
                            .collect::<IndexMap<_, _>>(),
                    )
                }),
            ]
        })
    }

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
        fn writes_what_serde_json_writes(data in values()) {
            let mut mine = Vec::new();
            write(&mut mine, &data);
            prop_assert_eq!(
                String::from_utf8(mine).unwrap(),
                serde_json::to_string(&data).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn a_plain_response_is_the_bytes_graphql_response_sends() {
        use http_body_util::BodyExt as _;
        let data = Value::from_json(serde_json::json!({
            "conversations": { "edges": [{ "cursor": "YzJ8", "node": { "title": "Tabs\tand \"quotes\" é" } }],
                               "pageInfo": { "hasNextPage": false, "endCursor": null } }
        }))
        .unwrap();
        let body = |r: Response| async move {
            let headers = r.headers().clone();
            (headers, r.into_body().collect().await.unwrap().to_bytes())
        };
        let mine = body(graphql(async_graphql::Response::new(data.clone()))).await;
        let theirs =
            body(GraphQLResponse::from(async_graphql::Response::new(data)).into_response()).await;
        assert_eq!(mine.1, theirs.1);
        assert_eq!(mine.0, theirs.0);
    }
}
