//! Relay connections (`ConversationConnection`, `MessageConnection`, their edges and
//! `PageInfo`), with the same names, fields and descriptions as async-graphql's generic
//! `Connection`, whose types resolve the fields of every edge as a set of concurrent
//! futures. Nothing on an edge or a page waits, so these resolve their fields one after
//! another: a page of 20 conversations spares about a hundred allocations
//! (`docs/benchmarks.md` §8).
//!
//! A page of conversations asked for with plain fields only (the history list's
//! everyday shape) goes further and is resolved here in one pass over the selection
//! ([`plain_page`]), without a future per field; anything else (a fragment, a directive,
//! an argument, a repeated response key, `messages`, `latestMessage`) is resolved by
//! async-graphql as before. Both give the same response.

use std::borrow::Cow;

use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, Name, Object, OutputType, Positioned, ServerResult, SimpleObject, Value,
};

use super::history::{Conversation, Message};

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
/// The connection resolves as `$plain` (its value from the selection) says when that
/// gives a value, and as `$view` otherwise.
macro_rules! connection {
    ($connection:ident, $name:literal, $view:ident, $edge:ident, $node:ty, $plain:expr) => {
        /// An edge in a connection.
        #[derive(SimpleObject)]
        #[graphql(serial)]
        pub struct $edge {
            /// The item at the end of the edge
            pub node: $node,
            /// A cursor for use in pagination
            pub cursor: String,
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
                    start_cursor: self.edges.first().map(|edge| edge.cursor.clone()),
                    end_cursor: self.edges.last().map(|edge| edge.cursor.clone()),
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
                let plain: fn(&$connection, &SelectionSet) -> Option<Value> = $plain;
                match plain(self, &ctx.item.node) {
                    Some(value) => Ok(value),
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

/// The page as async-graphql would resolve it, when every selection in it is a plain
/// field this knows (no fragment, directive or argument, no response key twice); `None`
/// otherwise, before anything is built. None of these fields can fail, and the schema
/// has no extensions whose field hooks this would skip (`graphql::with_services`).
fn plain_page(page: &ConversationConnection, set: &SelectionSet) -> Option<Value> {
    object(set, |name, set| match name {
        "__typename" => Some(Value::from("ConversationConnection")),
        "edges" => list(&page.edges, |edge| plain_edge(edge, set)),
        "nodes" => list(&page.edges, |edge| edge.node.plain(set)),
        "pageInfo" => plain_page_info(&page.page_info(), set),
        _ => None,
    })
}

fn plain_edge(edge: &ConversationEdge, set: &SelectionSet) -> Option<Value> {
    object(set, |name, set| match name {
        "__typename" => Some(Value::from("ConversationEdge")),
        "cursor" => Some(Value::String(edge.cursor.clone())),
        "node" => edge.node.plain(set),
        _ => None,
    })
}

fn plain_page_info(info: &PageInfo, set: &SelectionSet) -> Option<Value> {
    let cursor = |c: &Option<String>| c.clone().map_or(Value::Null, Value::String);
    object(set, |name, _| match name {
        "__typename" => Some(Value::from("PageInfo")),
        "hasPreviousPage" => Some(Value::Boolean(info.has_previous_page)),
        "hasNextPage" => Some(Value::Boolean(info.has_next_page)),
        "startCursor" => Some(cursor(&info.start_cursor)),
        "endCursor" => Some(cursor(&info.end_cursor)),
        _ => None,
    })
}

fn list<T>(items: &[T], each: impl Fn(&T) -> Option<Value>) -> Option<Value> {
    items
        .iter()
        .map(each)
        .collect::<Option<Vec<_>>>()
        .map(Value::List)
}

/// An object of the fields `set` selects, each valued by `field` (given the field's
/// name and its own selection), in the order selected: `None` when a selection is not a
/// plain field, a response key comes twice, or `field` does not know one.
pub(super) fn object(
    set: &SelectionSet,
    field: impl Fn(&str, &SelectionSet) -> Option<Value>,
) -> Option<Value> {
    let mut map = async_graphql::indexmap::IndexMap::with_capacity(set.items.len());
    for selection in &set.items {
        let Selection::Field(f) = &selection.node else {
            return None;
        };
        let f = &f.node;
        if !f.directives.is_empty() || !f.arguments.is_empty() {
            return None;
        }
        let key: &Name = &f.response_key().node;
        let value = field(f.name.node.as_str(), &f.selection_set.node)?;
        if map.insert(key.clone(), value).is_some() {
            return None;
        }
    }
    Some(Value::Object(map))
}
