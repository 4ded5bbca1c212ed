//! Turning files into passages: Markdown, MDX (Docusaurus), HTML and plain text become
//! sections under their headings, and each section becomes overlapping chunks of about
//! [`CHUNK_CHARS`] characters cut at word boundaries, so a passage never loses the heading
//! it sits under and an idea split at a boundary still appears whole in one chunk.

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
    /// The document's title (front matter `title`, first `#` heading, `<title>`, or the
    /// file name).
    pub title: String,
    /// The nearest heading above the passage ("" before the first one).
    pub heading: String,
    pub text: String,
    /// Position within the document, from 0; part of the chunk's stable id.
    pub index: usize,
}

/// Splits one document into chunks. `fallback_title` is used when the document names none.
pub fn chunk_document(content: &str, format: Format, fallback_title: &str) -> Vec<Chunk> {
    let (title, sections) = match format {
        Format::Markdown | Format::Mdx => markdown_sections(content, format == Format::Mdx),
        Format::Html => html_sections(content),
        Format::Text => (None, vec![(String::new(), content.to_owned())]),
    };
    let title = title
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| fallback_title.to_owned());
    let mut chunks = Vec::new();
    for (heading, body) in sections {
        for text in windows(&normalize_whitespace(&body)) {
            chunks.push(Chunk {
                title: title.clone(),
                heading: heading.clone(),
                text,
                index: chunks.len(),
            });
        }
    }
    chunks
}

/// Markdown (and MDX) into `(title, [(heading, body)])`. Front matter is read for `title`
/// and dropped; in MDX, `import`/`export` lines and JSX tags are dropped too. Code
/// fences are kept as text but `#` lines inside them are not headings.
fn markdown_sections(content: &str, mdx: bool) -> (Option<String>, Vec<(String, String)>) {
    let mut title = None;
    let mut lines = content.lines().peekable();
    if lines.peek().map(|l| l.trim()) == Some("---") {
        lines.next();
        for line in lines.by_ref() {
            if line.trim() == "---" {
                break;
            }
            if let Some(value) = line.strip_prefix("title:") {
                title = Some(value.trim().trim_matches(['"', '\'']).to_owned());
            }
        }
    }
    let mut sections = vec![(String::new(), String::new())];
    let mut in_fence = false;
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            if mdx && (trimmed.starts_with("import ") || trimmed.starts_with("export ")) {
                continue;
            }
            let hashes = trimmed.chars().take_while(|c| *c == '#').count();
            if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
                let heading = strip_inline_markup(trimmed[hashes..].trim());
                if hashes == 1 && title.is_none() {
                    title = Some(heading.clone());
                }
                sections.push((heading, String::new()));
                continue;
            }
        }
        let text = if mdx && !in_fence {
            strip_tags(line)
        } else {
            line.to_owned()
        };
        let body = &mut sections.last_mut().expect("never empty").1;
        body.push_str(&text);
        body.push('\n');
    }
    sections.retain(|(_, body)| !body.trim().is_empty());
    (title, sections)
}

/// HTML into `(title, [(heading, body)])`: `<h1>`–`<h6>` start sections, `<script>` and
/// `<style>` are dropped, other tags become spaces, common entities are decoded.
fn html_sections(content: &str) -> (Option<String>, Vec<(String, String)>) {
    let lower = content.to_ascii_lowercase();
    let title =
        between(&lower, content, "<title", "</title>").map(|t| decode_entities(&strip_tags(t)));
    let mut sections = vec![(String::new(), String::new())];
    let mut rest = 0;
    while rest < content.len() {
        let Some(open) = lower[rest..].find('<').map(|i| rest + i) else {
            sections
                .last_mut()
                .expect("never empty")
                .1
                .push_str(&content[rest..]);
            break;
        };
        sections
            .last_mut()
            .expect("never empty")
            .1
            .push_str(&content[rest..open]);
        let tag = tag_name(&lower[open + 1..]);
        if matches!(tag.as_str(), "script" | "style" | "title" | "head") {
            let close = format!("</{tag}");
            rest = lower[open..]
                .find(&close)
                .and_then(|i| lower[open + i..].find('>').map(|j| open + i + j + 1))
                .unwrap_or(content.len());
            continue;
        }
        if tag.len() == 2 && tag.starts_with('h') && tag.as_bytes()[1].is_ascii_digit() {
            let close = format!("</{tag}");
            let start = lower[open..]
                .find('>')
                .map(|i| open + i + 1)
                .unwrap_or(content.len());
            let end = lower[start..]
                .find(&close)
                .map(|i| start + i)
                .unwrap_or(content.len());
            let heading = normalize_whitespace(&decode_entities(&strip_tags(&content[start..end])));
            sections.push((heading, String::new()));
            rest = lower[end..]
                .find('>')
                .map(|i| end + i + 1)
                .unwrap_or(content.len());
            continue;
        }
        rest = lower[open..]
            .find('>')
            .map(|i| open + i + 1)
            .unwrap_or(content.len());
        sections.last_mut().expect("never empty").1.push(' ');
    }
    let sections = sections
        .into_iter()
        .map(|(h, body)| (h, decode_entities(&body)))
        .filter(|(_, body)| !body.trim().is_empty())
        .collect();
    (title.filter(|t| !t.trim().is_empty()), sections)
}

fn tag_name(after_lt: &str) -> String {
    after_lt
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn between<'a>(lower: &str, original: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = lower.find(open)?;
    let start = start + lower[start..].find('>')? + 1;
    let end = start + lower[start..].find(close)?;
    original.get(start..end)
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn decode_entities(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Headings keep their words, not their `**`, `` ` `` or link syntax.
fn strip_inline_markup(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '*' | '`' | '_' | '[' | ']'))
        .collect::<String>()
        .trim()
        .to_owned()
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
    fn markdown_sections_keep_their_headings() {
        let doc = "---\ntitle: \"The Book\"\n---\nIntro text.\n\n# Ownership\nEvery value has an owner.\n\n```rust\n# not a heading\nlet x = 1;\n```\n## Borrowing\nReferences borrow.\n";
        let chunks = chunk_document(doc, Format::Markdown, "fallback");
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("", "Intro text."),
                (
                    "Ownership",
                    "Every value has an owner. # not a heading let x = 1;"
                ),
                ("Borrowing", "References borrow."),
            ]
        );
        assert!(chunks.iter().all(|c| c.title == "The Book"));
        assert_eq!(
            chunks.iter().map(|c| c.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn mdx_drops_imports_and_jsx() {
        let doc = "import Tabs from '@theme/Tabs';\n\n# Install\n<Tabs><TabItem value=\"a\">Run the installer.</TabItem></Tabs>\n";
        let chunks = chunk_document(doc, Format::Mdx, "install");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].title, "Install");
        assert_eq!(chunks[0].text, "Run the installer.");
    }

    #[test]
    fn html_headings_start_sections_and_scripts_vanish() {
        let doc = "<html><head><title>Guide &amp; Notes</title><style>p{}</style></head><body><h1>Start</h1><p>Hello &lt;world&gt;.</p><script>alert(1)</script><h2>Next</h2><p>More.</p></body></html>";
        let chunks = chunk_document(doc, Format::Html, "x");
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(got, [("Start", "Hello <world>."), ("Next", "More.")]);
        assert_eq!(chunks[0].title, "Guide & Notes");
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
