//! GraphiQL works offline: the page and every asset come from the binary, and a real
//! headless Chromium renders the editor from them.

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::{Backend, spawn_app_with_url};

/// The `src` and `href` values of a page.
fn references(page: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attribute| page.split(attribute).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn graphiql_and_its_assets_are_served_by_the_binary() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    let response = app.client.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let page = response.text().await.unwrap();
    let references = references(&page);
    assert_eq!(references.len(), 6, "{references:?}");
    for reference in &references {
        assert!(reference.starts_with("/graphiql/"), "{reference} is local");
        let asset = app.client.get(app.url(reference)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{reference}");
        assert!(!asset.bytes().await.unwrap().is_empty(), "{reference}");
    }
    let missing = app
        .client
        .get(app.url("/graphiql/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.shutdown().await;
}

/// Debian's Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// Runs headless Chromium on `url` with the flags that keep it off the network, plus
/// `extra`; returns its standard output.
fn run_chromium(chromium: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn graphiql_renders_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("LECTERN_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "LECTERN_REQUIRE_CHROMIUM=1 but /usr/bin/chromium is not installed"
        );
        eprintln!("skipping the browser check: install Debian's chromium package to run it");
        return;
    };
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    let url = app.url("/graphql");
    let dom = {
        let (chromium, url) = (chromium.clone(), url.clone());
        tokio::task::spawn_blocking(move || run_chromium(&chromium, &url, &["--dump-dom"]))
            .await
            .unwrap()
    };
    for rendered in ["graphiql-container", "graphiql-editor", "CodeMirror"] {
        assert!(
            dom.contains(rendered),
            "{rendered} in the rendered page: {dom}"
        );
    }
    // Kept beside the build as a CI artefact (a copy is in docs/graphiql.png).
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("graphiql.png");
    let argument = format!("--screenshot={}", screenshot.display());
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || run_chromium(&chromium, &url, &[&argument])),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    app.shutdown().await;
}
