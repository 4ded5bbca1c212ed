//! Integration tests: the built app over HTTP, like a frontend, against SQLite and a real
//! PostgreSQL (see `pg.rs` for how that one is found or started).

mod accounts;
mod better_auth;
mod chat;
mod durability;
mod fake_llm;
mod foundation;
mod generators;
mod graphiql;
mod helpers;
mod history;
mod hostile;
mod insights;
mod internet;
mod pg;
mod process;
mod proxy;
mod qdrant;
mod reliability;
mod replicas;
mod security;
mod sites;
mod ws;
