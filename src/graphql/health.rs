//! `health`: what a client or an operator can learn about the server's dependencies.
//! It never touches the database itself, so it answers during an outage too.

use async_graphql::{Context, Enum, Object, SimpleObject};

use std::sync::Arc;

use crate::chat::ChatService;
use crate::db::{Availability, Database};

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    /// The state of the server and each dependency. Works with the database down.
    async fn health(&self, ctx: &Context<'_>) -> async_graphql::Result<Health> {
        let db = ctx.data::<Database>()?;
        let chat = ctx.data::<Arc<ChatService>>()?;
        Ok(Health::of(db, chat))
    }
}

/// The overall verdict: everything needed is up, or the server is running with less.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// The state of one dependency.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// In use and answering.
    Up,
    /// In use but not answering; the server works around it where it can.
    Down,
    /// The server is still trying for the first time.
    Connecting,
    /// Not configured, so not used (for `llm`: answers are extractive).
    NotConfigured,
}

#[derive(SimpleObject, Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: HealthStatus,
    pub database: ComponentStatus,
    pub vector_store: ComponentStatus,
    pub llm: ComponentStatus,
}

impl Health {
    /// Shared by the `health` field and `/readyz`, so both always agree.
    pub fn of(db: &Database, chat: &ChatService) -> Self {
        let database = match db.availability() {
            Availability::Up => ComponentStatus::Up,
            Availability::Down => ComponentStatus::Down,
            Availability::Connecting => ComponentStatus::Connecting,
        };
        let up_or_down = |ok: bool| {
            if ok {
                ComponentStatus::Up
            } else {
                ComponentStatus::Down
            }
        };
        let vector_store = up_or_down(chat.retriever.healthy());
        let llm = chat
            .generator
            .healthy()
            .map_or(ComponentStatus::NotConfigured, up_or_down);
        let all_up = [database, vector_store, llm]
            .iter()
            .all(|c| matches!(c, ComponentStatus::Up | ComponentStatus::NotConfigured));
        Health {
            status: if all_up {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            database,
            vector_store,
            llm,
        }
    }
}
