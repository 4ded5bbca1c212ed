//! Bounds on the shape of a GraphQL document, checked before it is validated or executed.
//!
//! Depth and complexity limits run inside validation, which walks every fragment spread
//! anew: a document of nested spreads (`fragment F0 on Query { ...F1 ...F1 }` twenty levels
//! deep) is a few hundred bytes and expands to millions of fields, so validation alone
//! took seconds of CPU and gigabytes of memory. Here the document is measured once, each
//! fragment's expanded size computed a single time and reused, so the check is linear in
//! the document's length and refuses amplification before anything else looks at it.
//!
//! Every field counts (aliases and `__typename` included), and so does every directive.
//! The raw text is scanned for bracket nesting before it is parsed at all, because the
//! parser descends recursively and a deep enough nesting would exhaust a worker's stack.

use std::collections::HashMap;

use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, Request, ServerError};

use super::error::ErrorCode;

/// Longest document accepted, in bytes (variables are not counted: they carry the
/// reader's text). GraphiQL's introspection query is under 2 KiB; parsing is the one
/// cost of a refusal that grows with the document, and this caps it (1,500 aliases in
/// 25 KiB took 4 ms to parse, `docs/benchmarks.md`).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Deepest nesting of `{`, `(` and `[` in the document text. The deepest legitimate
/// query (a history page with its messages and sources) nests about 10.
pub const MAX_NESTING: usize = 64;
/// Most fields a document may select after every fragment is expanded. GraphiQL's
/// introspection query, the largest legitimate document, expands to about 150.
pub const MAX_FIELDS: usize = 1_000;
/// Most directives after fragment expansion.
pub const MAX_DIRECTIVES: usize = 50;
/// Deepest chain of fragments spreading fragments.
pub const MAX_FRAGMENT_DEPTH: usize = 16;
/// Most variable definitions in one operation.
pub const MAX_VARIABLES: usize = 64;

/// Refuses a request whose document is too deep, too large once expanded, or has too
/// many directives or variables. Parses the document (the request keeps it, so execution
/// does not parse again); a document that does not parse is left for execution to report.
pub fn check(request: &mut Request) -> Result<(), ServerError> {
    if let Some(refused) = length_refusal(&request.query) {
        return Err(refused);
    }
    let nesting = nesting(&request.query);
    if nesting > MAX_NESTING {
        return Err(refusal(format!(
            "the document nests {nesting} levels deep; at most {MAX_NESTING} are accepted"
        )));
    }
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    let size = measure(document)?;
    if size.fields > MAX_FIELDS {
        return Err(refusal(format!(
            "the document selects more than {MAX_FIELDS} fields once its fragments are expanded"
        )));
    }
    if size.directives > MAX_DIRECTIVES {
        return Err(refusal(format!(
            "the document uses more than {MAX_DIRECTIVES} directives once its fragments are expanded"
        )));
    }
    Ok(())
}

/// The refusal of a document over [`MAX_QUERY_BYTES`], if it is.
pub fn length_refusal(query: &str) -> Option<ServerError> {
    (query.len() > MAX_QUERY_BYTES).then(|| {
        refusal(format!(
            "the document is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
            query.len()
        ))
    })
}

fn refusal(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", ErrorCode::BadUserInput.as_str());
    error
}

/// The deepest bracket nesting outside strings and comments.
fn nesting(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Fields and directives of a document with every fragment expanded where it is spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Size {
    fields: usize,
    directives: usize,
}

impl Size {
    fn add(self, other: Size) -> Size {
        Size {
            fields: self.fields.saturating_add(other.fields),
            directives: self.directives.saturating_add(other.directives),
        }
    }
}

fn measure(document: &ExecutableDocument) -> Result<Size, ServerError> {
    let mut measurer = Measurer {
        fragments: &document.fragments,
        sizes: HashMap::new(),
        visiting: Vec::new(),
    };
    let mut total = Size::default();
    for (_, operation) in document.operations.iter() {
        let variables = operation.node.variable_definitions.len();
        if variables > MAX_VARIABLES {
            return Err(refusal(format!(
                "an operation defines {variables} variables; at most {MAX_VARIABLES} are accepted"
            )));
        }
        let directives = Size {
            fields: 0,
            directives: operation.node.directives.len(),
        };
        total = total
            .add(directives)
            .add(measurer.selection_set(&operation.node.selection_set.node)?);
    }
    Ok(total)
}

struct Measurer<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    /// Each fragment's expanded size, computed once.
    sizes: HashMap<&'a str, Size>,
    /// The chain of fragments being expanded, to bound its depth and stop at cycles
    /// (which validation then reports).
    visiting: Vec<&'a str>,
}

impl<'a> Measurer<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet) -> Result<Size, ServerError> {
        let mut size = Size::default();
        for item in &set.items {
            let item_size = match &item.node {
                Selection::Field(field) => Size {
                    fields: 1,
                    directives: field.node.directives.len(),
                }
                .add(self.selection_set(&field.node.selection_set.node)?),
                Selection::InlineFragment(inline) => Size {
                    fields: 0,
                    directives: inline.node.directives.len(),
                }
                .add(self.selection_set(&inline.node.selection_set.node)?),
                Selection::FragmentSpread(spread) => Size {
                    fields: 0,
                    directives: spread.node.directives.len(),
                }
                .add(self.fragment(spread.node.fragment_name.node.as_str())?),
            };
            size = size.add(item_size);
            if size.fields > MAX_FIELDS || size.directives > MAX_DIRECTIVES {
                // Already too large: the exact figure does not matter.
                return Ok(size);
            }
        }
        Ok(size)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Size, ServerError> {
        if let Some(size) = self.sizes.get(name) {
            return Ok(*size);
        }
        let Some(definition) = self.fragments.get(name) else {
            return Ok(Size::default()); // unknown fragment: validation says so
        };
        if self.visiting.contains(&name) {
            return Ok(Size::default()); // a cycle: validation says so
        }
        if self.visiting.len() >= MAX_FRAGMENT_DEPTH {
            return Err(refusal(format!(
                "fragments spread other fragments more than {MAX_FRAGMENT_DEPTH} levels deep"
            )));
        }
        self.visiting.push(name);
        let size = Size {
            fields: 0,
            directives: definition.node.directives.len(),
        }
        .add(self.selection_set(&definition.node.selection_set.node)?);
        self.visiting.pop();
        self.sizes.insert(name, size);
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(query: &str) -> Result<(), String> {
        check(&mut Request::new(query)).map_err(|e| e.message)
    }

    /// `{ ...F0 } fragment F0 on Query { ...F1 ...F1 } … fragment Fn on Query { __typename }`
    fn doubling_fragments(levels: usize) -> String {
        let mut query = String::from("{ ...F0 }");
        for i in 0..levels {
            query.push_str(&format!(
                " fragment F{i} on Query {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        query.push_str(&format!(" fragment F{levels} on Query {{ __typename }}"));
        query
    }

    #[test]
    fn fragment_amplification_is_refused() {
        assert!(checked(&doubling_fragments(8)).is_ok(), "256 fields pass");
        let err = checked(&doubling_fragments(10)).unwrap_err();
        assert!(err.contains("1000 fields"), "{err}");
        let err = checked(&doubling_fragments(23)).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
    }

    #[test]
    fn aliases_and_directives_count() {
        let aliases: String = (0..1001).map(|i| format!("a{i}:__typename ")).collect();
        assert!(aliases.len() < MAX_QUERY_BYTES);
        assert!(
            checked(&format!("{{ {aliases} }}"))
                .unwrap_err()
                .contains("1000 fields")
        );
        let directives: String = (0..51).map(|_| "@skip(if: false) ").collect();
        assert!(checked(&format!("{{ __typename {directives} }}")).is_err());
    }

    #[test]
    fn nesting_is_measured_outside_strings_and_comments() {
        assert_eq!(nesting("{ a { b(x: [1]) } }"), 4);
        assert_eq!(nesting("{ a(s: \"{{{{\\\"{{\") # {{{{\n }"), 2);
        assert_eq!(nesting("{ a(s: \"\"\"{{{{ \\\"\"\" {{\"\"\") }"), 2);
        let deep = format!("{}{}", "{a".repeat(5_000), "}".repeat(5_000));
        assert!(checked(&deep).unwrap_err().contains("nests 5000 levels"));
        let long = format!("{}{}", "{a".repeat(100_000), "}".repeat(100_000));
        assert!(checked(&long).unwrap_err().contains("bytes long"));
    }

    #[test]
    fn many_variables_are_refused() {
        let vars: String = (0..65).map(|i| format!("$v{i}: Int ")).collect();
        assert!(checked(&format!("query({vars}) {{ __typename }}")).is_err());
    }

    #[test]
    fn ordinary_documents_pass() {
        assert!(checked("{ health { status database } me { id } }").is_ok());
        assert!(checked(include_str!("../../tests/fixtures/introspection.graphql")).is_ok());
    }
}
