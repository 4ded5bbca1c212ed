//! Turning documents into passages: each section (see [`document`]) becomes overlapping
//! chunks of about [`CHUNK_CHARS`] characters cut at word boundaries, so a passage never
//! loses the heading path it sits under and an idea split at a boundary still appears
//! whole in one chunk.

use super::document::{self, Document};

/// Target size of one chunk, in characters.
pub const CHUNK_CHARS: usize = 900;
/// How much consecutive chunks of a section share.
pub const OVERLAP_CHARS: usize = 150;

/// The kinds of file `lectern ingest` reads, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Mdx,
    Html,
    Text,
}

impl Format {
    pub fn of(path: &std::path::Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Some(Self::Markdown),
            "mdx" => Some(Self::Mdx),
            "html" | "htm" => Some(Self::Html),
            "txt" | "text" => Some(Self::Text),
            _ => None,
        }
    }
}

/// One passage of a document, ready to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The document's title (front matter `title`, first H1, `<title>`, or the file
    /// name).
    pub title: String,
    /// The headings above the passage, outermost first, joined with ` › ` ("" before
    /// the first one).
    pub heading: String,
    /// The fragment of the nearest heading (its `id`), "" when there is none.
    pub anchor: String,
    pub text: String,
    /// The section's first sentence, on the section's first chunk only ("" elsewhere):
    /// weighted above the text by ranking.
    pub lead: String,
    /// Position within the document, from 0; part of the chunk's stable id.
    pub index: usize,
}

/// Separates the levels of a heading path.
pub const HEADING_SEPARATOR: &str = " › ";

/// Reads one document and splits it into chunks; a page that is not content (see
/// [`document::Skip`]) has none. `fallback_title` is used when the document names
/// none.
pub fn chunk_document(content: &str, format: Format, fallback_title: &str) -> Vec<Chunk> {
    document::parse(content, format, "")
        .map(|doc| chunk_sections(&doc, fallback_title))
        .unwrap_or_default()
}

/// Splits a parsed document into chunks.
pub fn chunk_sections(doc: &Document, fallback_title: &str) -> Vec<Chunk> {
    let title = doc
        .title
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| fallback_title.to_owned());
    let mut chunks = Vec::new();
    for section in &doc.sections {
        let heading = section.headings.join(HEADING_SEPARATOR);
        for (i, text) in windows(&normalize_whitespace(&section.text))
            .into_iter()
            .enumerate()
        {
            let lead = match (&section.lead, i) {
                (Some(lead), 0) => lead.clone(),
                _ => String::new(),
            };
            chunks.push(Chunk {
                title: title.clone(),
                heading: heading.clone(),
                anchor: section.anchor.clone().unwrap_or_default(),
                text,
                lead,
                index: chunks.len(),
            });
        }
    }
    chunks
}

fn normalize_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Overlapping windows of about `CHUNK_CHARS` characters, cut at spaces.
fn windows(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let mut end = (start + CHUNK_CHARS).min(chars.len());
        if end < chars.len() {
            // Back up to the last space, unless that would leave too little.
            if let Some(space) = chars[start..end].iter().rposition(|c| *c == ' ')
                && space > CHUNK_CHARS / 2
            {
                end = start + space;
            }
        }
        out.push(
            chars[start..end]
                .iter()
                .collect::<String>()
                .trim()
                .to_owned(),
        );
        if end >= chars.len() {
            break;
        }
        let mut next = end.saturating_sub(OVERLAP_CHARS).max(start + 1);
        // Start the next window at a word.
        while next < end && chars[next - 1] != ' ' {
            next += 1;
        }
        start = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_become_chunks_with_their_heading_path_and_anchor() {
        let doc = "# Ownership\nEvery value has an owner.\n## Borrowing\nReferences borrow.\n";
        let chunks = chunk_document(doc, Format::Markdown, "fallback");
        let got: Vec<(&str, &str, &str, &str, usize)> = chunks
            .iter()
            .map(|c| {
                (
                    c.title.as_str(),
                    c.heading.as_str(),
                    c.anchor.as_str(),
                    c.text.as_str(),
                    c.index,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Ownership",
                    "Ownership",
                    "ownership",
                    "Every value has an owner.",
                    0
                ),
                (
                    "Ownership",
                    "Ownership › Borrowing",
                    "borrowing",
                    "References borrow.",
                    1
                ),
            ]
        );
    }

    #[test]
    fn long_sections_become_overlapping_windows() {
        let words: Vec<String> = (0..600).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let chunks = chunk_document(&text, Format::Text, "plain");
        assert!(chunks.len() > 2);
        for pair in chunks.windows(2) {
            assert!(pair[0].text.chars().count() <= CHUNK_CHARS);
            let last_words: Vec<&str> = pair[0].text.split(' ').rev().take(5).collect();
            assert!(
                last_words.iter().all(|w| pair[1].text.contains(w)),
                "overlap"
            );
        }
        // Every word survives somewhere, whole.
        for w in &words {
            assert!(
                chunks.iter().any(|c| c.text.split(' ').any(|x| x == w)),
                "{w}"
            );
        }
        assert_eq!(chunks[0].title, "plain");
    }

    #[test]
    fn empty_and_whitespace_documents_have_no_chunks() {
        assert!(chunk_document("", Format::Markdown, "x").is_empty());
        assert!(chunk_document("   \n\n ", Format::Text, "x").is_empty());
        assert!(chunk_document("<html></html>", Format::Html, "x").is_empty());
    }
}
