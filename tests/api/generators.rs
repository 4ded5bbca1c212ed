//! Sites built in the test by the real generators, indexed as published: Sphinx, MkDocs
//! with its default theme and with Material for MkDocs (PyPI, pinned by
//! `tests/sites/requirements.txt`, installed once by `tests/sites/generators.sh`),
//! rustdoc (the toolchain's), and the toolchain's own mdBook Edition Guide. Each check
//! goes through `lectern ingest` and GraphQL: what a generator writes beside its pages
//! is skipped, citations link to the page and the anchor the generator wrote, and a
//! follow-up keeps its conversation's context.
//!
//! Without Python the Sphinx and MkDocs halves are skipped with a notice, unless
//! `LECTERN_REQUIRE_GENERATORS=1` (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Mode};
use crate::helpers::{Backend, TestApp, access_token, spawn_app};

const SITES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sites");

const CHAT: &str = "mutation($input: ChatInput!) { chat(input: $input) {
  answer unanswered turnId sources { title heading path url } conversation { id } } }";

/// The bin folder of the pinned generators, installed on first use.
fn generators() -> Option<PathBuf> {
    static BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let required = std::env::var("LECTERN_REQUIRE_GENERATORS").as_deref() == Ok("1");
        if !Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                !required,
                "LECTERN_REQUIRE_GENERATORS=1 but python3 is missing"
            );
            eprintln!("notice: python3 is not installed; the Sphinx and MkDocs sites are skipped");
            return None;
        }
        let output = Command::new(format!("{SITES}/generators.sh"))
            .output()
            .expect("generators.sh runs");
        assert!(
            output.status.success(),
            "installing the generators failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(PathBuf::from(
            String::from_utf8(output.stdout).unwrap().trim(),
        ))
    })
    .clone()
}

fn run(mut command: Command) {
    let output = command.output().expect("the generator runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `lectern ingest SITE` into `data`: (stdout, stderr).
fn ingest(data: &Path, site: &Path) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lectern"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data)
        .arg("ingest")
        .arg(site)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

async fn chat(app: &TestApp, token: Option<&str>, input: Value) -> Value {
    let response = app.graphql_as(token, CHAT, json!({ "input": input })).await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["chat"].clone()
}

async fn ask(app: &TestApp, message: &str) -> Value {
    chat(app, None, json!({ "message": message })).await
}

fn paths(chat: &Value) -> Vec<String> {
    chat["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect()
}

async fn serve(data: &Path, backend: Backend) -> Option<TestApp> {
    spawn_app(
        backend,
        &[
            ("DATA_DIR", data.to_str().unwrap()),
            ("SITE_URL", "https://harbour.example/docs"),
        ],
    )
    .await
}

fn sphinx_site() -> Option<tempfile::TempDir> {
    let bin = generators()?;
    let out = tempfile::tempdir().unwrap();
    let mut build = Command::new(bin.join("sphinx-build"));
    build.args(["-q", "-b", "html", &format!("{SITES}/sphinx")]);
    build.arg(out.path());
    run(build);
    Some(out)
}

#[tokio::test]
async fn a_sphinx_site_is_indexed_as_its_pages_and_api_items_are_cited_by_anchor() {
    let Some(site) = sphinx_site() else { return };
    let data = tempfile::tempdir().unwrap();
    let (stdout, stderr) = ingest(data.path(), site.path());
    for line in [
        "skipped _sources/cli.rst.txt: the source of a page (Sphinx's _sources), not the page",
        "skipped genindex.html: a generated index",
        "skipped py-modindex.html: a generated index",
        "skipped search.html: a search page",
    ] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }
    assert!(
        stdout.contains("guardrail: \"not in this book\" under relevance")
            && stdout.contains("calibrated on this index"),
        "the calibration is shown: {stdout}"
    );
    let app = serve(data.path(), Backend::Sqlite).await.unwrap();
    let answer = ask(&app, "How long a chain does a boat on a swing mooring get?").await;
    assert_eq!(answer["unanswered"], false, "{answer}");
    let first = &answer["sources"][0];
    assert_eq!(first["path"], "api.html", "{answer}");
    assert_eq!(
        first["url"], "https://harbour.example/docs/api.html#harbour.moor",
        "the item's own anchor: {answer}"
    );
    assert!(
        first["heading"].as_str().unwrap().ends_with("harbour.moor"),
        "the item's name is its heading: {answer}"
    );
    let method = ask(&app, "When is the next high water at a tide station?").await;
    assert_eq!(
        method["sources"][0]["url"],
        "https://harbour.example/docs/api.html#harbour.TideTable.next_high_water",
        "{method}"
    );
    for chat in [&answer, &method] {
        assert!(
            paths(chat).iter().all(|p| !p.starts_with("_sources/")),
            "no raw reStructuredText is cited: {chat}"
        );
    }
    let off = ask(&app, "Who won the football world cup in 2018?").await;
    assert_eq!(off["unanswered"], true, "{off}");
    app.shutdown().await;
}

#[tokio::test]
async fn follow_ups_are_retrieved_with_the_turn_before_them() {
    let Some(site) = sphinx_site() else { return };
    let data = tempfile::tempdir().unwrap();
    ingest(data.path(), site.path());
    let follow_up = "How do I make one of them required?";
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = serve(data.path(), backend).await else {
            continue;
        };
        // Alone, the follow-up's words point at the configuration page.
        let alone = ask(&app, follow_up).await;
        assert_eq!(paths(&alone)[0], "config.html", "{alone}");

        // After a question about options, anonymously, by the previous turn's id.
        let first = ask(&app, "How do I accept options on the command line?").await;
        assert_eq!(paths(&first)[0], "cli.html", "{first}");
        let next = chat(
            &app,
            None,
            json!({ "message": follow_up, "previousTurnId": first["turnId"] }),
        )
        .await;
        assert_eq!(paths(&next)[0], "cli.html", "{next}");

        // A signed-in reader's conversation is its own context.
        let token = access_token(&app, "skipper@example.com", "correct horse battery").await;
        let first = chat(
            &app,
            Some(&token),
            json!({ "message": "How do I accept options on the command line?" }),
        )
        .await;
        let id = first["conversation"]["id"].clone();
        assert!(id.is_string(), "{first}");
        let next = chat(
            &app,
            Some(&token),
            json!({ "message": follow_up, "conversationId": id }),
        )
        .await;
        assert_eq!(paths(&next)[0], "cli.html", "{next}");

        // A signed-in reader's turn is theirs alone to follow; ids are checked.
        let response = app
            .graphql_as(
                None,
                CHAT,
                json!({ "input": { "message": follow_up, "previousTurnId": first["turnId"] } }),
            )
            .await;
        assert_eq!(
            response["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{response}"
        );
        for (id, code) in [
            ("00000000-0000-4000-8000-000000000000", "NOT_FOUND"),
            ("not-a-turn", "BAD_USER_INPUT"),
        ] {
            let response = app
                .graphql_as(
                    None,
                    CHAT,
                    json!({ "input": { "message": follow_up, "previousTurnId": id } }),
                )
                .await;
            assert_eq!(
                response["errors"][0]["extensions"]["code"], code,
                "{id}: {response}"
            );
        }
        app.shutdown().await;
    }
}

#[tokio::test]
async fn mkdocs_sites_in_both_themes_are_cited_by_their_headings() {
    let Some(bin) = generators() else { return };
    for theme in ["mkdocs", "material"] {
        let out = tempfile::tempdir().unwrap();
        let mut build = Command::new(bin.join("mkdocs"));
        build
            .current_dir(format!("{SITES}/mkdocs"))
            .args(["build", "-q", "-t", theme, "-d"])
            .arg(out.path());
        run(build);
        let data = tempfile::tempdir().unwrap();
        let (stdout, stderr) = ingest(data.path(), out.path());
        assert!(
            stderr.contains("skipped 404.html: a not-found page"),
            "{theme}: {stderr}"
        );
        assert!(
            stdout.contains("indexed 4 pages (3 changed"),
            "{theme}: {stdout}{stderr}"
        );
        let app = serve(data.path(), Backend::Sqlite).await.unwrap();
        let answer = ask(&app, "How wide a circle does a swing mooring need?").await;
        let first = &answer["sources"][0];
        assert_eq!(
            *first,
            json!({
                "title": "Moorings",
                "heading": "Moorings › Swing moorings",
                "path": "moorings/index.html",
                "url": "https://harbour.example/docs/moorings/index.html#swing-moorings",
            }),
            "{theme}: the page's own heading and anchor, no navigation: {answer}"
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn rustdoc_items_are_pages_and_methods_are_cited_by_their_anchor() {
    let out = tempfile::tempdir().unwrap();
    let mut build = Command::new("rustdoc");
    build
        .args([
            "--edition",
            "2024",
            "--crate-name",
            "harbour",
            "--crate-type",
            "lib",
        ])
        .arg(format!("{SITES}/rustdoc/harbour.rs"))
        .arg("-o")
        .arg(out.path());
    run(build);
    let data = tempfile::tempdir().unwrap();
    let (stdout, stderr) = ingest(data.path(), out.path());
    for line in [
        "skipped harbour/all.html: a list of every item",
        "skipped src/harbour/harbour.rs.html: source code (rustdoc's src/)",
        "skipped settings.html: a settings page",
        "skipped help.html: a help page",
    ] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }
    assert!(
        stdout.contains("(4 changed"),
        "the crate, the module and the two items: {stdout}{stderr}"
    );
    let app = serve(data.path(), Backend::Sqlite).await.unwrap();
    let answer = ask(
        &app,
        "How wide a circle of water does a swing mooring need?",
    )
    .await;
    assert_eq!(
        answer["sources"][0],
        json!({
            "title": "Mooring in harbour",
            "heading": "Struct Mooring › Implementations › impl Mooring › swing_radius",
            "path": "harbour/struct.Mooring.html",
            "url": "https://harbour.example/docs/harbour/struct.Mooring.html#method.swing_radius",
        }),
        "{answer}"
    );
    // A plain-words question finds the item whose name says it.
    let answer = ask(&app, "How do I read a station's tide table from a file?").await;
    assert_eq!(
        answer["sources"][0]["path"], "harbour/tides/fn.read_tide_table.html",
        "{answer}"
    );
    // Trait implementations repeat the trait's docs on every type: not indexed.
    let answer = ask(&app, "Formats the value using the given formatter").await;
    assert!(
        answer["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["heading"].as_str().unwrap().contains("Display")),
        "{answer}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_a_model_a_follow_up_is_rewritten_as_a_question_of_its_own_first() {
    let Some(site) = sphinx_site() else { return };
    let data = tempfile::tempdir().unwrap();
    ingest(data.path(), site.path());
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["How do I declare a required option on the command line?".into()],
        delay: std::time::Duration::ZERO,
    })
    .await;
    let mut extra: Vec<(&str, String)> = fake.llm_settings();
    extra.push(("DATA_DIR", data.path().to_str().unwrap().to_owned()));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(Backend::Sqlite, &extra).await.unwrap();
    let first = ask(&app, "How do I accept options on the command line?").await;
    let before = fake.chat_requests().len();
    let next = chat(
        &app,
        None,
        json!({ "message": "Can I insist on it?", "previousTurnId": first["turnId"] }),
    )
    .await;
    let requests = fake.chat_requests();
    assert_eq!(
        requests.len(),
        before + 2,
        "one call to rewrite the follow-up, one to answer it"
    );
    let rewrite = requests[before]["messages"].to_string();
    assert!(
        rewrite.contains("How do I accept options on the command line?")
            && rewrite.contains("Can I insist on it?")
            && rewrite.contains("rewrite"),
        "{rewrite}"
    );
    // "Can I insist on it?" shares no word with the site: the guardrail would refuse it
    // (its words weigh above the previous question's). Rewritten, it is answered from
    // the option's page.
    assert_eq!(paths(&next)[0], "cli.html", "{next}");
    assert_eq!(next["unanswered"], false, "{next}");
    app.shutdown().await;
}

/// The toolchain's documentation: real sites of the generator that built them.
fn toolchain_docs() -> Option<PathBuf> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let docs =
        PathBuf::from(String::from_utf8(sysroot.stdout).ok()?.trim()).join("share/doc/rust/html");
    if docs.is_dir() {
        Some(docs)
    } else {
        eprintln!("notice: the toolchain has no documentation; its mdBook site is skipped");
        None
    }
}

#[tokio::test]
async fn an_mdbook_site_as_the_toolchain_ships_it_is_indexed_and_cited() {
    let Some(docs) = toolchain_docs() else { return };
    let data = tempfile::tempdir().unwrap();
    let (stdout, stderr) = ingest(data.path(), &docs.join("edition-guide"));
    for line in [
        "skipped print.html: the print version of the whole book",
        "skipped toc.html: a table of contents",
    ] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }
    assert!(stdout.contains("calibrated on this index"), "{stdout}");
    let app = serve(data.path(), Backend::Sqlite).await.unwrap();
    let answer = ask(
        &app,
        "Can I chain several if let conditions together with &&?",
    )
    .await;
    assert_eq!(answer["unanswered"], false, "{answer}");
    assert_eq!(paths(&answer)[0], "rust-2024/let-chains.html", "{answer}");
    let off = ask(&app, "How do I bake sourdough bread at home?").await;
    assert_eq!(off["unanswered"], true, "{off}");
    app.shutdown().await;
}
