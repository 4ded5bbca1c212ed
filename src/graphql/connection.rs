//! Relay connections (`ConversationConnection`, `MessageConnection`, their edges and
//! `PageInfo`), with the same names, fields and descriptions as async-graphql's generic
//! `Connection`, whose types resolve the fields of every edge as a set of concurrent
//! futures. Nothing on an edge or a page waits, so these resolve their fields one after
//! another: a page of 20 conversations spares about a hundred allocations
//! (`docs/benchmarks.md` §8).
//!
//! A page of conversations asked for with plain fields only (the history list's
//! everyday shape) goes further: it is written here as JSON text in one pass over the
//! selection ([`plain_page`]), without a future per field or a tree of values to build,
//! drop and walk again; anything else (a fragment, a directive, an argument, a repeated
//! response key, `messages`, `latestMessage`) is resolved by async-graphql as before.
//! Both give the same response. The text travels as [`json::JsonText`] says.

use std::borrow::Cow;

use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, Object, OutputType, Positioned, ServerResult, SimpleObject, Value,
};

use super::history::{Conversation, Message};
use crate::json;

/// Information about pagination in a connection
#[derive(SimpleObject)]
#[graphql(serial)]
pub struct PageInfo {
    /// When paginating backwards, are there more items?
    pub has_previous_page: bool,
    /// When paginating forwards, are there more items?
    pub has_next_page: bool,
    /// When paginating backwards, the cursor to continue.
    pub start_cursor: Option<String>,
    /// When paginating forwards, the cursor to continue.
    pub end_cursor: Option<String>,
}

/// A connection type, its edge, and `$view`: the connection as async-graphql resolves
/// it (by field, through the derived resolvers), under the connection's GraphQL name.
/// The connection resolves to the JSON text `$plain` writes for the selection when it
/// gives one, and as `$view` otherwise.
macro_rules! connection {
    ($connection:ident, $name:literal, $view:ident, $edge:ident, $node:ty, $plain:expr) => {
        /// An edge in a connection.
        pub struct $edge {
            /// The item at the end of the edge
            pub node: $node,
        }

        // The cursor is worked out from the node when asked for, so that a page written
        // as JSON text can write it straight into the text. (The doc comment here is the
        // type's description in the schema.)
        /// An edge in a connection.
        #[Object(serial)]
        impl $edge {
            /// The item at the end of the edge
            async fn node(&self) -> &$node {
                &self.node
            }

            /// A cursor for use in pagination
            async fn cursor(&self) -> String {
                self.node.cursor()
            }
        }

        /// One page, forward only: `hasPreviousPage` is always false (Relay allows this).
        pub struct $connection {
            pub edges: Vec<$edge>,
            pub has_next_page: bool,
        }

        impl $connection {
            fn page_info(&self) -> PageInfo {
                PageInfo {
                    has_previous_page: false,
                    has_next_page: self.has_next_page,
                    start_cursor: self.edges.first().map(|edge| edge.node.cursor()),
                    end_cursor: self.edges.last().map(|edge| edge.node.cursor()),
                }
            }
        }

        struct $view<'a>(&'a $connection);

        #[Object(name = $name, serial)]
        impl $view<'_> {
            /// Information to aid in pagination.
            async fn page_info(&self) -> PageInfo {
                self.0.page_info()
            }

            /// A list of edges.
            async fn edges(&self) -> &[$edge] {
                &self.0.edges
            }

            /// A list of nodes.
            async fn nodes(&self) -> Vec<&$node> {
                self.0.edges.iter().map(|edge| &edge.node).collect()
            }
        }

        impl OutputType for $connection {
            fn type_name() -> Cow<'static, str> {
                $view::type_name()
            }

            fn create_type_info(registry: &mut Registry) -> String {
                $view::create_type_info(registry)
            }

            async fn resolve(
                &self,
                ctx: &ContextSelectionSet<'_>,
                field: &Positioned<Field>,
            ) -> ServerResult<Value> {
                let plain: fn(&$connection, &SelectionSet) -> Option<Vec<u8>> = $plain;
                match plain(self, &ctx.item.node) {
                    Some(text) => {
                        let mut value = Value::Binary(text.into());
                        if ctx.data_opt::<json::JsonText>().is_none() {
                            json::read_back(&mut value);
                        }
                        Ok(value)
                    }
                    None => OutputType::resolve(&$view(self), ctx, field).await,
                }
            }
        }
    };
}

connection!(
    ConversationConnection,
    "ConversationConnection",
    ConversationView,
    ConversationEdge,
    Conversation,
    plain_page
);
// Messages are always resolved field by field.
connection!(
    MessageConnection,
    "MessageConnection",
    MessageView,
    MessageEdge,
    Message,
    |_, _| None
);

/// The page's JSON text as async-graphql would resolve it, when every selection in it is
/// a plain field this knows (no fragment, directive or argument, no response key twice);
/// `None` otherwise. None of these fields can fail, and the schema has no extensions
/// whose field hooks this would skip (`graphql::with_services`).
fn plain_page(page: &ConversationConnection, set: &SelectionSet) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256 + 256 * page.edges.len());
    object(&mut out, set, |out, name, set| match name {
        "__typename" => text(out, "ConversationConnection"),
        "edges" => list(out, &page.edges, |out, edge| plain_edge(out, edge, set)),
        "nodes" => list(out, &page.edges, |out, edge| edge.node.plain(out, set)),
        "pageInfo" => plain_page_info(out, page, set),
        _ => None,
    })?;
    Some(out)
}

fn plain_edge(out: &mut Vec<u8>, edge: &ConversationEdge, set: &SelectionSet) -> Option<()> {
    object(out, set, |out, name, set| match name {
        "__typename" => text(out, "ConversationEdge"),
        "cursor" => edge.node.write_cursor(out),
        "node" => edge.node.plain(out, set),
        _ => None,
    })
}

fn plain_page_info(
    out: &mut Vec<u8>,
    page: &ConversationConnection,
    set: &SelectionSet,
) -> Option<()> {
    let cursor = |out: &mut Vec<u8>, edge: Option<&ConversationEdge>| match edge {
        Some(edge) => edge.node.write_cursor(out),
        None => raw(out, b"null"),
    };
    let boolean = |out: &mut Vec<u8>, b: bool| raw(out, if b { b"true" } else { b"false" });
    object(out, set, |out, name, _| match name {
        "__typename" => text(out, "PageInfo"),
        "hasPreviousPage" => boolean(out, false),
        "hasNextPage" => boolean(out, page.has_next_page),
        "startCursor" => cursor(out, page.edges.first()),
        "endCursor" => cursor(out, page.edges.last()),
        _ => None,
    })
}

fn list<T>(
    out: &mut Vec<u8>,
    items: &[T],
    each: impl Fn(&mut Vec<u8>, &T) -> Option<()>,
) -> Option<()> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item)?;
    }
    out.push(b']');
    Some(())
}

/// The most selections [`object`] writes; a larger set goes field by field, so that the
/// check for a repeated response key stays small.
const MOST_PLAIN_FIELDS: usize = 32;

/// An object of the fields `set` selects, each written by `field` (given the field's
/// name and its own selection), in the order selected: `None` when a selection is not a
/// plain field, a response key comes twice, or `field` does not know one.
pub(super) fn object(
    out: &mut Vec<u8>,
    set: &SelectionSet,
    field: impl Fn(&mut Vec<u8>, &str, &SelectionSet) -> Option<()>,
) -> Option<()> {
    if set.items.len() > MOST_PLAIN_FIELDS {
        return None;
    }
    out.push(b'{');
    for (i, selection) in set.items.iter().enumerate() {
        let Selection::Field(f) = &selection.node else {
            return None;
        };
        let f = &f.node;
        if !f.directives.is_empty() || !f.arguments.is_empty() {
            return None;
        }
        let key = &f.response_key().node;
        // Every selection before this one is a plain field (else this returned already).
        let repeated = set.items[..i].iter().any(|earlier| {
            matches!(&earlier.node, Selection::Field(e) if e.node.response_key().node == *key)
        });
        if repeated {
            return None;
        }
        if i > 0 {
            out.push(b',');
        }
        // A name: nothing in it to escape.
        json::plain_string(out, key);
        out.push(b':');
        field(out, f.name.node.as_str(), &f.selection_set.node)?;
    }
    out.push(b'}');
    Some(())
}

/// Writes `s` as a JSON string: the field is known.
pub(super) fn text(out: &mut Vec<u8>, s: &str) -> Option<()> {
    json::string(out, s);
    Some(())
}

/// Writes `bytes`, JSON already: the field is known.
fn raw(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    out.extend_from_slice(bytes);
    Some(())
}
