//! SeaORM entities: the shape of each table as the code sees it. Better Auth's tables keep
//! Better Auth's camelCase column names.

pub mod account;
pub mod conversation;
pub mod message;
pub mod refresh_token;
pub mod session;
pub mod user;
