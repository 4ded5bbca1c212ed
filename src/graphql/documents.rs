//! Parsed documents that passed the shape limits, by their text.
//!
//! Clients send the same few documents over and over (a history page, a chat turn), and
//! async-graphql's parser (pest) is a large share of a small request's CPU: in the
//! profile of a flood of small documents it was a fifth of the server's time
//! (`docs/benchmarks.md`). A document seen before is taken from here, already parsed and
//! measured; only documents that passed [`limits::check`] are kept, so a refused one is
//! refused again by the full check every time.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError};

use super::limits;

/// Documents kept; the least recently used goes first.
const CAPACITY: usize = 256;

pub struct DocumentCache(Mutex<lru::LruCache<String, ExecutableDocument>>);

impl Default for DocumentCache {
    fn default() -> Self {
        Self(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CAPACITY).expect("a positive capacity"),
        )))
    }
}

impl DocumentCache {
    /// Gives the request its parsed document, from here or by parsing and checking it
    /// ([`limits::check`]); refuses it as that check does.
    pub fn prepare(&self, request: &mut Request) -> Result<(), ServerError> {
        let cached = self.lock().get(request.query.as_str()).cloned();
        if let Some(document) = cached {
            request.set_parsed_query(document);
            return Ok(());
        }
        limits::check(request)?;
        // A document that does not parse is left for execution to report; not kept.
        if let Ok(document) = request.parsed_query() {
            let document = document.clone();
            self.lock().put(request.query.clone(), document);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, ExecutableDocument>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_that_pass_are_kept_and_refused_ones_are_refused_every_time() {
        let cache = DocumentCache::default();
        let mut first = Request::new("{ health { status } }");
        cache.prepare(&mut first).unwrap();
        assert_eq!(cache.lock().len(), 1);
        let mut again = Request::new("{ health { status } }");
        cache.prepare(&mut again).unwrap();
        assert!(again.parsed_query().is_ok());
        assert_eq!(cache.lock().len(), 1);

        let deep = format!("{}{}", "{ a ".repeat(100), "}".repeat(100));
        for _ in 0..2 {
            assert!(cache.prepare(&mut Request::new(deep.clone())).is_err());
        }
        assert_eq!(cache.lock().len(), 1, "refused documents are not kept");
    }
}
