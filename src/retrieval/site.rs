//! Where a site's pages come from: a folder as the generator wrote it, a `sitemap.xml`,
//! or the URL of a running site, crawled inside its prefix.
//!
//! Every page gets a `path` relative to its root (what sources show and what re-runs
//! compare) and, from the web, the `url` it was fetched from. Web pages are fetched with
//! bounded concurrency, only where the site's `robots.txt` allows (RFC 9309: a
//! `robots.txt` that cannot be read for a server or network error forbids everything,
//! so nothing is fetched and nothing already indexed is removed).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use scraper::{Html, Selector};
use texting_robots::Robot;
use tokio::sync::mpsc;
use url::Url;

use super::chunk::Format;

/// What `lectern ingest` is pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file or a folder on this machine.
    Folder(PathBuf),
    /// A `sitemap.xml` (or a sitemap index) on the web; its pages are fetched.
    Sitemap(Url),
    /// A running site: the page at this URL and every page linked from it under the
    /// same prefix.
    Site(Url),
}

impl Location {
    /// `http(s)://…/….xml` is a sitemap, another `http(s)://` URL a site to crawl, and
    /// anything else a path.
    pub fn parse(argument: &str) -> Result<Self, String> {
        if argument.starts_with("http://") || argument.starts_with("https://") {
            let url = Url::parse(argument).map_err(|e| format!("{argument}: {e}"))?;
            if url.path().ends_with(".xml") {
                Ok(Self::Sitemap(url))
            } else {
                Ok(Self::Site(url))
            }
        } else {
            Ok(Self::Folder(PathBuf::from(argument)))
        }
    }

    /// The key every page of this location is stored under: the folder as given, or
    /// the URL prefix its pages share.
    pub fn root_key(&self) -> String {
        match self {
            Self::Folder(path) => display_path(path).trim_end_matches('/').to_owned(),
            Self::Sitemap(url) | Self::Site(url) => {
                prefix_of(url).as_str().trim_end_matches('/').to_owned()
            }
        }
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Self::Folder(path)
    }
}

/// One page, or why it could not be read.
#[derive(Debug)]
pub enum Fetched {
    Page(Page),
    /// It could not be read this time (network, server error, not UTF-8): the copy
    /// indexed before, if any, is kept.
    Failed {
        path: String,
        reason: String,
    },
    /// Not read, on purpose (a link out of the corpus, forbidden by robots.txt): an
    /// earlier copy is removed.
    Refused {
        path: String,
        reason: String,
    },
}

#[derive(Debug)]
pub struct Page {
    /// Relative to the root, forward slashes.
    pub path: String,
    /// Where a reader opens it: absolute for web pages; for files, the path the
    /// generator publishes it at, relative to `SITE_URL`.
    pub url: String,
    pub format: Format,
    pub content: String,
}

/// How many web pages are fetched at once.
pub const CONCURRENCY: usize = 4;
/// A crawl stops after this many pages.
pub const MAX_PAGES: usize = 20_000;
/// Pages larger than this are not read.
const MAX_PAGE_BYTES: usize = 10 << 20;
const USER_AGENT: &str = concat!("lectern/", env!("CARGO_PKG_VERSION"));

/// Starts reading a location; pages arrive on the returned channel in no particular
/// order, the number found so far on the second. An error means nothing can be read
/// (the folder is missing, robots.txt is unreachable, the sitemap is not one).
pub async fn read(
    location: &Location,
) -> Result<(mpsc::Receiver<Fetched>, mpsc::UnboundedReceiver<usize>), String> {
    let (pages, received) = mpsc::channel(CONCURRENCY * 2);
    let (found, found_rx) = mpsc::unbounded_channel();
    match location {
        Location::Folder(root) => {
            let listed = list_folder(root)?;
            let _ = found.send(listed.len());
            tokio::spawn(async move {
                for item in listed {
                    let fetched = match item {
                        Listed::File { file, path } => read_file(&file, path),
                        Listed::Refused { path, reason } => Fetched::Refused { path, reason },
                    };
                    if pages.send(fetched).await.is_err() {
                        break;
                    }
                }
            });
        }
        Location::Sitemap(url) => {
            let web = Web::new(url).await?;
            let urls = web.sitemap(url).await?;
            let _ = found.send(urls.len());
            tokio::spawn(async move { web.fetch_all(urls, false, pages, found).await });
        }
        Location::Site(url) => {
            let web = Web::new(url).await?;
            let _ = found.send(1);
            // `https://site/book` starts at the folder `https://site/book/`.
            let start = match web.relative(url) {
                Some(_) => vec![url.clone()],
                None => vec![web.prefix.clone()],
            };
            tokio::spawn(async move { web.fetch_all(start, true, pages, found).await });
        }
    }
    Ok((received, found_rx))
}

/// What [`list_folder`] found.
enum Listed {
    File { file: PathBuf, path: String },
    Refused { path: String, reason: String },
}

/// Supported files under `root` (or `root` itself), skipping hidden entries and
/// `node_modules`, sorted. Symbolic links are never followed: a link to a file elsewhere
/// on the server would make that file quotable by anyone who can chat, and a file or
/// directory linked from inside the root is reached through its real place.
fn list_folder(root: &Path) -> Result<Vec<Listed>, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if meta.is_file() {
        let name = root.file_name().map(|n| n.to_string_lossy().into_owned());
        return Ok(match Format::of(root) {
            Some(_) => vec![Listed::File {
                file: root.to_owned(),
                path: name.unwrap_or_default(),
            }],
            None => Vec::new(),
        });
    }
    let real_root = root.canonicalize().map_err(|e| e.to_string())?;
    let mut listed = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "node_modules" {
                continue;
            }
            let file = entry.path();
            let path = display_path(file.strip_prefix(root).unwrap_or(&file));
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                pending.push(file);
                continue;
            }
            if Format::of(&file).is_none() {
                continue;
            }
            if kind.is_symlink() {
                let reason = match file.canonicalize() {
                    Ok(target) if target.is_dir() => continue,
                    Ok(target) if target.starts_with(&real_root) => format!(
                        "a link to {}, which is indexed under its own path",
                        display_path(target.strip_prefix(&real_root).unwrap_or(&target))
                    ),
                    _ => "a link that leads out of the corpus".into(),
                };
                listed.push(Listed::Refused { path, reason });
                continue;
            }
            listed.push(Listed::File { file, path });
        }
    }
    listed.sort_by(|a, b| listed_path(a).cmp(listed_path(b)));
    Ok(listed)
}

fn listed_path(item: &Listed) -> &str {
    match item {
        Listed::File { path, .. } | Listed::Refused { path, .. } => path,
    }
}

fn read_file(file: &Path, path: String) -> Fetched {
    let format = Format::of(file).unwrap_or(Format::Text);
    match std::fs::read(file).map(String::from_utf8) {
        Ok(Ok(content)) => Fetched::Page(Page {
            url: published_path(&path, format),
            path,
            format,
            content,
        }),
        Ok(Err(_)) => Fetched::Failed {
            path,
            reason: "not UTF-8 text".into(),
        },
        Err(e) => Fetched::Failed {
            path,
            reason: e.to_string(),
        },
    }
}

/// Where a generator publishes a source file: HTML and text as they are; Markdown the
/// way mdBook does (`x.md` → `x.html`, `README.md` → `index.html`).
fn published_path(path: &str, format: Format) -> String {
    match format {
        Format::Markdown | Format::Mdx => {
            let stem = path.rsplit_once('.').map_or(path, |(stem, _)| stem);
            match stem.rsplit_once('/') {
                Some((dir, "README")) => format!("{dir}/index.html"),
                None if stem == "README" => "index.html".to_owned(),
                _ => format!("{stem}.html"),
            }
        }
        Format::Html | Format::Text => path.to_owned(),
    }
}

/// Paths as readers see them in sources: forward slashes, no leading `./`.
pub fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    text.strip_prefix("./").unwrap_or(&text).to_owned()
}

/// The part of a URL its site's pages share: up to the last `/` of the path, or the
/// whole path when its last segment has no extension (`/book` is the folder `/book/`).
fn prefix_of(url: &Url) -> Url {
    let mut prefix = url.clone();
    prefix.set_query(None);
    prefix.set_fragment(None);
    let path = prefix.path().to_owned();
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.is_empty() {
        return prefix;
    }
    if last.contains('.') {
        prefix.set_path(&path[..path.len() - last.len()]);
    } else {
        prefix.set_path(&format!("{path}/"));
    }
    prefix
}

/// Fetching pages of one site.
struct Web {
    http: reqwest::Client,
    prefix: Url,
    robots: Option<Robot>,
}

impl Web {
    async fn new(url: &Url) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let robots_url = url.join("/robots.txt").map_err(|e| format!("{url}: {e}"))?;
        let robots = match http.get(robots_url.clone()).send().await {
            Ok(response) if response.status().is_success() => {
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| format!("{robots_url}: {}", e.without_url()))?;
                Robot::new(USER_AGENT, &body).ok()
            }
            Ok(response) if response.status().is_client_error() => None,
            Ok(response) => {
                return Err(format!(
                    "{robots_url} answered {}; a site whose robots.txt cannot be read is not crawled",
                    response.status()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot read {robots_url} ({}); a site whose robots.txt cannot be read is not crawled",
                    e.without_url()
                ));
            }
        };
        Ok(Self {
            http,
            prefix: prefix_of(url),
            robots,
        })
    }

    fn allowed(&self, url: &Url) -> bool {
        self.robots
            .as_ref()
            .is_none_or(|robot| robot.allowed(url.as_str()))
    }

    /// The page URLs a sitemap (or a sitemap index, one level deep) lists.
    async fn sitemap(&self, url: &Url) -> Result<Vec<Url>, String> {
        let body = self.text(url).await?;
        let listed = sitemap_locations(&body).map_err(|e| format!("{url}: {e}"))?;
        if !listed.index {
            return Ok(listed.urls);
        }
        let mut pages = Vec::new();
        for child in listed.urls {
            let body = self.text(&child).await?;
            let inner = sitemap_locations(&body).map_err(|e| format!("{child}: {e}"))?;
            pages.extend(inner.urls);
        }
        Ok(pages)
    }

    async fn text(&self, url: &Url) -> Result<String, String> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response
            .text()
            .await
            .map_err(|e| format!("cannot read {url}: {}", e.without_url()))
    }

    /// The path of a URL under the prefix, or `None` when it lies outside.
    fn relative(&self, url: &Url) -> Option<String> {
        let path = url.as_str().strip_prefix(self.prefix.as_str())?;
        Some(if path.is_empty() {
            "index.html".to_owned()
        } else {
            path.to_owned()
        })
    }

    /// Fetches `start` (and, when `follow`, every page they link to under the prefix),
    /// at most [`CONCURRENCY`] at a time.
    async fn fetch_all(
        self,
        start: Vec<Url>,
        follow: bool,
        pages: mpsc::Sender<Fetched>,
        found: mpsc::UnboundedSender<usize>,
    ) {
        let mut queue: VecDeque<Url> = VecDeque::new();
        let mut seen: HashSet<String> = HashSet::new();
        for url in start {
            let url = page_url(url);
            if seen.insert(url.to_string()) {
                queue.push_back(url);
            }
        }
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < CONCURRENCY
                && let Some(url) = queue.pop_front()
            {
                running.push(self.fetch(url));
            }
            let Some((fetched, links)) = running.next().await else {
                break;
            };
            if follow {
                for link in links {
                    if seen.len() < MAX_PAGES
                        && self.relative(&link).is_some()
                        && seen.insert(link.to_string())
                    {
                        queue.push_back(link);
                    }
                }
                let _ = found.send(seen.len());
            }
            if let Some(fetched) = fetched
                && pages.send(fetched).await.is_err()
            {
                return;
            }
        }
    }

    /// One page and the links on it.
    async fn fetch(&self, url: Url) -> (Option<Fetched>, Vec<Url>) {
        let Some(path) = self.relative(&url) else {
            let reason = format!("outside {}", self.prefix);
            return (
                Some(Fetched::Refused {
                    path: url.to_string(),
                    reason,
                }),
                Vec::new(),
            );
        };
        if !self.allowed(&url) {
            return (
                Some(Fetched::Refused {
                    path,
                    reason: "robots.txt does not allow it".into(),
                }),
                Vec::new(),
            );
        }
        let failed = |reason: String| Fetched::Failed {
            path: path.clone(),
            reason,
        };
        let response = match self.http.get(url.clone()).send().await {
            Ok(response) => response,
            Err(e) => return (Some(failed(e.without_url().to_string())), Vec::new()),
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            // Gone: not sent, so a copy indexed before is removed.
            return (None, Vec::new());
        }
        if !status.is_success() {
            return (Some(failed(format!("answered {status}"))), Vec::new());
        }
        let final_url = page_url(response.url().clone());
        let Some(path) = self.relative(&final_url) else {
            let reason = format!("redirected outside {}", self.prefix);
            return (Some(Fetched::Refused { path, reason }), Vec::new());
        };
        let format = match response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .as_deref()
        {
            Some("text/html" | "application/xhtml+xml") => Format::Html,
            Some("text/markdown") => Format::Markdown,
            Some("text/plain") => Format::Text,
            _ => return (None, Vec::new()),
        };
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_PAGE_BYTES)
        {
            return (Some(failed("larger than 10 MiB".into())), Vec::new());
        }
        let content = match response.text().await {
            Ok(content) => content,
            Err(e) => return (Some(failed(e.without_url().to_string())), Vec::new()),
        };
        let links = if format == Format::Html {
            links(&content, &final_url)
        } else {
            Vec::new()
        };
        let page = Page {
            path,
            url: final_url.to_string(),
            format,
            content,
        };
        (Some(Fetched::Page(page)), links)
    }
}

/// A page's own address: no fragment, no query.
fn page_url(mut url: Url) -> Url {
    url.set_fragment(None);
    url.set_query(None);
    url
}

/// Every `<a href>` of a page, resolved against it (and its `<base>`).
fn links(html: &str, page: &Url) -> Vec<Url> {
    let document = Html::parse_document(html);
    let base = Selector::parse("base[href]").expect("a valid selector");
    let anchors = Selector::parse("a[href]").expect("a valid selector");
    let base = document
        .select(&base)
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|href| page.join(href).ok())
        .unwrap_or_else(|| page.clone());
    document
        .select(&anchors)
        .filter_map(|a| a.value().attr("href"))
        .filter_map(|href| base.join(href).ok())
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .map(page_url)
        .collect()
}

struct SitemapLocations {
    /// A sitemap index lists sitemaps rather than pages.
    index: bool,
    urls: Vec<Url>,
}

/// The `<loc>` entries of a sitemap (sitemaps.org protocol).
fn sitemap_locations(xml: &str) -> Result<SitemapLocations, String> {
    use quick_xml::events::Event;
    let not_a_sitemap = |e: &dyn std::fmt::Display| format!("not a sitemap: {e}");
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut index = None;
    // The text of the `<loc>` being read; entities arrive as events of their own.
    let mut loc: Option<String> = None;
    let mut urls = Vec::new();
    loop {
        match reader.read_event().map_err(|e| not_a_sitemap(&e))? {
            Event::Start(tag) => match tag.local_name().as_ref() {
                b"sitemapindex" => index = Some(true),
                b"urlset" => index = Some(false),
                b"loc" => loc = Some(String::new()),
                _ => {}
            },
            Event::Text(text) => {
                if let Some(loc) = &mut loc {
                    loc.push_str(&text.decode().map_err(|e| not_a_sitemap(&e))?);
                }
            }
            Event::GeneralRef(entity) => {
                if let Some(loc) = &mut loc {
                    let name = entity.decode().map_err(|e| not_a_sitemap(&e))?;
                    let resolved = match entity.resolve_char_ref().map_err(|e| not_a_sitemap(&e))? {
                        Some(c) => Some(c.to_string()),
                        None => {
                            quick_xml::escape::resolve_predefined_entity(&name).map(str::to_owned)
                        }
                    };
                    loc.push_str(
                        &resolved
                            .ok_or_else(|| not_a_sitemap(&format!("unknown entity &{name};")))?,
                    );
                }
            }
            Event::End(tag) if tag.local_name().as_ref() == b"loc" => {
                if let Some(text) = loc.take()
                    && let Ok(url) = Url::parse(text.trim())
                {
                    urls.push(url);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match index {
        Some(index) => Ok(SitemapLocations { index, urls }),
        None => Err("not a sitemap: no <urlset> or <sitemapindex>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_folders_sitemaps_and_sites() {
        assert_eq!(
            Location::parse("book/html").unwrap(),
            Location::Folder("book/html".into())
        );
        assert!(matches!(
            Location::parse("https://docs.example.com/sitemap.xml").unwrap(),
            Location::Sitemap(_)
        ));
        let site = Location::parse("https://docs.example.com/book").unwrap();
        assert!(matches!(site, Location::Site(_)));
        assert_eq!(site.root_key(), "https://docs.example.com/book");
        assert_eq!(
            Location::parse("https://x.org/guide/intro.html?a=1")
                .unwrap()
                .root_key(),
            "https://x.org/guide"
        );
        assert_eq!(Location::parse("./docs/").unwrap().root_key(), "docs");
    }

    #[test]
    fn markdown_is_published_the_way_mdbook_does() {
        assert_eq!(published_path("ch01.md", Format::Markdown), "ch01.html");
        assert_eq!(
            published_path("a/README.md", Format::Markdown),
            "a/index.html"
        );
        assert_eq!(published_path("README.md", Format::Markdown), "index.html");
        assert_eq!(published_path("x/page.html", Format::Html), "x/page.html");
    }

    #[test]
    fn sitemaps_and_indexes_are_read() {
        let urlset = r#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>https://x.org/a.html</loc><lastmod>2026-01-01</lastmod></url>
  <url><loc> https://x.org/b.html?x=1&amp;y=2 </loc></url>
</urlset>"#;
        let listed = sitemap_locations(urlset).unwrap();
        assert!(!listed.index);
        assert_eq!(
            listed.urls.iter().map(Url::as_str).collect::<Vec<_>>(),
            ["https://x.org/a.html", "https://x.org/b.html?x=1&y=2"]
        );
        let index = r#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>https://x.org/s1.xml</loc></sitemap></sitemapindex>"#;
        assert!(sitemap_locations(index).unwrap().index);
        assert!(sitemap_locations("<html><body>no</body></html>").is_err());
    }

    #[test]
    fn links_resolve_against_the_page() {
        let page = Url::parse("https://x.org/book/ch1/intro.html").unwrap();
        let found = links(
            r##"<a href="../ch2/a.html#s">a</a><a href="b.html">b</a><a href="mailto:x@y">m</a><a href="#top">t</a>"##,
            &page,
        );
        assert_eq!(
            found.iter().map(Url::as_str).collect::<Vec<_>>(),
            [
                "https://x.org/book/ch2/a.html",
                "https://x.org/book/ch1/b.html",
                "https://x.org/book/ch1/intro.html"
            ]
        );
    }
}
