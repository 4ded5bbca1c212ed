//! The GraphQL schema: one root per feature, merged; shared services placed once in
//! schema data; limits checked before anything executes.

pub mod auth;
pub mod chat;
pub mod connection;
pub mod documents;
pub mod error;
pub mod guard;
pub mod health;
pub mod history;
pub mod insights;
pub mod limits;

use std::sync::Arc;

use async_graphql::{MergedObject, Schema, SchemaBuilder, ValidationMode};

use crate::auth::AuthService;
use crate::chat::ChatService;
use crate::config::Settings;
use crate::db::Database;

/// Deepest selection accepted: GraphiQL's introspection query (graphql-js's, with its
/// nine nested `ofType`) reaches 15; a history page with its messages and sources about
/// 8.
pub const MAX_DEPTH: usize = 16;
/// Largest query cost accepted, where list fields cost their page size times their
/// children.
pub const MAX_COMPLEXITY: usize = 2_000;
/// What one expensive field (a chat turn, a password hash) costs against
/// [`MAX_COMPLEXITY`]: at most three of them fit in one request, however many aliases.
pub const EXPENSIVE: usize = 600;

#[derive(MergedObject, Default)]
pub struct Query(
    auth::AuthQuery,
    history::HistoryQuery,
    health::HealthQuery,
    chat::ChatQuery,
    insights::InsightsQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    auth::AuthMutation,
    history::HistoryMutation,
    chat::ChatMutation,
    insights::InsightsMutation,
);

pub type LecternSchema = Schema<Query, Mutation, chat::ChatSubscription>;

fn builder() -> SchemaBuilder<Query, Mutation, chat::ChatSubscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        chat::ChatSubscription,
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
}

/// The schema the server runs, holding the services resolvers need.
pub fn build_schema(
    db: Database,
    settings: Arc<Settings>,
    auth: AuthService,
    chat: Arc<ChatService>,
) -> LecternSchema {
    with_services(builder(), db, settings, auth, chat)
}

/// The same schema, for a document that passed every validation rule before and comes
/// again without variables ([`documents::DocumentCache`]): then no rule can find
/// anything new, because without variables each one depends on the document alone. It
/// validates in async-graphql's fast mode, which still walks the document for the
/// complexity and depth limits and for fragment cycles; the other twenty rules were a
/// tenth of a history page's instructions (`docs/benchmarks.md` §8).
pub fn build_schema_for_validated_documents(
    db: Database,
    settings: Arc<Settings>,
    auth: AuthService,
    chat: Arc<ChatService>,
) -> LecternSchema {
    with_services(
        builder().validation_mode(ValidationMode::Fast),
        db,
        settings,
        auth,
        chat,
    )
}

fn with_services(
    builder: SchemaBuilder<Query, Mutation, chat::ChatSubscription>,
    db: Database,
    settings: Arc<Settings>,
    auth: AuthService,
    chat: Arc<ChatService>,
) -> LecternSchema {
    // No extensions (`SchemaBuilder::extension`): a plain history page is resolved in one
    // pass (`connection::plain_page`), which would skip their per-field hooks.
    let mut builder = builder.data(db).data(auth).data(chat);
    // Suggestions ("did you mean …") reveal the schema as surely as introspection does.
    if !settings.introspection {
        builder = builder.disable_introspection().disable_suggestions();
    }
    builder.data(settings).finish()
}

/// The SDL clients generate code from; `lectern schema` prints it and `schema.graphql`
/// holds a copy that a test keeps current.
pub fn sdl() -> String {
    builder().finish().sdl()
}
