//! Real-shaped documentation sites, indexed as published and cited the way the site
//! links: an mdBook build (sidebars, `print.html`, `toc.html`, `404.html`, a redirect
//! stub, `index.html` beside its first chapter), a Docusaurus page, Markdown sources,
//! and the same book served over HTTP (sitemap and crawl, robots.txt). Every check goes
//! through `lectern ingest` and GraphQL.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Mode};
use crate::helpers::{Backend, access_token, for_each_backend_with, spawn_app};

const CHAT: &str = "mutation($input: ChatInput!) { chat(input: $input) {
  answer unanswered sources { title heading path url snippet } conversation { id } } }";

/// mdBook's page around a chapter: the chrome every page repeats.
fn mdbook_page(title: &str, main: &str) -> String {
    format!(
        r##"<!DOCTYPE HTML>
<html lang="en" class="light sidebar-visible" dir="ltr"><head>
<!-- Book generated using mdBook --><meta charset="UTF-8"><title>{title} - The Harbour Book</title>
<script src="toc-1234.js"></script></head><body>
<nav id="mdbook-sidebar" class="sidebar" aria-label="Table of contents"><ol class="chapter">
<li><a href="intro.html">Introduction</a></li><li><a href="ships/moorings.html">Moorings</a></li>
<li><a href="tides.html">Tides</a></li><li><a href="glossary.html">Appendix: a glossary of zebra crossings</a></li></ol></nav>
<div id="mdbook-page-wrapper" class="page-wrapper"><div class="page">
<div id="mdbook-menu-bar" class="menu-bar sticky"><h1 class="menu-title">The Harbour Book</h1>
<a href="print.html" title="Print this book">Print</a></div>
<div id="mdbook-content" class="content"><main>
{main}
</main><nav class="nav-wrapper" aria-label="Page navigation"><a rel="next" href="tides.html" class="mobile-nav-chapters next">Next chapter</a></nav>
</div></div></div>
<script>window.playground_copyable = true;</script></body></html>"##
    )
}

const INTRO: &str = r##"<h1 id="introduction"><a class="header" href="#introduction">Introduction</a></h1>
<p>This book explains how a small harbour works, from moorings to the tide tables.</p>"##;

const MOORINGS: &str = r##"<h1 id="moorings"><a class="header" href="#moorings">Moorings</a></h1>
<p>A mooring holds a boat in place with a heavy anchor block on the sea bed.</p>
<h2 id="swing-moorings"><a class="header" href="#swing-moorings">Swing moorings</a></h2>
<p>On a swing mooring the boat turns with the wind &amp; current around a single buoy, so it needs a circle of clear water as wide as the chain is long.</p>
<pre><code class="language-rust"><span class="boring">fn main() {
</span>let chain_metres = 3 * depth_metres;
<span class="boring">}</span></code></pre>"##;

const TIDES: &str = r##"<h1 id="tides"><a class="header" href="#tides">Tides</a></h1>
<p>Spring tides have the largest range; neap tides, a week later, the smallest.</p>
<h2 id="reading-a-tide-table"><a class="header" href="#reading-a-tide-table">Reading a tide table</a></h2>
<p>A tide table lists the time and height of each high and low water for the harbour.</p>"##;

/// An mdBook build, as `mdbook build` writes it.
fn mdbook_site(dir: &Path) {
    let write = |path: &str, content: String| {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    };
    write("index.html", mdbook_page("Introduction", INTRO));
    write("intro.html", mdbook_page("Introduction", INTRO));
    write("ships/moorings.html", mdbook_page("Moorings", MOORINGS));
    write("tides.html", mdbook_page("Tides", TIDES));
    let everything = format!("{INTRO}\n{MOORINGS}\n{TIDES}");
    write(
        "print.html",
        mdbook_page("The Harbour Book", &everything)
            .replace("<head>", r#"<head><meta name="robots" content="noindex">"#),
    );
    write(
        "toc.html",
        r#"<html><head><meta name="robots" content="noindex"></head><body><ol class="chapter"><li><a href="intro.html">Introduction</a></li></ol></body></html>"#.into(),
    );
    write(
        "404.html",
        mdbook_page(
            "Page not found",
            "<h1 id=\"document-not-found-404\">Document not found (404)</h1><p>This URL is invalid, sorry.</p>",
        ),
    );
    write(
        "old-moorings.html",
        r#"<!DOCTYPE html><html><head><meta http-equiv="refresh" content="0; URL=ships/moorings.html"><title>Redirecting...</title></head><body><p>Redirecting to <a href="ships/moorings.html">ships/moorings.html</a>...</p></body></html>"#.into(),
    );
}

fn ingest(data_dir: &Path, location: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .args(["ingest", location])
        .output()
        .unwrap()
}

/// [`ingest`] from a test whose runtime also serves the site it reads.
async fn ingest_served(data_dir: &Path, location: String) -> Output {
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || ingest(&data_dir, &location))
        .await
        .unwrap()
}

fn succeeded(output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

async fn ask(app: &crate::helpers::TestApp, token: Option<&str>, message: &str) -> Value {
    let response = app
        .graphql_as(token, CHAT, json!({ "input": { "message": message } }))
        .await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["chat"].clone()
}

fn sources(chat: &Value) -> Vec<Value> {
    chat["sources"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_built_mdbook_site_is_indexed_as_published_and_cited_by_link() {
    let site = tempfile::tempdir().unwrap();
    mdbook_site(site.path());
    let data = tempfile::tempdir().unwrap();
    let (stdout, stderr) = succeeded(&ingest(data.path(), site.path().to_str().unwrap()));
    assert!(
        stdout.contains("indexed 8 pages (3 changed, 0 unchanged, 0 removed, 5 skipped)"),
        "{stdout}"
    );
    for line in [
        "skipped print.html: the print version of the whole book, not content of its own",
        "skipped toc.html: a table of contents, not content of its own",
        "skipped 404.html: a not-found page, not content of its own",
        "skipped old-moorings.html: a redirect to another page",
        "skipped intro.html: the same content as index.html",
    ] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }

    let data_dir = data.path().to_str().unwrap();
    let app = spawn_app(
        Backend::Sqlite,
        &[
            ("DATA_DIR", data_dir),
            ("SITE_URL", "https://harbour.example/book"),
        ],
    )
    .await
    .unwrap();
    let chat = ask(&app, None, "How wide a circle does a swing mooring need?").await;
    assert_eq!(chat["unanswered"], false, "{chat}");
    let found = sources(&chat);
    assert_eq!(
        found[0],
        json!({
            "title": "Moorings",
            "heading": "Moorings › Swing moorings",
            "path": "ships/moorings.html",
            "url": "https://harbour.example/book/ships/moorings.html#swing-moorings",
            "snippet": "On a swing mooring the boat turns with the wind & current around a single buoy, so it needs a circle of clear water as wide as the chain is long. let chain_metres = 3 * depth_metres;",
        }),
        "the passage, its heading path and a link to it; entities decoded, mdBook's hidden lines dropped"
    );
    let paths: Vec<&str> = found.iter().map(|s| s["path"].as_str().unwrap()).collect();
    let mut distinct = paths.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        paths.len(),
        "one passage per page: {paths:?}"
    );
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("print") && !p.contains("toc")),
        "{paths:?}"
    );

    // The sidebar's words are on every page but belong to none.
    let chat = ask(&app, None, "Where is the glossary of zebra crossings?").await;
    assert_eq!(chat["unanswered"], true, "{chat}");
    assert!(
        chat["answer"]
            .as_str()
            .unwrap()
            .starts_with("The book does not seem to cover this question."),
        "{chat}"
    );
    app.shutdown().await;

    // Re-running is idempotent; a page that disappeared is removed.
    let (stdout, _) = succeeded(&ingest(data.path(), site.path().to_str().unwrap()));
    assert!(
        stdout.contains("(0 changed, 3 unchanged, 0 removed, 5 skipped), 0 chunks"),
        "{stdout}"
    );
    std::fs::remove_file(site.path().join("tides.html")).unwrap();
    let (stdout, _) = succeeded(&ingest(data.path(), site.path().to_str().unwrap()));
    assert!(
        stdout.contains("(0 changed, 2 unchanged, 1 removed, 5 skipped)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn docusaurus_pages_and_markdown_sources_keep_headings_and_anchors() {
    let site = tempfile::tempdir().unwrap();
    let docs = site.path().join("docs/install");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("index.html"),
        r##"<html><head><title>Install | Harbour</title></head><body>
<nav class="navbar">Docs Blog Community</nav>
<aside class="theme-doc-sidebar-container"><a href="/docs/intro">Getting started with lighthouses</a></aside>
<main><article><nav class="theme-doc-breadcrumbs">Home › Install</nav>
<div class="theme-doc-markdown markdown"><header><h1>Install</h1></header>
<p>Download the harbour master console from the release page.</p>
<h2 class="anchor" id="on-linux">On Linux<a href="#on-linux" class="hash-link" aria-label="Direct link">&#8203;</a></h2>
<p>Unpack the tarball and run the harbourmaster binary as a service.</p></div>
<footer class="theme-doc-footer"><a class="theme-edit-this-page">Edit this page</a></footer></article>
<nav class="pagination-nav">Previous Next</nav></main></body></html>"##,
    )
    .unwrap();
    std::fs::write(
        site.path().join("pilots.md"),
        "---\ntitle: Pilots\n---\nPilot boats\n===========\n\nA [pilot](https://example.com/pilot-licence) guides large ships through the channel.\n\nBoarding a ship\n---------------\n\nThe pilot climbs a rope ladder on the ship's side.\n\n```sh\nradio --channel 12\n```\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    succeeded(&ingest(data.path(), site.path().to_str().unwrap()));
    let app = spawn_app(
        Backend::Sqlite,
        &[
            ("DATA_DIR", data.path().to_str().unwrap()),
            ("SITE_URL", "https://harbour.example/"),
        ],
    )
    .await
    .unwrap();

    let chat = ask(
        &app,
        None,
        "How do I run the harbourmaster binary on Linux?",
    )
    .await;
    let first = &sources(&chat)[0];
    assert_eq!(first["heading"], "Install › On Linux", "{chat}");
    assert_eq!(
        first["url"],
        "https://harbour.example/docs/install/index.html#on-linux"
    );
    assert_eq!(first["title"], "Install");

    let chat = ask(
        &app,
        None,
        "How does the pilot climb the ladder to board a ship?",
    )
    .await;
    let first = &sources(&chat)[0];
    assert_eq!(first["path"], "pilots.md", "{chat}");
    assert_eq!(first["heading"], "Pilot boats › Boarding a ship");
    assert_eq!(
        first["url"], "https://harbour.example/pilots.html#boarding-a-ship",
        "published as mdBook publishes Markdown, anchored as it anchors"
    );
    assert_eq!(
        first["snippet"],
        "The pilot climbs a rope ladder on the ship's side. radio --channel 12"
    );
    let all = serde_json::to_string(&chat).unwrap();
    assert!(
        !all.contains("pilot-licence") && !all.contains("Edit this page"),
        "{all}"
    );
    app.shutdown().await;
}

/// Serves a folder over HTTP, as a static host would, with content types by extension.
async fn static_host(root: PathBuf) -> String {
    use axum::extract::State;
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    async fn serve(State(root): State<PathBuf>, uri: Uri) -> axum::response::Response {
        let mut path = uri.path().trim_start_matches('/').to_owned();
        if path.is_empty() || path.ends_with('/') {
            path.push_str("index.html");
        }
        let kind = match path.rsplit('.').next() {
            Some("html") => "text/html; charset=utf-8",
            Some("xml") => "application/xml",
            _ => "text/plain",
        };
        match std::fs::read(root.join(&path)) {
            Ok(body) => ([(header::CONTENT_TYPE, kind)], body).into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new().fallback(serve).with_state(root);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn sites_are_ingested_from_a_sitemap_or_by_crawling_within_robots_txt() {
    let host = tempfile::tempdir().unwrap();
    let book = host.path().join("book");
    mdbook_site(&book);
    std::fs::create_dir_all(book.join("private")).unwrap();
    std::fs::write(
        book.join("private/staff.html"),
        mdbook_page(
            "Staff",
            "<h1 id=\"staff\">Staff</h1><p>The harbour master's home phone number.</p>",
        ),
    )
    .unwrap();
    // The chapter links the private page too: only robots.txt keeps the crawler out.
    let moorings = std::fs::read_to_string(book.join("ships/moorings.html")).unwrap();
    std::fs::write(
        book.join("ships/moorings.html"),
        moorings.replace(
            "</main>",
            "<p><a href=\"../private/staff.html\">staff</a></p></main>",
        ),
    )
    .unwrap();
    std::fs::write(
        host.path().join("robots.txt"),
        "User-agent: *\nDisallow: /book/private/\n",
    )
    .unwrap();
    let base = static_host(host.path().to_owned()).await;
    std::fs::write(
        host.path().join("sitemap.xml"),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>{base}/book/intro.html</loc></url><url><loc>{base}/book/ships/moorings.html</loc></url>
<url><loc>{base}/book/tides.html</loc></url><url><loc>{base}/book/print.html</loc></url>
<url><loc>{base}/book/private/staff.html</loc></url></urlset>"#
        ),
    )
    .unwrap();

    let from_sitemap = tempfile::tempdir().unwrap();
    let (stdout, stderr) =
        succeeded(&ingest_served(from_sitemap.path(), format!("{base}/sitemap.xml")).await);
    assert!(
        stdout.contains("indexed 4 pages (3 changed"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("skipped book/private/staff.html: robots.txt does not allow it"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped book/print.html"), "{stderr}");

    let crawled = tempfile::tempdir().unwrap();
    let (stdout, stderr) = succeeded(&ingest_served(crawled.path(), format!("{base}/book/")).await);
    assert!(
        stdout.contains("(3 changed, 0 unchanged, 0 removed,"),
        "the crawl found every chapter from the first page: {stdout}{stderr}"
    );
    assert!(
        stderr.contains("skipped private/staff.html: robots.txt does not allow it"),
        "{stderr}"
    );
    let app = spawn_app(
        Backend::Sqlite,
        &[("DATA_DIR", crawled.path().to_str().unwrap())],
    )
    .await
    .unwrap();
    let chat = ask(&app, None, "How wide a circle does a swing mooring need?").await;
    assert_eq!(
        sources(&chat)[0]["url"],
        format!("{base}/book/ships/moorings.html#swing-moorings"),
        "pages fetched from the web link to where they were found: {chat}"
    );
    assert_eq!(sources(&chat)[0]["path"], "ships/moorings.html");
    let chat = ask(
        &app,
        None,
        "What is the harbour master's home phone number?",
    )
    .await;
    assert!(
        sources(&chat)
            .iter()
            .all(|s| !s["path"].as_str().unwrap().contains("private")),
        "{chat}"
    );
    app.shutdown().await;

    // A page the site no longer has is removed on the next crawl.
    std::fs::remove_file(book.join("tides.html")).unwrap();
    let (stdout, _) = succeeded(&ingest_served(crawled.path(), format!("{base}/book/")).await);
    assert!(
        stdout.contains("(0 changed, 2 unchanged, 1 removed,"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_unreadable_robots_txt_stops_the_crawl_and_keeps_the_index() {
    use axum::http::StatusCode;
    let app = axum::Router::new().fallback(|| async { StatusCode::SERVICE_UNAVAILABLE });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let data = tempfile::tempdir().unwrap();
    let output = ingest_served(data.path(), format!("{base}/book/")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("robots.txt answered 503 Service Unavailable; a site whose robots.txt cannot be read is not crawled"),
        "{stderr}"
    );
}

/// Questions the book does not cover are answered as such, without a model call, and the
/// turn is stored marked unanswered; covered ones are answered as usual.
#[tokio::test]
async fn questions_the_book_does_not_cover_are_marked_unanswered() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["Neap tides come with the half moon [1].".into()],
        delay: std::time::Duration::ZERO,
    })
    .await;
    let settings = fake.llm_settings();
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for_each_backend_with(&extra, |app| {
        let fake = &fake;
        async move {
            let before = fake.chat_requests().len();
            let token = access_token(&app, "mariner@example.com", "correct horse battery").await;
            let chat = ask(&app, Some(&token), "Who won the football world cup in 2018?").await;
            assert_eq!(chat["unanswered"], true, "{chat}");
            assert_eq!(
                chat["answer"], "The book does not seem to cover this question.",
                "no passage shares a word with it: {chat}"
            );
            let id = chat["conversation"]["id"].as_str().unwrap().to_owned();
            let chat = ask(&app, Some(&token), "Is the moon made of green cheese?").await;
            assert_eq!(chat["unanswered"], true, "{chat}");
            assert_eq!(
                chat["answer"],
                "The book does not seem to cover this question. The nearest sections are:\n\n- Tides [1]",
                "{chat}"
            );
            assert_eq!(sources(&chat)[0]["path"], "tides.html");
            assert_eq!(fake.chat_requests().len(), before, "no model call for either");
            let covered = ask(&app, Some(&token), "What causes neap tides?").await;
            assert_eq!(covered["unanswered"], false, "{covered}");
            assert_eq!(covered["answer"], "Neap tides come with the half moon [1].");

            let stored = app
                .graphql_as(
                    Some(&token),
                    "query($id: ID!) { conversation(id: $id) { messages(first: 10) { edges { node { role unanswered } } } } }",
                    json!({ "id": id }),
                )
                .await;
            assert_eq!(
                stored["data"]["conversation"]["messages"]["edges"],
                json!([
                    { "node": { "role": "USER", "unanswered": false } },
                    { "node": { "role": "ASSISTANT", "unanswered": true } },
                ]),
                "{stored}"
            );
            app.shutdown().await;
        }
    })
    .await;
}

/// Asymmetric embedding models get questions and passages marked apart, by prefix and by
/// `input_type`, as the settings say.
#[tokio::test]
async fn questions_and_passages_are_embedded_as_their_side() {
    let fake = FakeLlm::start(Mode::Fail(500)).await;
    let mut settings = fake.embedding_settings();
    settings.extend([
        ("EMBEDDING_QUERY_PREFIX", "query: ".to_owned()),
        ("EMBEDDING_DOCUMENT_PREFIX", "passage: ".to_owned()),
        (
            "EMBEDDING_INPUT_TYPE",
            "search_query,search_document".to_owned(),
        ),
    ]);
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(Backend::Sqlite, &extra).await.unwrap();
    ask(&app, None, "What causes neap tides?").await;
    let requests = fake.embedding_requests();
    let documents: Vec<&Value> = requests
        .iter()
        .filter(|r| r["input_type"] == "search_document")
        .collect();
    assert!(!documents.is_empty(), "{requests:?}");
    assert!(documents.iter().all(|r| {
        r["input"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.as_str().unwrap().starts_with("passage: "))
    }));
    let queries: Vec<&Value> = requests
        .iter()
        .filter(|r| r["input_type"] == "search_query")
        .collect();
    assert_eq!(queries.len(), 1, "{requests:?}");
    assert_eq!(
        queries[0]["input"],
        json!(["query: What causes neap tides?"])
    );
    app.shutdown().await;
}
