//! Parsed documents that passed the shape limits, by their text, and whether one has
//! also passed every validation rule.
//!
//! Clients send the same few documents over and over (a history page, a chat turn), and
//! async-graphql's parser (pest) is a large share of a small request's CPU: in the
//! profile of a flood of small documents it was a fifth of the server's time
//! (`docs/benchmarks.md`). A document seen before is taken from here, already parsed and
//! measured; only documents that passed [`limits::check`] are kept, so a refused one is
//! refused again by the full check every time.
//!
//! A document is marked validated once it ran without variables and without any error:
//! then every validation rule passed, and without variables each rule's outcome depends
//! on the document alone, so the same text without variables may skip them
//! ([`super::build_schema_for_validated_documents`]). A request with variables is always
//! validated in full, because an argument's type is checked against their values.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError};

use super::limits;

/// Documents kept; the least recently used goes first.
const CAPACITY: usize = 256;

pub struct DocumentCache(Mutex<lru::LruCache<String, Known>>);

struct Known {
    document: ExecutableDocument,
    /// Ran once without variables and without an error.
    validated: bool,
}

/// What the cache knew of a request's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Passed every validation rule without variables before, and this request has none:
    /// it may skip them.
    Validated,
    /// To be validated in full. With the document's text when the document is kept here
    /// and the request has no variables: a run without an error then marks it validated
    /// ([`DocumentCache::validated`]).
    Unvalidated(Option<String>),
}

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
    pub fn prepare(&self, request: &mut Request) -> Result<Prepared, ServerError> {
        let cached = self
            .lock()
            .get(request.query.as_str())
            .map(|known| (known.document.clone(), known.validated));
        let without_variables = request.variables.is_empty();
        if let Some((document, validated)) = cached {
            request.set_parsed_query(document);
            return Ok(match (validated, without_variables) {
                (true, true) => Prepared::Validated,
                (false, true) => Prepared::Unvalidated(Some(request.query.clone())),
                (_, false) => Prepared::Unvalidated(None),
            });
        }
        limits::check(request)?;
        // A document that does not parse is left for execution to report; not kept.
        if let Ok(document) = request.parsed_query() {
            let known = Known {
                document: document.clone(),
                validated: false,
            };
            self.lock().put(request.query.clone(), known);
            return Ok(Prepared::Unvalidated(
                without_variables.then(|| request.query.clone()),
            ));
        }
        Ok(Prepared::Unvalidated(None))
    }

    /// Marks `query` validated: it ran without variables and without an error.
    pub fn validated(&self, query: &str) {
        if let Some(known) = self.lock().get_mut(query) {
            known.validated = true;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Known>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_that_pass_are_kept_and_refused_ones_are_refused_every_time() {
        let cache = DocumentCache::default();
        let text = "{ health { status } }";
        let to_mark = Prepared::Unvalidated(Some(text.to_owned()));
        let mut first = Request::new(text);
        assert_eq!(cache.prepare(&mut first).unwrap(), to_mark);
        assert_eq!(cache.lock().len(), 1);
        let mut again = Request::new("{ health { status } }");
        assert_eq!(cache.prepare(&mut again).unwrap(), to_mark);
        assert!(again.parsed_query().is_ok());
        assert_eq!(cache.lock().len(), 1);

        cache.validated("{ health { status } }");
        let mut validated = Request::new("{ health { status } }");
        assert_eq!(cache.prepare(&mut validated).unwrap(), Prepared::Validated);
        let with_variables = Request::new("{ health { status } }").variables(
            async_graphql::Variables::from_json(serde_json::json!({ "n": 1 })),
        );
        assert_eq!(
            cache.prepare(&mut { with_variables }).unwrap(),
            Prepared::Unvalidated(None),
            "variables are always validated"
        );

        let deep = format!("{}{}", "{ a ".repeat(100), "}".repeat(100));
        for _ in 0..2 {
            assert!(cache.prepare(&mut Request::new(deep.clone())).is_err());
        }
        assert_eq!(cache.lock().len(), 1, "refused documents are not kept");
    }
}
