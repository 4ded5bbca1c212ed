//! `conversations`, `conversation`, `renameConversation`, `deleteConversation`, and the
//! `Conversation`/`Message` types. Every field goes through the database guard; a page of
//! conversations loads their latest messages in one extra query, and only when asked.

use async_graphql::parser::types::SelectionSet;
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::auth::{current_session, current_user_id};
use super::connection::{ConversationConnection, ConversationEdge, MessageConnection, MessageEdge};
use super::error::ApiError;
use super::guard::{database, with_database};
use crate::auth::SessionRef;
use crate::entities::{conversation, message};
use crate::history::cursor::{self, ConversationCursor};
use crate::history::{self, ConversationTitle, HistoryError, PAGE_SIZES};

impl From<HistoryError> for ApiError {
    fn from(err: HistoryError) -> Self {
        match err {
            HistoryError::NotFound => ApiError::NotFound,
            HistoryError::AlreadyRecorded => ApiError::Internal("a turn was recorded twice"),
            HistoryError::Database(e) => ApiError::Database(e),
        }
    }
}

/// A reader's conversation, with its messages.
#[derive(Clone, Debug)]
pub struct Conversation {
    model: conversation::Model,
    /// Loaded with the page when the query asks for it; `None` otherwise or when empty.
    latest: Option<message::Model>,
}

impl Conversation {
    /// This conversation's JSON text as a plain selection of its own columns resolves it
    /// (`connection::object`); `None` for anything else, `messages` and `latestMessage`
    /// included, which then go through the derived resolvers.
    pub(super) fn plain(&self, out: &mut Vec<u8>, set: &SelectionSet) -> Option<()> {
        use super::connection::{object, text};
        let model = &self.model;
        let time = |out: &mut Vec<u8>, t: &DateTime<Utc>| {
            crate::json::rfc3339(out, t);
            Some(())
        };
        object(out, set, |out, name, _| match name {
            "__typename" => text(out, "Conversation"),
            "id" => text(out, &model.id),
            "title" => text(out, &model.title),
            "createdAt" => time(out, &model.created_at),
            "updatedAt" => time(out, &model.updated_at),
            _ => None,
        })
    }

    /// Its cursor in a page of conversations.
    pub(super) fn cursor(&self) -> String {
        ConversationCursor::encode_at(self.model.updated_at, &self.model.id)
    }

    /// [`Conversation::cursor`] as a JSON string, appended to `out`.
    pub(super) fn write_cursor(&self, out: &mut Vec<u8>) -> Option<()> {
        // base64url: nothing in it to escape.
        out.push(b'"');
        ConversationCursor::write_at(out, self.model.updated_at, &self.model.id);
        out.push(b'"');
        Some(())
    }
}

impl Message {
    /// Its cursor in a page of messages.
    pub(super) fn cursor(&self) -> String {
        cursor::encode_message(&self.0.id)
    }
}

impl From<conversation::Model> for Conversation {
    fn from(model: conversation::Model) -> Self {
        Self {
            model,
            latest: None,
        }
    }
}

// Serial: every field but `messages` is at hand, and `messages` is the only one that
// waits, so resolving them one after another loses nothing and spares a set of futures
// per conversation (a page of 20 made about a hundred allocations of it).
#[Object(serial)]
impl Conversation {
    async fn id(&self) -> ID {
        ID(self.model.id.clone())
    }

    async fn title(&self) -> &str {
        &self.model.title
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }

    /// Last activity: the time of the newest message.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.model.updated_at
    }

    /// The newest message, for previews in a history list.
    async fn latest_message(&self) -> Option<Message> {
        self.latest.clone().map(Message)
    }

    /// Messages oldest first; `first` from 1 to 100.
    #[graphql(complexity = "first.unwrap_or(50).clamp(1, 100) as usize * child_complexity")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MessageConnection> {
        let first = page_size(first.unwrap_or(50))?;
        let after = after
            .map(|c| cursor::decode_message(&c).ok_or_else(|| bad_cursor("after")))
            .transpose()?;
        let conversation_id = self.model.id.clone();
        let page = with_database(ctx, |conn| async move {
            history::list_messages(&conn, &conversation_id, first, after.as_deref()).await
        })
        .await?;
        Ok(MessageConnection {
            edges: page
                .items
                .into_iter()
                .map(|m| MessageEdge { node: Message(m) })
                .collect(),
            has_next_page: page.has_next_page,
        })
    }
}

/// What `exportConversation` writes.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Markdown,
    Json,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageRole {
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Clone, Debug)]
pub struct Message(message::Model);

/// A passage an answer cites.
#[derive(SimpleObject, Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct Source {
    /// The page's title.
    pub title: String,
    /// The headings above the passage on its page, outermost first, joined with ` › `
    /// ("" before the page's first heading).
    #[serde(default)]
    pub heading: String,
    /// The page's path relative to the folder or site that was indexed.
    pub path: String,
    /// A link to the passage: the page's address (from `SITE_URL` for indexed folders)
    /// and its heading's anchor. Null when the page has no address.
    #[serde(default)]
    pub url: Option<String>,
    pub snippet: String,
    pub score: f64,
}

// Serial for the same reason as `Conversation`: nothing here waits.
#[Object(serial)]
impl Message {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn role(&self) -> MessageRole {
        match self.0.role.as_str() {
            "assistant" => MessageRole::Assistant,
            _ => MessageRole::User,
        }
    }

    async fn content(&self) -> &str {
        &self.0.content
    }

    /// The passages the answer cited (empty for the reader's own messages).
    async fn sources(&self) -> Vec<Source> {
        serde_json::from_value(self.0.sources.clone()).unwrap_or_default()
    }

    /// On an answer: the book did not seem to cover the question.
    async fn unanswered(&self) -> bool {
        self.0.unanswered
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(Default)]
pub struct HistoryQuery;

#[Object]
impl HistoryQuery {
    /// The signed-in reader's conversations, most recently active first (Relay
    /// connection). `first` from 1 to 100; `after` is an `endCursor` from an earlier page.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
        #[graphql(
            desc = "Only the conversations whose title or messages contain every word of this (1 to 200 characters, at most 16 words; stemmed, so `bee` finds `bees`)."
        )]
        search: Option<String>,
    ) -> async_graphql::Result<Option<ConversationConnection>> {
        let first = page_size(first.unwrap_or(20))?;
        let search = search
            .map(|s| history::Search::parse(&s))
            .transpose()
            .map_err(ApiError::BadUserInput)?;
        let after = after
            .map(|c| ConversationCursor::decode(&c).ok_or_else(|| bad_cursor("after")))
            .transpose()?;
        let wants_latest = ctx
            .look_ahead()
            .field("edges")
            .field("node")
            .field("latestMessage")
            .exists();
        // An access token names its session: the liveness check rides along with the page
        // query. Other credentials (a Better Auth cookie) are checked on their own first.
        let (reader, session) = match current_session(ctx)? {
            SessionRef::Id { id, user_id } => {
                (user_id.clone(), Some(SessionRef::Id { id, user_id }))
            }
            SessionRef::BetterAuthToken(_) => (current_user_id(ctx).await?, None),
        };
        let db = database(ctx)?;
        let (page, mut latest) = with_database(ctx, |conn| async move {
            let page = match session {
                Some(session) => {
                    history::list_conversations_in_session(
                        db,
                        &session,
                        &reader,
                        first,
                        after.as_ref(),
                        search.as_ref(),
                    )
                    .await?
                }
                None => Some(
                    history::list_conversations(
                        db,
                        &reader,
                        first,
                        after.as_ref(),
                        search.as_ref(),
                    )
                    .await?,
                ),
            };
            let Some(page) = page else {
                return Err(ApiError::Unauthenticated);
            };
            let latest = if wants_latest {
                let ids: Vec<String> = page.items.iter().map(|c| c.id.clone()).collect();
                // On the heap: only some pages ask for it, and inline it would enlarge
                // every page's future (`Database::run_with` says why that matters).
                Box::pin(history::latest_messages(&conn, &ids)).await?
            } else {
                Default::default()
            };
            Ok((page, latest))
        })
        .await?;
        let edges = page
            .items
            .into_iter()
            .map(|model| ConversationEdge {
                node: Conversation {
                    // Hashing each id to look it up in an empty map is work for nothing.
                    latest: if latest.is_empty() {
                        None
                    } else {
                        latest.remove(&model.id)
                    },
                    model,
                },
            })
            .collect();
        Ok(Some(ConversationConnection {
            edges,
            has_next_page: page.has_next_page,
        }))
    }

    /// One of the reader's conversations as a document to keep: Markdown (a heading,
    /// each question and answer with its sources as links) or JSON (every field of every
    /// message). Anyone else's conversation, or one that does not exist, is `NOT_FOUND`.
    async fn export_conversation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default_with = "ExportFormat::Markdown")] format: ExportFormat,
    ) -> async_graphql::Result<String> {
        let user_id = current_user_id(ctx).await?;
        let found = with_database(ctx, |conn| async move {
            let Some(conversation) = history::find_conversation(&conn, &user_id, &id).await? else {
                return Ok(None);
            };
            let messages = history::all_messages(&conn, &conversation.id).await?;
            Ok::<_, sea_orm::DbErr>(Some((conversation, messages)))
        })
        .await?;
        let (conversation, messages) = found.ok_or(ApiError::NotFound)?;
        Ok(match format {
            ExportFormat::Markdown => history::export::markdown(&conversation, &messages),
            ExportFormat::Json => history::export::json(&conversation, &messages),
        })
    }

    /// One of the signed-in reader's conversations. Anyone else's, or one that does not
    /// exist, is `NOT_FOUND`.
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Conversation>> {
        let user_id = current_user_id(ctx).await?;
        let found = with_database(ctx, |conn| async move {
            history::find_conversation(&conn, &user_id, &id).await
        })
        .await?;
        Ok(Some(found.ok_or(ApiError::NotFound)?.into()))
    }
}

#[derive(Default)]
pub struct HistoryMutation;

#[Object]
impl HistoryMutation {
    /// Renames one of the reader's conversations; the title is trimmed, 1–200 characters.
    async fn rename_conversation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        title: String,
    ) -> async_graphql::Result<Option<Conversation>> {
        let title = ConversationTitle::parse(&title).map_err(ApiError::BadUserInput)?;
        let user_id = current_user_id(ctx).await?;
        let renamed = with_database(ctx, |conn| async move {
            history::rename(&conn, &user_id, &id, &title).await
        })
        .await?;
        Ok(Some(renamed.ok_or(ApiError::NotFound)?.into()))
    }

    /// Deletes one of the reader's conversations with its messages.
    async fn delete_conversation(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let user_id = current_user_id(ctx).await?;
        let deleted = with_database(ctx, |conn| async move {
            history::delete(&conn, &user_id, &id).await
        })
        .await?;
        if deleted {
            Ok(true)
        } else {
            Err(ApiError::NotFound.into())
        }
    }
}

fn page_size(first: i32) -> Result<u64, ApiError> {
    u64::try_from(first)
        .ok()
        .filter(|n| PAGE_SIZES.contains(n))
        .ok_or_else(|| {
            ApiError::BadUserInput(format!(
                "first must be from {} to {}",
                PAGE_SIZES.start(),
                PAGE_SIZES.end()
            ))
        })
}

fn bad_cursor(argument: &str) -> ApiError {
    ApiError::BadUserInput(format!(
        "{argument} must be a cursor returned by this API (an edge's cursor or pageInfo.endCursor)"
    ))
}
