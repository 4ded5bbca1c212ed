//! Retrieval quality on real books, as published: each site folder of the Rust
//! documentation installed with the toolchain is indexed with `Retriever::ingest` (what
//! `lectern ingest` runs) into a fresh embedded store, then every question of its set in
//! `bench/retrieval/` is asked through `Retriever::search` (what a chat turn runs).
//!
//! ```text
//! retrieval [BOOK_DIR…]       (default: the toolchain's nomicon and reference)
//! ```
//!
//! Reported per site and mode: recall@5 by page (a known answer page among the five
//! sources), MRR, the share of source slots taken by aggregate pages (`print.html`,
//! `toc.html`) and by a page already cited in the same answer, and the BM25 relevance of
//! in-book and off-topic questions, which calibrates `RETRIEVAL_MIN_SCORE`. With
//! `EMBEDDING_BASE_URL` (and `EMBEDDING_MODEL`, `EMBEDDING_DIMENSIONS`, the
//! `EMBEDDING_*_PREFIX` / `EMBEDDING_INPUT_TYPE` settings of the server) every site is also
//! measured hybrid. `bench/retrieval.sh` runs it all, with a local e5 model.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use lectern::config::Settings;
use lectern::retrieval::site::Location;
use lectern::retrieval::{Quiet, Retriever, embed::DenseEmbedder};

const SOURCES: usize = 5;

struct Question {
    text: String,
    pages: Vec<String>,
}

fn questions(file: &Path) -> Vec<Question> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (question, pages) = line.split_once('\t').unwrap_or((line, ""));
            Question {
                text: question.trim().to_owned(),
                pages: pages
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
            }
        })
        .collect()
}

fn is_aggregate(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(name, "print.html" | "toc.html")
}

#[derive(Default)]
struct Scores {
    questions: usize,
    found: usize,
    reciprocal_ranks: f64,
    slots: usize,
    aggregate_slots: usize,
    repeated_slots: usize,
    in_book_relevance: Vec<f64>,
    off_topic_relevance: Vec<f64>,
    /// Each off-topic question with its relevance and the page it matched best.
    off_topic: Vec<String>,
    misses: Vec<String>,
}

async fn measure(
    book: &Path,
    set: &[Question],
    off_topic: &[Question],
    dense: Option<(DenseEmbedder, usize)>,
    per_page: usize,
) -> Scores {
    let data = tempfile_dir();
    let retriever = Retriever::embedded(&data, dense, per_page).expect("a fresh store opens");
    let started = std::time::Instant::now();
    let summary = retriever
        .ingest(&[Location::Folder(book.to_owned())], &Quiet)
        .await
        .expect("the book is indexed");
    println!(
        "  indexed {} pages ({} skipped: {}), {} chunks in {:.1} s",
        summary.pages,
        summary.skipped.len(),
        skipped_kinds(&summary.skipped),
        summary.chunks,
        started.elapsed().as_secs_f64()
    );
    // A duplicate page (mdBook's index.html is its first chapter) is found as its twin.
    let twins: HashMap<String, String> = summary
        .skipped
        .iter()
        .filter_map(|s| Some((s.path.clone(), s.duplicate_of.clone()?)))
        .collect();
    let mut scores = Scores::default();
    for question in set {
        let found = retriever
            .search(&question.text, SOURCES)
            .await
            .expect("search works");
        let wanted: HashSet<&str> = question
            .pages
            .iter()
            .map(|p| twins.get(p).map_or(p.as_str(), String::as_str))
            .collect();
        let paths: Vec<&str> = found.passages.iter().map(|p| p.path.as_str()).collect();
        scores.questions += 1;
        match paths.iter().position(|p| wanted.contains(p)) {
            Some(rank) => {
                scores.found += 1;
                scores.reciprocal_ranks += 1.0 / (rank + 1) as f64;
            }
            None => scores.misses.push(format!(
                "{} → wanted {:?}, got {:?}",
                question.text, question.pages, paths
            )),
        }
        let mut seen = HashSet::new();
        for path in &paths {
            scores.slots += 1;
            if is_aggregate(path) {
                scores.aggregate_slots += 1;
            }
            if !seen.insert(*path) {
                scores.repeated_slots += 1;
            }
        }
        scores.in_book_relevance.push(found.relevance);
    }
    for question in off_topic {
        let found = retriever
            .search(&question.text, SOURCES)
            .await
            .expect("search works");
        scores.off_topic_relevance.push(found.relevance);
        scores.off_topic.push(format!(
            "{:.2} {} → {}",
            found.relevance,
            question.text,
            found
                .passages
                .first()
                .map_or("nothing", |p| p.path.as_str())
        ));
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
    let dir = std::env::temp_dir().join(format!("lectern-retrieval-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

fn quantiles(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return "-".into();
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.2} · p10 {:.2} · median {:.2} · max {:.2}",
        at(0.0),
        at(0.1),
        at(0.5),
        at(1.0)
    )
}

fn report(site: &str, mode: &str, s: &Scores, threshold: f64) {
    let share = |n: usize| n as f64 / s.slots.max(1) as f64;
    let answered = s
        .in_book_relevance
        .iter()
        .filter(|r| **r >= threshold)
        .count();
    let caught = s
        .off_topic_relevance
        .iter()
        .filter(|r| **r < threshold)
        .count();
    println!(
        "| {site} | {mode} | {} | {:.2} | {:.2} | {:.0} % | {:.0} % | {}/{} | {}/{} |",
        s.questions,
        s.found as f64 / s.questions.max(1) as f64,
        s.reciprocal_ranks / s.questions.max(1) as f64,
        share(s.aggregate_slots) * 100.0,
        share(s.repeated_slots) * 100.0,
        answered,
        s.in_book_relevance.len(),
        caught,
        s.off_topic_relevance.len(),
    );
    println!("  relevance in book:  {}", quantiles(&s.in_book_relevance));
    println!(
        "  relevance off topic: {}",
        quantiles(&s.off_topic_relevance)
    );
    for miss in &s.misses {
        println!("  miss: {miss}");
    }
    for line in &s.off_topic {
        println!("  off topic: {line}");
    }
}

#[tokio::main]
async fn main() {
    let docs = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()).join("share/doc/rust/html"))
        .expect("rustc --print sysroot");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let books: Vec<PathBuf> = if args.is_empty() {
        vec![docs.join("nomicon"), docs.join("reference")]
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let sets = Path::new(env!("CARGO_MANIFEST_DIR")).join("retrieval");
    let off_topic = questions(&sets.join("off-topic.tsv"));
    let settings = Settings::from_lookup(|k| std::env::var(k).ok()).expect("valid settings");
    let per_page = settings.retrieval.sources_per_page;
    let threshold = f64::from(settings.retrieval.min_relevance);
    println!(
        "sources per page: {per_page}; RETRIEVAL_MIN_SCORE: {threshold}; embeddings: {}",
        settings
            .embedding
            .as_ref()
            .map_or("none".to_owned(), |(s, d)| format!(
                "{} ({d} dimensions)",
                s.model
            ))
    );
    let mut rows = Vec::new();
    for book in &books {
        let site = book
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let set = questions(&sets.join(format!("{site}.tsv")));
        println!("{site}, BM25:");
        let bm25 = measure(book, &set, &off_topic, None, per_page).await;
        rows.push((site.clone(), "BM25", bm25));
        if let Some((service, dims)) = settings.embedding.clone() {
            println!("{site}, hybrid:");
            let embedder = DenseEmbedder::new(service, settings.retrieval.embedding_sides.clone());
            let hybrid = measure(book, &set, &off_topic, Some((embedder, dims)), per_page).await;
            rows.push((site, "hybrid", hybrid));
        }
    }
    println!();
    println!(
        "| site | mode | questions | recall@5 | MRR | aggregate slots | repeated slots | in-book answered | off-topic caught |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (site, mode, scores) in &rows {
        report(site, mode, scores, threshold);
    }
}
