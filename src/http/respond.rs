//! A GraphQL response written as JSON by hand when it is plain data: no errors, no
//! extensions, no cache control or headers to add ([`crate::json`] says why). The bytes
//! are serde_json's, as `async_graphql_axum::GraphQLResponse` would send them. Anything
//! else is sent by `GraphQLResponse` itself.
//!
//! The handler marks every request with [`json::JsonText`]: a plain page of conversations
//! then resolves to its JSON text, carried in the response as a `Value::Binary`
//! (`graphql::connection`), and is copied from there as it is; for `GraphQLResponse`,
//! such text is read back into values first.

use async_graphql::Value;
use async_graphql_axum::GraphQLResponse;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::json::{self, read_back};

pub fn graphql(mut response: async_graphql::Response) -> Response {
    let plain = response.errors.is_empty()
        && response.extensions.is_empty()
        && response.http_headers.is_empty()
        && response.cache_control.value().is_none();
    if !plain {
        read_back(&mut response.data);
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
        Value::String(s) => json::string(out, s),
        Value::Enum(name) => json::string(out, name),
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
                json::string(out, name);
                out.push(b':');
                write(out, item);
            }
            out.push(b'}');
        }
        // JSON text written by a resolver ([`json::JsonText`]).
        Value::Binary(text) => out.extend_from_slice(text),
        // Numbers are rare in our responses: serde_json writes them.
        Value::Number(_) => {
            serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail")
        }
    }
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

    /// JSON text a resolver wrote is copied into a plain response as it is, and read back
    /// into values for one with errors: the same bytes as the values would give.
    #[tokio::test]
    async fn json_text_is_sent_as_the_values_it_holds() {
        use http_body_util::BodyExt as _;
        let page = serde_json::json!({ "edges": [{ "cursor": "YzJ8", "node": { "title": "Tabs\tand \"quotes\" é" } }] });
        let with = |conversations: Value, error: bool| {
            let mut fields = async_graphql::indexmap::IndexMap::new();
            fields.insert(Name::new("conversations"), conversations);
            let mut response = async_graphql::Response::new(Value::Object(fields));
            if error {
                response
                    .errors
                    .push(async_graphql::ServerError::new("no", None));
            }
            response
        };
        let text = Value::Binary(serde_json::to_vec(&page).unwrap().into());
        let values = Value::from_json(page).unwrap();
        let body = |r: Response| async move { r.into_body().collect().await.unwrap().to_bytes() };
        for error in [false, true] {
            let mine = body(graphql(with(text.clone(), error))).await;
            let theirs =
                body(GraphQLResponse::from(with(values.clone(), error)).into_response()).await;
            assert_eq!(mine, theirs, "with an error: {error}");
        }
    }
}
