//! Retrieval quality on real sites, as their generators published them: each site folder
//! is indexed with `Retriever::ingest` (what `lectern ingest` runs) into a fresh embedded
//! store, then every question of its set in `bench/retrieval/` is asked through
//! `Retriever::search` (what a chat turn runs), follow-ups with the turn before them.
//!
//! ```text
//! retrieval [NAME=SITE_DIR…]    (default: every site below that is installed)
//! ```
//!
//! The default sites, one or more per generator: the Python 3.11 documentation (Sphinx,
//! Debian's `python3.11-doc`), the standard library API (rustdoc, the toolchain's
//! `std`), MkDocs' user guide (MkDocs, Debian's `mkdocs-doc`), mkdocs-literate-nav's
//! documentation (Material for MkDocs, Debian's `mkdocs-literate-nav-doc`), and the
//! Edition Guide, the Rustonomicon and the Reference (mdBook, the toolchain's). A site
//! whose folder is missing is reported as such, never left out silently.
//!
//! Reported per site and mode: recall@5 by page (a known answer page among the five
//! sources), MRR, recall@5 of the follow-ups (asked with the turn before them), the
//! share of in-book questions the guardrail refuses ("not in this book") and of
//! off-topic questions (`off-topic.tsv`) it catches, with the index's calibration. With
//! `EMBEDDING_BASE_URL` (and `EMBEDDING_MODEL`, `EMBEDDING_DIMENSIONS`, the
//! `EMBEDDING_*_PREFIX` / `EMBEDDING_INPUT_TYPE` settings of the server) every site is also
//! measured hybrid, with ingest throughput. `bench/retrieval.sh` runs it all, with a
//! local e5 model.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use lectern::config::Settings;
use lectern::retrieval::site::Location;
use lectern::retrieval::{Previous, Quiet, Retriever, embed::DenseEmbedder};

const SOURCES: usize = 5;

struct Question {
    text: String,
    pages: Vec<String>,
    /// Asked right after the question before it, in the same conversation.
    follow_up: bool,
}

fn questions(file: &Path) -> Vec<Question> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (follow_up, line) = match line.strip_prefix("> ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (question, pages) = line.split_once('\t').unwrap_or((line, ""));
            Question {
                text: question.trim().to_owned(),
                pages: pages
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
                follow_up,
            }
        })
        .collect()
}

#[derive(Default)]
struct Scores {
    questions: usize,
    found: usize,
    reciprocal_ranks: f64,
    follow_ups: usize,
    follow_ups_found: usize,
    /// In-book questions (follow-ups included) the guardrail answered "not in this book".
    refused: Vec<String>,
    in_book: usize,
    caught: usize,
    /// Off-topic questions the guardrail let through, with what they matched.
    let_through: Vec<String>,
    off_topic: usize,
    in_book_relevance: Vec<f64>,
    off_topic_relevance: Vec<f64>,
    misses: Vec<String>,
    threshold: f64,
    seconds: f64,
    chunks: usize,
}

async fn measure(
    site: &Path,
    set: &[Question],
    off_topic: &[Question],
    dense: Option<(DenseEmbedder, usize)>,
    settings: &Settings,
) -> Scores {
    let data = tempfile_dir();
    let retriever =
        Retriever::embedded(&data, dense, &settings.retrieval).expect("a fresh store opens");
    let started = std::time::Instant::now();
    let summary = retriever
        .ingest(&[Location::Folder(site.to_owned())], &Quiet)
        .await
        .expect("the site is indexed");
    let seconds = started.elapsed().as_secs_f64();
    let guardrail = retriever
        .guardrail()
        .await
        .expect("the guardrail calibrates");
    println!(
        "  indexed {} pages ({} skipped: {}), {} chunks in {seconds:.1} s ({:.0} chunks/s); {guardrail}",
        summary.indexed,
        summary.skipped.len(),
        skipped_kinds(&summary.skipped),
        summary.chunks,
        summary.chunks as f64 / seconds.max(0.001),
    );
    // A duplicate page (mdBook's index.html is its first chapter) is found as its twin.
    let twins: HashMap<String, String> = summary
        .skipped
        .iter()
        .filter_map(|s| Some((s.path.clone(), s.duplicate_of.clone()?)))
        .collect();
    let mut scores = Scores {
        threshold: guardrail.threshold,
        seconds,
        chunks: summary.chunks,
        ..Scores::default()
    };
    let mut previous: Option<Previous> = None;
    for question in set {
        let context = if question.follow_up {
            previous.as_ref()
        } else {
            None
        };
        let found = retriever
            .search(&question.text, context, SOURCES)
            .await
            .expect("search works");
        let wanted: HashSet<&str> = question
            .pages
            .iter()
            .map(|p| twins.get(p).map_or(p.as_str(), String::as_str))
            .collect();
        let paths: Vec<&str> = found.passages.iter().map(|p| p.path.as_str()).collect();
        let rank = paths.iter().position(|p| wanted.contains(p));
        if question.follow_up {
            scores.follow_ups += 1;
            scores.follow_ups_found += usize::from(rank.is_some());
        } else {
            scores.questions += 1;
            if let Some(rank) = rank {
                scores.found += 1;
                scores.reciprocal_ranks += 1.0 / (rank + 1) as f64;
            }
        }
        if rank.is_none() {
            scores.misses.push(format!(
                "{}{} → wanted {:?}, got {:?}",
                if question.follow_up {
                    "(follow-up) "
                } else {
                    ""
                },
                question.text,
                question.pages,
                paths
            ));
        }
        scores.in_book += 1;
        scores.in_book_relevance.push(found.relevance);
        if !found.covered() {
            scores
                .refused
                .push(format!("{:.2} {}", found.relevance, question.text));
        }
        previous = Some(Previous {
            question: question.text.clone(),
            pages: found.passages.iter().map(|p| p.path.clone()).collect(),
        });
    }
    for question in off_topic {
        let found = retriever
            .search(&question.text, None, SOURCES)
            .await
            .expect("search works");
        scores.off_topic += 1;
        scores.off_topic_relevance.push(found.relevance);
        if found.covered() {
            scores.let_through.push(format!(
                "{:.2} {} → {}",
                found.relevance,
                question.text,
                found
                    .passages
                    .first()
                    .map_or("nothing", |p| p.path.as_str())
            ));
        } else {
            scores.caught += 1;
        }
    }
    drop(retriever);
    let _ = std::fs::remove_dir_all(&data);
    scores
}

fn skipped_kinds(skipped: &[lectern::retrieval::Skipped]) -> String {
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for s in skipped {
        let kind = if s.duplicate_of.is_some() {
            "duplicate".to_owned()
        } else {
            s.reason.clone()
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<String> = kinds
        .into_iter()
        .map(|(k, n)| format!("{n}× {k}"))
        .collect();
    kinds.sort();
    kinds.join("; ")
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lectern-retrieval-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn quantiles(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return "-".into();
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.2} · p10 {:.2} · median {:.2} · p90 {:.2} · max {:.2}",
        at(0.0),
        at(0.1),
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

fn percent(part: usize, whole: usize) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

fn report(site: &str, mode: &str, s: &Scores) {
    println!(
        "| {site} | {mode} | {} | {:.2} | {:.2} | {:.2} ({}/{}) | {:.0} % ({}/{}) | {:.0} % ({}/{}) | {:.2} | {:.0} |",
        s.questions,
        s.found as f64 / s.questions.max(1) as f64,
        s.reciprocal_ranks / s.questions.max(1) as f64,
        s.follow_ups_found as f64 / s.follow_ups.max(1) as f64,
        s.follow_ups_found,
        s.follow_ups,
        percent(s.refused.len(), s.in_book),
        s.refused.len(),
        s.in_book,
        percent(s.caught, s.off_topic),
        s.caught,
        s.off_topic,
        s.threshold,
        s.chunks as f64 / s.seconds.max(0.001),
    );
}

fn details(site: &str, mode: &str, s: &Scores) {
    println!("{site}, {mode}:");
    println!("  relevance in book:   {}", quantiles(&s.in_book_relevance));
    println!(
        "  relevance off topic: {}",
        quantiles(&s.off_topic_relevance)
    );
    for miss in &s.misses {
        println!("  miss: {miss}");
    }
    for refused in &s.refused {
        println!("  refused: {refused}");
    }
    for line in &s.let_through {
        println!("  let through: {line}");
    }
}

fn default_sites() -> Vec<(String, PathBuf)> {
    let docs = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()).join("share/doc/rust/html"))
        .expect("rustc --print sysroot");
    vec![
        ("python".into(), "/usr/share/doc/python3.11/html".into()),
        ("std".into(), docs.join("std")),
        ("mkdocs".into(), "/usr/share/doc/mkdocs/html".into()),
        (
            "literate-nav".into(),
            "/usr/share/doc/mkdocs-literate-nav-doc/html".into(),
        ),
        ("edition-guide".into(), docs.join("edition-guide")),
        ("nomicon".into(), docs.join("nomicon")),
        ("reference".into(), docs.join("reference")),
    ]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sites: Vec<(String, PathBuf)> = if args.is_empty() {
        default_sites()
    } else {
        args.iter()
            .map(|a| match a.split_once('=') {
                Some((name, dir)) => (name.to_owned(), PathBuf::from(dir)),
                None => {
                    let dir = PathBuf::from(a);
                    let name = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (name, dir)
                }
            })
            .collect()
    };
    let sets = Path::new(env!("CARGO_MANIFEST_DIR")).join("retrieval");
    let off_topic = questions(&sets.join("off-topic.tsv"));
    let settings = Settings::from_lookup(|k| std::env::var(k).ok()).expect("valid settings");
    println!(
        "sources per page: {}; embeddings: {}",
        settings.retrieval.sources_per_page,
        settings
            .embedding
            .as_ref()
            .map_or("none".to_owned(), |(s, d)| format!(
                "{} ({d} dimensions)",
                s.model
            ))
    );
    let mut rows = Vec::new();
    for (name, dir) in &sites {
        if !dir.is_dir() {
            println!("{name}: {} is not installed, not measured", dir.display());
            continue;
        }
        let set = questions(&sets.join(format!("{name}.tsv")));
        println!("{name}, BM25:");
        let bm25 = measure(dir, &set, &off_topic, None, &settings).await;
        rows.push((name.clone(), "BM25", bm25));
        if let Some((service, dims)) = settings.embedding.clone() {
            println!("{name}, hybrid:");
            let embedder = DenseEmbedder::new(service, settings.retrieval.embedding_sides.clone());
            let hybrid = measure(dir, &set, &off_topic, Some((embedder, dims)), &settings).await;
            rows.push((name.clone(), "hybrid", hybrid));
        }
    }
    println!();
    for (site, mode, scores) in &rows {
        details(site, mode, scores);
    }
    println!();
    println!(
        "| site | mode | questions | recall@5 | MRR | follow-ups recall@5 | in-book refused | off-topic caught | threshold | chunks/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (site, mode, scores) in &rows {
        report(site, mode, scores);
    }
}
