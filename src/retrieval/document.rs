//! Pages into documents: the main content of a page as sections under their heading
//! path, each with the anchor a reader's browser jumps to.
//!
//! - Markdown and MDX are read by pulldown-cmark: front matter (its `title`), ATX and
//!   setext headings, `{#id}` heading attributes, code kept as code, link and image text
//!   without their URLs, tables cell by cell. Anchors are computed as mdBook and
//!   GitHub-style slugs do (lowercase, spaces to `-`, punctuation dropped, `-1`, `-2`
//!   for repeats).
//! - HTML is parsed by html5ever (through `scraper`), so every entity is decoded and
//!   broken markup is read the way a browser reads it. Only the main content counts:
//!   the first of Docusaurus's `.theme-doc-markdown`, MkDocs Material's
//!   `article.md-content__inner`, `[role=main]` (Sphinx, MkDocs), `main` (mdBook,
//!   Starlight), `article`, falling back to `body`; inside it navigation, sidebars,
//!   footers, scripts, forms and hidden elements are dropped. Anchors are the page's
//!   own `id`s.
//! - Each generator's own shapes: Sphinx's API descriptions (`dl.py > dt.sig`) and
//!   rustdoc's method headers (`.code-header`) become sections headed by the item's
//!   name, anchored where the generator anchors them; rustdoc pages are titled by their
//!   `<title>` (`Mooring in harbour`), and its trait-implementation and `Deref` lists
//!   are left out.
//! - Pages that are not content are recognised and skipped with a reason
//!   ([`Skip`]): a generator's aggregate and utility pages (mdBook's `print.html` and
//!   `toc.html`, `404`, search and index pages, Sphinx's `contents`, rustdoc's `all`,
//!   `settings`, `help` and source pages), what generators write beside their pages
//!   (Sphinx's `_sources/`, rustdoc's `static.files/`), pages that are mostly links,
//!   pages marked `noindex`, and redirect stubs.

use std::collections::HashMap;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use scraper::{ElementRef, Html, Node, Selector};

use super::chunk::Format;

/// A page's content, ready to chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// The page's own title: front matter `title`, the first H1, or `<title>`.
    pub title: Option<String>,
    pub sections: Vec<Section>,
}

/// The text under one heading, up to the next heading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// The headings above the text, outermost first (H1, H2, H3 …).
    pub headings: Vec<String>,
    /// The fragment that links to the nearest heading, without `#`.
    pub anchor: Option<String>,
    pub text: String,
    /// The section's first sentence of prose (not code): what the section is about, in
    /// its own words, weighted above the rest of its text.
    pub lead: Option<String>,
}

/// Why a page is not indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("{0}, not content of its own")]
    Aggregate(&'static str),
    #[error("marked noindex by its generator (an aggregate or utility page)")]
    NoIndex,
    #[error("a redirect to another page")]
    Redirect,
    #[error("no text content")]
    Empty,
    #[error("the same content as {0}")]
    Duplicate(String),
    #[error("a licence or robots file, not a page")]
    Legal,
}

/// The generators' aggregate and utility pages, by file name (without extension).
const UTILITY_PAGES: [(&str, &str); 11] = [
    ("print", "the print version of the whole book"),
    ("toc", "a table of contents"),
    ("404", "a not-found page"),
    ("search", "a search page"),
    ("genindex", "a generated index"),
    ("py-modindex", "a generated index"),
    ("sitemap", "a site map"),
    // rustdoc's list of every item of a crate, its settings and help pages.
    ("all", "a list of every item"),
    ("settings", "a settings page"),
    ("help", "a help page"),
    // Sphinx's master table of contents.
    ("contents", "a table of contents"),
];

/// Folders generators write beside the pages that hold no pages of their own: Sphinx's
/// copies of every page's source (`_sources/`, raw reStructuredText), its highlighted
/// module sources (`_modules/`), static files and downloads; rustdoc's `static.files/`.
const ASSET_FOLDERS: [(&str, &str); 6] = [
    ("static.files", "a static file of rustdoc's theme"),
    (
        "_sources",
        "the source of a page (Sphinx's _sources), not the page",
    ),
    ("_modules", "highlighted source code (Sphinx's _modules)"),
    ("_static", "a static file of the site's theme"),
    ("_downloads", "a download, not a page"),
    ("_images", "an image folder"),
];

/// Share of a page's words that are link text above which the page is a table of
/// contents (Sphinx's `contents.html` and section `index.html` toctrees, mdBook's
/// `toc.html`): std's module pages, lists of items with a line each, are under 0.6.
const LINK_PAGE_SHARE: f64 = 0.75;

/// Reads one page. `path` is the page's path relative to its site, used to recognise
/// utility pages by name.
pub fn parse(content: &str, format: Format, path: &str) -> Result<Document, Skip> {
    if let Some(reason) = utility_page(path).or_else(|| asset_folder(path)) {
        return Err(Skip::Aggregate(reason));
    }
    if format == Format::Text && legal_text(path) {
        return Err(Skip::Legal);
    }
    let document = match format {
        Format::Markdown => markdown(content, false),
        Format::Mdx => markdown(content, true),
        Format::Html => html(content)?,
        Format::Text => Document {
            title: None,
            sections: vec![Section {
                text: content.to_owned(),
                ..Section::default()
            }],
        },
    };
    if document.sections.iter().all(|s| s.text.trim().is_empty()) {
        return Err(Skip::Empty);
    }
    Ok(document)
}

/// `print.html`, `search/index.html`, `404.html` and their kin.
fn utility_page(path: &str) -> Option<&'static str> {
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let file = parts.next().unwrap_or_default();
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    let stem = if stem == "index" {
        parts.next().unwrap_or_default()
    } else {
        stem
    };
    UTILITY_PAGES
        .iter()
        .find(|(name, _)| stem.eq_ignore_ascii_case(name))
        .map(|(_, reason)| *reason)
}

/// A page under one of [`ASSET_FOLDERS`].
fn asset_folder(path: &str) -> Option<&'static str> {
    path.split('/').find_map(|part| {
        ASSET_FOLDERS
            .iter()
            .find(|(name, _)| part == *name)
            .map(|(_, reason)| *reason)
    })
}

/// Text files a site ships beside its pages: the licences of its fonts and scripts
/// (mdBook's `fonts/OPEN-SANS-LICENSE.txt`), `robots.txt`.
fn legal_text(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let stem = file
        .rsplit_once('.')
        .map_or(file.as_str(), |(stem, _)| stem);
    stem == "robots"
        || ["license", "licence", "copying", "notice"]
            .iter()
            .any(|word| stem.contains(word))
}

/// Builds sections as headings and text arrive, in document order.
#[derive(Default)]
struct Sections {
    sections: Vec<Section>,
    /// The open headings: level and text, outermost first.
    stack: Vec<(u8, String)>,
    anchor: Option<String>,
    text: String,
    lead: Option<String>,
}

impl Sections {
    fn heading(&mut self, level: u8, text: String, anchor: Option<String>) {
        self.flush();
        self.stack.retain(|(open, _)| *open < level);
        self.stack.push((level, text));
        self.anchor = anchor;
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// A paragraph of the section: the first one that holds a sentence is its lead.
    fn paragraph(&mut self, text: &str) {
        if self.lead.is_none() {
            self.lead = first_sentence(text);
        }
    }

    /// A break between blocks, so words of neighbouring blocks never run together.
    fn gap(&mut self) {
        if !self.text.ends_with(char::is_whitespace) {
            self.text.push('\n');
        }
    }

    fn flush(&mut self) {
        let text = std::mem::take(&mut self.text);
        if !text.trim().is_empty() {
            self.sections.push(Section {
                headings: self.stack.iter().map(|(_, h)| h.clone()).collect(),
                anchor: self.anchor.clone(),
                text,
                lead: self.lead.take(),
            });
        }
        self.lead = None;
    }

    fn finish(mut self) -> Vec<Section> {
        self.flush();
        self.sections
    }
}

/// The first sentence of a paragraph (up to `. `, `? ` or `! `, at most 300 characters),
/// or `None` when it has fewer than three words.
fn first_sentence(paragraph: &str) -> Option<String> {
    let text = collapse(paragraph);
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '?' | '!') && text[i + 1..].starts_with(' ') {
            end = i + 1;
            break;
        }
    }
    let sentence: String = text[..end].chars().take(300).collect();
    (sentence.split_whitespace().count() >= 3).then_some(sentence)
}

fn level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

fn markdown(content: &str, mdx: bool) -> Document {
    let source = if mdx {
        without_mdx_statements(content)
    } else {
        content.to_owned()
    };
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut title = None;
    let mut first_h1 = None;
    let mut out = Sections::default();
    let mut slugs = Slugs::default();
    // Text of the heading being read, with its level and `{#id}`.
    let mut heading: Option<(u8, Option<String>, String)> = None;
    let mut in_metadata = false;
    // The text of the paragraph being read, for the section's lead.
    let mut paragraph: Option<String> = None;
    for event in Parser::new_ext(&source, options) {
        if let (Some(buffer), Event::Text(text) | Event::Code(text)) = (&mut paragraph, &event)
            && heading.is_none()
        {
            buffer.push_str(text);
        }
        match &event {
            Event::Start(Tag::Paragraph) => paragraph = Some(String::new()),
            Event::End(TagEnd::Paragraph) => {
                if let Some(text) = paragraph.take() {
                    out.paragraph(&text);
                }
            }
            _ => {}
        }
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Text(text) if in_metadata => {
                title = title.or_else(|| front_matter_title(&text));
            }
            Event::Start(Tag::Heading { level, id, .. }) => {
                heading = Some((
                    level_number(level),
                    id.map(|i| i.to_string()),
                    String::new(),
                ));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, id, text)) = heading.take() {
                    let text = collapse(&text);
                    let anchor = match id {
                        Some(id) => slugs.claim(id),
                        None => slugs.claim(slug(&text)),
                    };
                    if level == 1 && first_h1.is_none() {
                        first_h1 = Some(text.clone());
                    }
                    out.heading(level, text, Some(anchor));
                }
            }
            Event::Text(text) | Event::Code(text) => match &mut heading {
                Some((_, _, buffer)) => buffer.push_str(&text),
                None => out.push(&text),
            },
            Event::Html(html) | Event::InlineHtml(html) => {
                let text = html_text(&html);
                match &mut heading {
                    Some((_, _, buffer)) => buffer.push_str(&text),
                    None => out.push(&text),
                }
            }
            Event::SoftBreak | Event::HardBreak => match &mut heading {
                Some((_, _, buffer)) => buffer.push(' '),
                None => out.push("\n"),
            },
            Event::End(TagEnd::TableCell) => out.push(" | "),
            Event::Start(
                Tag::Paragraph
                | Tag::CodeBlock(_)
                | Tag::Item
                | Tag::TableRow
                | Tag::TableHead
                | Tag::BlockQuote(_)
                | Tag::FootnoteDefinition(_),
            )
            | Event::End(
                TagEnd::Paragraph
                | TagEnd::CodeBlock
                | TagEnd::Item
                | TagEnd::TableRow
                | TagEnd::TableHead
                | TagEnd::BlockQuote(_),
            )
            | Event::Rule => out.gap(),
            _ => {}
        }
    }
    Document {
        title: title.or(first_h1),
        sections: out.finish(),
    }
}

/// MDX's `import` and `export` statements are code for the site, not words for readers;
/// lines inside code fences are kept.
fn without_mdx_statements(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut in_fence = false;
    for line in content.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        if !in_fence && (trimmed.starts_with("import ") || trimmed.starts_with("export ")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `title: …` in YAML front matter (quotes removed).
fn front_matter_title(block: &str) -> Option<String> {
    block.lines().find_map(|line| {
        let value = line.strip_prefix("title:")?.trim();
        let value = value.trim_matches(['"', '\'']).trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The text of an HTML snippet inside Markdown (JSX in MDX reads as HTML too).
fn html_text(html: &str) -> String {
    let fragment = Html::parse_fragment(html);
    let mut text = String::new();
    for piece in fragment.root_element().text() {
        text.push_str(piece);
    }
    text
}

/// A heading's anchor as mdBook and GitHub-style slugs compute it: letters, digits, `_`
/// and `-` kept (lowercased), whitespace turned into `-`, everything else dropped.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().collect::<String>())
            } else if c.is_whitespace() {
                Some("-".to_owned())
            } else {
                None
            }
        })
        .collect()
}

/// Anchors already used on a page: a repeated heading gets `-1`, `-2` … as the
/// generators number them.
#[derive(Default)]
struct Slugs(HashMap<String, usize>);

impl Slugs {
    fn claim(&mut self, slug: String) -> String {
        let seen = self.0.entry(slug.clone()).or_insert(0);
        let claimed = if *seen == 0 {
            slug
        } else {
            format!("{slug}-{seen}")
        };
        *seen += 1;
        claimed
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where the main content is, by generator, most specific first.
const MAIN_CONTENT: [&str; 7] = [
    ".theme-doc-markdown",
    "article.md-content__inner",
    // rustdoc
    "#main-content",
    "[role=main]",
    "main",
    "article",
    "body",
];

/// Elements that are never content.
const NOT_CONTENT: [&str; 16] = [
    "script", "style", "noscript", "template", "nav", "aside", "footer", "form", "button",
    "iframe", "svg", "select", "dialog", "object", "canvas", "head",
];

/// Classes of navigation, sidebars and link decorations across generators: mdBook's
/// hidden `boring` code lines and chapter arrows, Sphinx's `¶` header links and
/// toctrees, Docusaurus's `#` links, breadcrumbs and edit buttons, tables of contents,
/// rustdoc's `§` anchors, version and source links and "Expand description" toggles,
/// Material for MkDocs' page footer.
const NOT_CONTENT_CLASSES: [&str; 21] = [
    "toctree-wrapper",
    "doc-anchor",
    "rightside",
    "sub-heading",
    "hideme",
    "rustdoc-breadcrumbs",
    "md-source-file",
    "sidebar",
    "toc",
    "table-of-contents",
    "breadcrumbs",
    "theme-doc-breadcrumbs",
    "theme-doc-toc-mobile",
    "theme-edit-this-page",
    "pagination-nav",
    "nav-chapters",
    "mobile-nav-chapters",
    "headerlink",
    "hash-link",
    "boring",
    "md-content__button",
];

/// rustdoc's lists of trait implementations (the same docs on every type that
/// implements a trait) and of methods reached through `Deref`: the page of the trait or
/// of the target type is where they belong.
fn rustdoc_borrowed(id: &str) -> bool {
    matches!(
        id,
        "trait-implementations"
            | "trait-implementations-list"
            | "synthetic-implementations"
            | "synthetic-implementations-list"
            | "blanket-implementations"
            | "blanket-implementations-list"
    ) || id.starts_with("deref-methods-")
}

/// ARIA roles of navigation and page furniture.
const NOT_CONTENT_ROLES: [&str; 5] = [
    "navigation",
    "banner",
    "contentinfo",
    "search",
    "complementary",
];

/// Block elements: their text is kept apart from their neighbours'.
const BLOCKS: [&str; 22] = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "pre",
    "blockquote",
    "table",
    "tr",
    "br",
    "hr",
    "figure",
    "figcaption",
    "details",
    "summary",
];

fn html(content: &str) -> Result<Document, Skip> {
    let page = Html::parse_document(content);
    let mut rustdoc = false;
    for meta in page.select(&selector("meta")) {
        let attr = |name: &str| {
            meta.value()
                .attr(name)
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        if attr("name") == "robots" && attr("content").contains("noindex") {
            return Err(Skip::NoIndex);
        }
        if attr("http-equiv") == "refresh" {
            return Err(Skip::Redirect);
        }
        rustdoc |= attr("name") == "generator" && attr("content") == "rustdoc";
    }
    if rustdoc
        && let Some(body) = page.select(&selector("body")).next()
        && body
            .value()
            .has_class("src", scraper::CaseSensitivity::CaseSensitive)
    {
        return Err(Skip::Aggregate("source code (rustdoc's src/)"));
    }
    let page_title = page
        .select(&selector("title"))
        .next()
        .map(|t| collapse(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty());
    // rustdoc titles its pages `read_dir in std::fs - Rust`: the item and where it lives,
    // better than the first heading's `Function read_dir`.
    if rustdoc && let Some(title) = &page_title {
        let item = title.strip_suffix(" - Rust").unwrap_or(title).to_owned();
        return html_main(&page, Some(item), true);
    }
    html_main(&page, page_title, false)
}

fn html_main(
    page: &Html,
    page_title: Option<String>,
    prefer_page_title: bool,
) -> Result<Document, Skip> {
    let Some(main) = MAIN_CONTENT
        .iter()
        .find_map(|css| page.select(&selector(css)).next())
    else {
        return Ok(Document::default());
    };
    let mut walk = HtmlWalk::default();
    walk.element(main);
    let words = walk.words.max(1) as f64;
    if walk.words >= 40 && walk.link_words as f64 / words > LINK_PAGE_SHARE {
        return Err(Skip::Aggregate("a table of contents"));
    }
    let first_h1 = walk.first_h1.take();
    let title = if prefer_page_title {
        page_title.or(first_h1)
    } else {
        first_h1.or(page_title)
    };
    Ok(Document {
        title,
        sections: walk.out.finish(),
    })
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("the built-in selectors are valid")
}

#[derive(Default)]
struct HtmlWalk {
    out: Sections,
    first_h1: Option<String>,
    /// The `id` of the `section` being read: Sphinx and others put the anchor there
    /// rather than on the heading.
    section_id: Option<String>,
    /// Words read, and words inside links: a page of links is a table of contents.
    words: usize,
    link_words: usize,
    /// Links open around the text being read.
    in_link: usize,
    /// Sphinx API descriptions (`dl.py`) open around the text being read.
    api_depth: u8,
}

impl HtmlWalk {
    fn element(&mut self, element: ElementRef) {
        for child in element.children() {
            match child.value() {
                Node::Text(text) => {
                    let words = text.split_whitespace().count();
                    self.words += words;
                    if self.in_link > 0 {
                        self.link_words += words;
                    }
                    self.out.push(text)
                }
                Node::Element(_) => {
                    if let Some(child) = ElementRef::wrap(child) {
                        self.child(child);
                    }
                }
                _ => {}
            }
        }
    }

    fn child(&mut self, element: ElementRef) {
        let value = element.value();
        let name = value.name();
        if NOT_CONTENT.contains(&name)
            || value.attr("hidden").is_some()
            || value.attr("aria-hidden") == Some("true")
            || value
                .attr("role")
                .is_some_and(|r| NOT_CONTENT_ROLES.contains(&r))
            || value.classes().any(|c| NOT_CONTENT_CLASSES.contains(&c))
            || value.id().is_some_and(rustdoc_borrowed)
            // rustdoc's `§` links beside its section headers (Docusaurus puts the same
            // class on the headings themselves, which stay).
            || (name == "a" && value.has_class("anchor", scraper::CaseSensitivity::CaseSensitive))
        {
            return;
        }
        if self.api_heading(element).is_some() {
            return;
        }
        if let Some(level) = heading_level(name) {
            let mut text = HtmlWalk::default();
            text.element(element);
            let text = collapse(&text.out.text);
            if text.is_empty() {
                return;
            }
            let anchor = value
                .attr("id")
                .map(str::to_owned)
                .or_else(|| inner_anchor(element))
                .or_else(|| self.section_id.take());
            if level == 1 && self.first_h1.is_none() {
                self.first_h1 = Some(text.clone());
            }
            self.out.heading(level, text, anchor);
            return;
        }
        match name {
            "a" => {
                self.in_link += 1;
                self.element(element);
                self.in_link -= 1;
            }
            "p" => {
                self.out.gap();
                // The paragraph's text as it was read, for the section's lead (no second
                // walk of the paragraph).
                let start = self.out.text.len();
                self.element(element);
                let read = self.out.text.get(start..).unwrap_or_default().to_owned();
                self.out.paragraph(&read);
                self.out.gap();
            }
            "dl" if value.has_class("py", scraper::CaseSensitivity::CaseSensitive) => {
                self.api_depth += 1;
                self.out.gap();
                self.element(element);
                self.out.gap();
                self.api_depth -= 1;
            }
            "section" => {
                let outer = std::mem::replace(&mut self.section_id, value.id().map(str::to_owned));
                self.out.gap();
                self.element(element);
                self.out.gap();
                self.section_id = outer;
            }
            "td" | "th" => {
                self.element(element);
                self.out.push(" | ");
            }
            "img" => {
                if let Some(alt) = value.attr("alt") {
                    self.out.push(alt);
                }
            }
            _ if BLOCKS.contains(&name) => {
                self.out.gap();
                self.element(element);
                self.out.gap();
            }
            _ => self.element(element),
        }
    }
}

impl HtmlWalk {
    /// The heading of an API item: Sphinx's `<dt class="sig" id="csv.reader">` and
    /// rustdoc's `<h4 class="code-header">pub fn <a class="fn">push_str</a>(…)</h4>`.
    /// The item's name is the heading (what a reader looks for, and what citations
    /// link to), the signature stays in the text.
    fn api_heading(&mut self, element: ElementRef) -> Option<()> {
        let value = element.value();
        let sphinx = value.name() == "dt"
            && self.api_depth > 0
            && value.has_class("sig", scraper::CaseSensitivity::CaseSensitive);
        let rustdoc = heading_level(value.name()).is_some()
            && value.has_class("code-header", scraper::CaseSensitivity::CaseSensitive);
        if !sphinx && !rustdoc {
            return None;
        }
        let name_css = if sphinx {
            ".sig-prename, .sig-name"
        } else {
            "a.fn, a.method, a.constant, a.type, a.associatedtype, a.associatedconstant"
        };
        let name: String = element
            .select(&selector(name_css))
            .flat_map(|e| e.text())
            .collect();
        let mut signature = HtmlWalk::default();
        signature.element(element);
        let signature = collapse(&signature.out.text);
        let name = if name.trim().is_empty() {
            signature.clone()
        } else {
            collapse(&name)
        };
        if name.is_empty() {
            return Some(());
        }
        let level = if sphinx {
            6 + self.api_depth
        } else {
            heading_level(value.name()).unwrap_or(6)
        };
        let anchor = value
            .attr("id")
            .map(str::to_owned)
            .or_else(|| self.section_id.take());
        self.out.heading(level, name, anchor);
        self.out.push(&signature);
        self.out.gap();
        Some(())
    }
}

fn heading_level(name: &str) -> Option<u8> {
    let digit = name.strip_prefix('h')?;
    match digit.parse::<u8>() {
        Ok(level @ 1..=6) if digit.len() == 1 => Some(level),
        _ => None,
    }
}

/// `<h2><a id="x"></a>…</h2>` and `<h2><a name="x">…</a></h2>`, older generators' way.
fn inner_anchor(heading: ElementRef) -> Option<String> {
    heading.select(&selector("a[id], a[name]")).find_map(|a| {
        a.value()
            .attr("id")
            .or_else(|| a.value().attr("name"))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(doc: &Document) -> Vec<(String, Option<&str>, String)> {
        doc.sections
            .iter()
            .map(|s| {
                (
                    s.headings.join(" › "),
                    s.anchor.as_deref(),
                    collapse(&s.text),
                )
            })
            .collect()
    }

    #[test]
    fn markdown_headings_code_links_and_tables() {
        let doc = "---\ntitle: \"The Book\"\nsidebar_position: 2\n---\nIntro with a [link](https://example.com/x) and ![a diagram](d.png).\n\nOwnership\n=========\nEvery value has an owner.\n\n```rust\n# not a heading\nlet x = 1;\n```\n\n## Borrowing *rules* {#borrow}\n| kind | count |\n|---|---|\n| shared | many |\n\nSetext two\n----------\nMore &amp; more.\n\n## Ownership\nAgain.\n";
        let parsed = parse(doc, Format::Markdown, "ch01.md").unwrap();
        assert_eq!(parsed.title.as_deref(), Some("The Book"));
        assert_eq!(
            sections(&parsed),
            [
                ("".into(), None, "Intro with a link and a diagram.".into()),
                (
                    "Ownership".into(),
                    Some("ownership"),
                    "Every value has an owner. # not a heading let x = 1;".into()
                ),
                (
                    "Ownership › Borrowing rules".into(),
                    Some("borrow"),
                    "kind | count | shared | many |".into()
                ),
                (
                    "Ownership › Setext two".into(),
                    Some("setext-two"),
                    "More & more.".into()
                ),
                (
                    "Ownership › Ownership".into(),
                    Some("ownership-1"),
                    "Again.".into()
                ),
            ]
        );
        assert!(!format!("{parsed:?}").contains("example.com"));
    }

    #[test]
    fn mdx_drops_imports_and_jsx_tags() {
        let doc = "import Tabs from '@theme/Tabs';\n\n# Install\n<Tabs><TabItem value=\"a\">Run the installer.</TabItem></Tabs>\n";
        let parsed = parse(doc, Format::Mdx, "install.mdx").unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Install"));
        assert_eq!(
            sections(&parsed),
            [(
                "Install".into(),
                Some("install"),
                "Run the installer.".into()
            )]
        );
    }

    #[test]
    fn mdbook_pages_keep_the_chapter_and_drop_the_chrome() {
        let page = r##"<!DOCTYPE html><html><head><title>Ownership - The Book</title>
<script>var x = "<h1>no</h1>";</script></head><body>
<nav id="sidebar" class="sidebar"><ol class="chapter"><li><a href="intro.html">Introduction to everything</a></li></ol></nav>
<div id="menu-bar"><h1 class="menu-title">The Book</h1></div>
<div id="content" class="content"><main>
<h1 id="ownership"><a class="header" href="#ownership">Ownership</a></h1>
<p>Rust&rsquo;s values have owners &mdash; one each &#x26; always.</p>
<pre><code class="language-rust"><span class="boring">fn main() {
</span>let s = String::new();
<span class="boring">}</span></code></pre>
<h2 id="moves"><a class="header" href="#moves">Moves</a></h2>
<p>A move transfers ownership.</p>
</main>
<nav class="nav-wrapper"><a rel="next" href="refs.html" class="mobile-nav-chapters next">Next chapter</a></nav>
</div></body></html>"##;
        let parsed = parse(page, Format::Html, "ownership.html").unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Ownership"));
        assert_eq!(
            sections(&parsed),
            [
                (
                    "Ownership".into(),
                    Some("ownership"),
                    "Rust’s values have owners — one each & always. let s = String::new();".into()
                ),
                (
                    "Ownership › Moves".into(),
                    Some("moves"),
                    "A move transfers ownership.".into()
                ),
            ]
        );
    }

    #[test]
    fn docusaurus_and_sphinx_main_content() {
        let docusaurus = r##"<html><head><title>Install | Site</title></head><body>
<nav class="navbar">Docs Blog</nav><div class="theme-doc-sidebar-container">Sidebar links</div>
<main><article><nav class="theme-doc-breadcrumbs">Home › Install</nav>
<div class="theme-doc-markdown markdown"><header><h1>Install</h1></header>
<p>Run the installer.</p><h2 class="anchor" id="linux">On Linux<a href="#linux" class="hash-link">&#8203;</a></h2><p>Use the package.</p></div>
<footer class="theme-doc-footer"><a class="theme-edit-this-page">Edit this page</a></footer></article>
<nav class="pagination-nav">Previous Next</nav></main></body></html>"##;
        let parsed = parse(docusaurus, Format::Html, "docs/install/index.html").unwrap();
        assert_eq!(
            sections(&parsed),
            [
                ("Install".into(), None, "Run the installer.".into()),
                (
                    "Install › On Linux".into(),
                    Some("linux"),
                    "Use the package.".into()
                ),
            ]
        );
        let sphinx = r##"<html><body><div class="sphinxsidebar" role="navigation">Contents</div>
<div class="body" role="main"><section id="tutorial"><h1>Tutorial<a class="headerlink" href="#tutorial">¶</a></h1>
<p>Start here.</p><section id="first-steps"><h2>First steps<a class="headerlink" href="#first-steps">¶</a></h2><p>Do this.</p></section></section></div>
<div class="footer" role="contentinfo">© 2026</div></body></html>"##;
        let parsed = parse(sphinx, Format::Html, "tutorial.html").unwrap();
        assert_eq!(
            sections(&parsed),
            [
                ("Tutorial".into(), Some("tutorial"), "Start here.".into()),
                (
                    "Tutorial › First steps".into(),
                    Some("first-steps"),
                    "Do this.".into()
                ),
            ]
        );
    }

    #[test]
    fn pages_without_a_main_element_fall_back_to_the_body() {
        let parsed = parse(
            "<p>Plain &amp; simple &eacute;t&eacute;.</p>",
            Format::Html,
            "a.html",
        )
        .unwrap();
        assert_eq!(
            sections(&parsed),
            [("".into(), None, "Plain & simple été.".into())]
        );
    }

    #[test]
    fn aggregate_utility_and_redirect_pages_are_skipped() {
        let chapter = "<main><h1 id=\"a\">A</h1><p>Text.</p></main>";
        for path in [
            "print.html",
            "toc.html",
            "404.html",
            "search.html",
            "search/index.html",
            "genindex.html",
            "contents.html",
            "all.html",
            "_sources/tutorial.rst.txt",
            "_modules/csv.html",
        ] {
            assert!(
                matches!(parse(chapter, Format::Html, path), Err(Skip::Aggregate(_))),
                "{path}"
            );
        }
        assert!(parse(chapter, Format::Html, "printing.html").is_ok());
        for path in ["fonts/OPEN-SANS-LICENSE.txt", "LICENSE.txt", "robots.txt"] {
            assert_eq!(
                parse("Permission is granted", Format::Text, path),
                Err(Skip::Legal),
                "{path}"
            );
        }
        assert!(parse("Bees dance.", Format::Text, "bees.txt").is_ok());
        let noindex = format!("<head><meta name=\"robots\" content=\"noindex\"></head>{chapter}");
        assert_eq!(
            parse(&noindex, Format::Html, "everything.html"),
            Err(Skip::NoIndex)
        );
        let redirect = "<head><meta http-equiv=\"refresh\" content=\"0; url=new.html\"></head><p>Redirecting…</p>";
        assert_eq!(
            parse(redirect, Format::Html, "old.html"),
            Err(Skip::Redirect)
        );
        assert_eq!(
            parse("<main><nav>only links</nav></main>", Format::Html, "x.html"),
            Err(Skip::Empty)
        );
    }

    #[test]
    fn slugs_follow_the_generators() {
        assert_eq!(slug("Hello, World!"), "hello-world");
        assert_eq!(slug("The `Drop` trait"), "the-drop-trait");
        assert_eq!(slug("Ünïcode héading"), "ünïcode-héading");
        let mut slugs = Slugs::default();
        assert_eq!(slugs.claim("a".into()), "a");
        assert_eq!(slugs.claim("a".into()), "a-1");
        assert_eq!(slugs.claim("a".into()), "a-2");
    }
}
