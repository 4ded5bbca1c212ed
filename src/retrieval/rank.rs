//! Ranking: what a passage's sparse vector weighs, what a question asks the index for,
//! and how much of the question the book holds.
//!
//! - **Passages** are embedded field by field: the text, the page title, the heading path
//!   and the section's first sentence each get BM25 term weights of their own, summed
//!   with a weight per field ([`FIELD_WEIGHTS`]), so a word of the title or of a heading
//!   counts above the same word in the body. Identifiers are split into words as well
//!   (`read_dir` and `TcpStream` are also "read dir" and "tcp stream"), since readers ask
//!   in words, not in item names.
//! - **Questions** are the question's own words (weight 1), the words of the synonym
//!   table's other phrases ([`super::synonyms`], [`SYNONYM_WEIGHT`]) and, for a
//!   follow-up, the previous question's words ([`PREVIOUS_WEIGHT`]); passages of the
//!   pages the previous answer cited get [`PREVIOUS_PAGE_BOOST`], and changelog pages are
//!   down-weighted for questions that are not about versions ([`CHANGELOG_PENALTY`]).
//! - **Coverage** ([`Coverage`]) is the share of the question's weight (each word
//!   weighted by its IDF in this index) that a passage holds: what the guardrail reads.
//!
//! Every weight below was chosen on the retrieval benchmark (`bench/retrieval.sh`,
//! `docs/benchmarks.md`, "Retrieval"); rerun it after changing one.

use std::collections::{BTreeMap, HashMap, HashSet};

use qdrant_edge::SparseVector;

use super::embed::Bm25;
use super::store::ChunkPayload;
use super::synonyms::Synonyms;

/// Weights of a passage's fields in its sparse vector: text, title, heading path (the
/// headings other than the title), the section's first sentence.
pub const FIELD_WEIGHTS: Fields = Fields {
    text: 1.0,
    title: 1.0,
    heading: 1.0,
    lead: 0.5,
};
/// Words of a synonym of a phrase in the question.
pub const SYNONYM_WEIGHT: f32 = 0.6;
/// Words of the previous question in a conversation.
pub const PREVIOUS_WEIGHT: f32 = 0.35;
/// Score factor of passages on a page the previous answer cited.
pub const PREVIOUS_PAGE_BOOST: f32 = 1.15;
/// How much a word of the question that no passage holds weighs, in IDFs of a word
/// that one passage holds: a question about something the book never names is most
/// likely not about the book.
pub const UNKNOWN_WORD_WEIGHT: f64 = 2.0;
/// Score factor of release notes and changelogs for questions not about versions.
pub const CHANGELOG_PENALTY: f32 = 0.5;

/// A weight per field of a passage.
pub struct Fields {
    pub text: f32,
    pub title: f32,
    pub heading: f32,
    pub lead: f32,
}

/// The turn before this one in the same conversation: what a follow-up leans on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Previous {
    pub question: String,
    /// The paths of the pages its answer cited.
    pub pages: Vec<String>,
}

/// What a question asks the index for.
pub struct Query {
    /// Everything searched with: the question, its synonyms, the previous question.
    pub sparse: SparseVector,
    /// The question's own words, each with the words that may stand for it.
    pub terms: Vec<Term>,
    /// Whether the question is about versions and changes (changelogs are not
    /// down-weighted then).
    pub about_versions: bool,
}

/// One word of a question and the synonym phrases that stand for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub id: u32,
    /// 1 for the question's own words, [`PREVIOUS_WEIGHT`] for the previous question's.
    pub weight: f64,
    /// Each a phrase's words: a passage holding all of them holds the term.
    pub alternatives: Vec<Vec<u32>>,
}

pub struct Ranker {
    bm25: Bm25,
    synonyms: Synonyms,
}

impl Ranker {
    pub fn new(bm25: Bm25, synonyms: Synonyms) -> Self {
        Self { bm25, synonyms }
    }

    /// A passage's sparse vector, from the fields its payload keeps (so it can be
    /// computed again from a search hit).
    pub fn passage(&self, title: &str, heading: &str, text: &str, lead: &str) -> SparseVector {
        let headings: Vec<&str> = heading
            .split(super::chunk::HEADING_SEPARATOR)
            .filter(|h| !h.is_empty() && *h != title)
            .collect();
        let title = with_split_identifiers(title);
        let heading = with_split_identifiers(&headings.join("\n"));
        let w = &FIELD_WEIGHTS;
        let mut sum = BTreeMap::new();
        for (field, weight) in [
            (text, w.text),
            (title.as_str(), w.title),
            (heading.as_str(), w.heading),
            (lead, w.lead),
        ] {
            if !field.trim().is_empty() {
                add(&mut sum, &self.bm25.document(field), weight);
            }
        }
        into_sparse(sum)
    }

    /// The sparse vector of a stored passage.
    pub fn payload(&self, payload: &ChunkPayload) -> SparseVector {
        self.passage(
            &payload.title,
            &payload.heading,
            &payload.text,
            &payload.lead,
        )
    }

    /// What to search for `question`, asked after `previous` when it is a follow-up.
    pub fn query(&self, question: &str, previous: Option<&Previous>) -> Query {
        let own = self.bm25.query(&with_split_identifiers(question));
        let asked: HashSet<u32> = own.indices.iter().copied().collect();
        let mut sum = BTreeMap::new();
        add(&mut sum, &own, 1.0);
        let mut alternatives: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
        for (phrase, others) in self.synonyms.matches(&asked) {
            for other in others {
                let words: Vec<u32> = other
                    .iter()
                    .copied()
                    .filter(|w| !asked.contains(w))
                    .collect();
                for word in &words {
                    sum.entry(*word).or_insert(SYNONYM_WEIGHT);
                }
                for word in phrase {
                    alternatives.entry(*word).or_default().push(other.clone());
                }
            }
        }
        let mut terms: Vec<Term> = own
            .indices
            .iter()
            .map(|id| Term {
                id: *id,
                weight: 1.0,
                alternatives: alternatives.remove(id).unwrap_or_default(),
            })
            .collect();
        if let Some(previous) = previous {
            for word in self.bm25.query(&previous.question).indices {
                if !asked.contains(&word) {
                    sum.entry(word).or_insert(PREVIOUS_WEIGHT);
                    terms.push(Term {
                        id: word,
                        weight: f64::from(PREVIOUS_WEIGHT),
                        alternatives: Vec::new(),
                    });
                }
            }
        }
        Query {
            sparse: into_sparse(sum),
            terms,
            about_versions: about_versions(question),
        }
    }

    /// The factor a candidate's score is multiplied by.
    pub fn adjustment(
        &self,
        query: &Query,
        hit: &ChunkPayload,
        previous: Option<&Previous>,
    ) -> f32 {
        let mut factor = 1.0;
        if !query.about_versions && is_changelog(&hit.path, &hit.title) {
            factor *= CHANGELOG_PENALTY;
        }
        if previous.is_some_and(|p| p.pages.contains(&hit.path)) {
            factor *= PREVIOUS_PAGE_BOOST;
        }
        factor
    }
}

/// How much of a question the index and a passage hold.
pub struct Coverage<'a> {
    pub terms: &'a [Term],
    /// Each term's IDF in the index (`None`: no passage holds it).
    pub idf: &'a [Option<f64>],
    /// The IDF a word found in one passage only has: what a word of the question that
    /// the book never uses weighs.
    pub rare: f64,
}

impl Coverage<'_> {
    /// The share of the question's weight `passage` holds, from 0 to 1.
    pub fn of(&self, passage: &SparseVector) -> f64 {
        let words: HashSet<u32> = passage.indices.iter().copied().collect();
        let mut held = 0.0;
        let mut total = 0.0;
        for (term, idf) in self.terms.iter().zip(self.idf) {
            let weight = term.weight * idf.unwrap_or(self.rare * UNKNOWN_WORD_WEIGHT);
            total += weight;
            let holds = words.contains(&term.id)
                || term
                    .alternatives
                    .iter()
                    .any(|phrase| !phrase.is_empty() && phrase.iter().all(|w| words.contains(w)));
            if holds {
                held += weight;
            }
        }
        if total == 0.0 { 0.0 } else { held / total }
    }
}

fn add(sum: &mut BTreeMap<u32, f32>, vector: &SparseVector, weight: f32) {
    for (index, value) in vector.indices.iter().zip(&vector.values) {
        *sum.entry(*index).or_insert(0.0) += value * weight;
    }
}

fn into_sparse(sum: BTreeMap<u32, f32>) -> SparseVector {
    let (indices, values) = sum.into_iter().unzip();
    SparseVector { indices, values }
}

/// The value of `term` in `vector` (0 when absent).
pub fn value_of(vector: &SparseVector, term: u32) -> f32 {
    vector
        .indices
        .iter()
        .position(|i| *i == term)
        .map_or(0.0, |at| vector.values[at])
}

/// `text` followed by the words of its identifiers: `read_dir` → `read dir`,
/// `TcpStream` → `Tcp Stream`, `os.path.join` → `os path join`.
pub fn with_split_identifiers(text: &str) -> String {
    let mut extra = String::new();
    for word in text.split(|c: char| c.is_whitespace() || "()<>[]{},;:&*'\"`".contains(c)) {
        let split = split_identifier(word);
        if !split.is_empty() {
            extra.push(' ');
            extra.push_str(&split);
        }
    }
    if extra.is_empty() {
        text.to_owned()
    } else {
        format!("{text}\n{extra}")
    }
}

/// The words of one identifier, or "" when it is a plain word.
fn split_identifier(word: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous: Option<char> = None;
    for c in word.chars() {
        if c == '_' || c == '.' || c == '-' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else if c.is_uppercase() && previous.is_some_and(char::is_lowercase) {
            words.push(std::mem::take(&mut current));
            current.push(c);
        } else {
            current.push(c);
        }
        previous = Some(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    if words.len() < 2 {
        return String::new();
    }
    words.join(" ")
}

/// A page of release notes: `whatsnew/3.11.html`, `changelog.html`, `release-notes/…`.
pub fn is_changelog(path: &str, title: &str) -> bool {
    const NAMES: [&str; 7] = [
        "whatsnew",
        "changelog",
        "changes",
        "release-notes",
        "releases",
        "release_notes",
        "news",
    ];
    let lower = path.to_ascii_lowercase();
    let in_path = lower.split('/').any(|part| {
        let stem = part.rsplit_once('.').map_or(part, |(stem, _)| stem);
        NAMES.contains(&stem)
    });
    let title = title.to_ascii_lowercase();
    in_path
        || title.starts_with("what's new")
        || title.contains("release notes")
        || title.contains("changelog")
}

/// A question about versions or changes, which release notes answer.
fn about_versions(question: &str) -> bool {
    let lower = question.to_lowercase();
    let has_version_number = lower
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .any(|w| w.contains('.') && w.split('.').filter(|p| !p.is_empty()).count() >= 2);
    has_version_number
        || [
            "version",
            "release",
            "changed",
            "changes",
            "what's new",
            "whats new",
            "new in",
            "deprecat",
            "removed in",
            "added in",
            "changelog",
            "upgrade",
        ]
        .iter()
        .any(|w| lower.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranker() -> Ranker {
        Ranker::new(
            Bm25::english().unwrap(),
            Synonyms::parse("folder, directory\nscratch file, temporary file\n").unwrap(),
        )
    }

    #[test]
    fn identifiers_are_also_words() {
        assert_eq!(
            with_split_identifiers("Function read_dir"),
            "Function read_dir\n read dir"
        );
        assert_eq!(
            with_split_identifiers("TcpStream"),
            "TcpStream\n Tcp Stream"
        );
        assert_eq!(
            with_split_identifiers("os.path.join"),
            "os.path.join\n os path join"
        );
        assert_eq!(with_split_identifiers("plain words"), "plain words");
    }

    #[test]
    fn a_title_word_weighs_more_than_the_same_word_in_the_text() {
        let r = ranker();
        let word = r.bm25.query("directory").indices[0];
        let in_title = r.passage("Directory", "", "Some words about files here.", "");
        let in_text = r.passage("Files", "", "Some words about a directory here.", "");
        assert!(value_of(&in_title, word) > value_of(&in_text, word));
    }

    #[test]
    fn synonyms_and_the_previous_question_join_the_query_below_the_question() {
        let r = ranker();
        let previous = Previous {
            question: "How do I parse command-line options?".into(),
            pages: vec!["argparse.html".into()],
        };
        let query = r.query("How do I list a folder?", Some(&previous));
        let directory = r.bm25.query("directory").indices[0];
        let folder = r.bm25.query("folder").indices[0];
        let options = r.bm25.query("options").indices[0];
        assert_eq!(value_of(&query.sparse, folder), 1.0);
        assert_eq!(value_of(&query.sparse, directory), SYNONYM_WEIGHT);
        assert_eq!(value_of(&query.sparse, options), PREVIOUS_WEIGHT);
        let term = query.terms.iter().find(|t| t.id == folder).unwrap();
        assert_eq!(term.alternatives, vec![vec![directory]]);
        // The guardrail weighs the previous question's words below the question's own.
        let weight = |id: u32| query.terms.iter().find(|t| t.id == id).map(|t| t.weight);
        assert_eq!(weight(folder), Some(1.0));
        assert_eq!(weight(options), Some(f64::from(PREVIOUS_WEIGHT)));
        assert_eq!(weight(directory), None);
    }

    #[test]
    fn coverage_counts_a_synonym_as_the_word_it_stands_for() {
        let r = ranker();
        let query = r.query("list a folder", None);
        let idf: Vec<Option<f64>> = query.terms.iter().map(|_| Some(2.0)).collect();
        let coverage = Coverage {
            terms: &query.terms,
            idf: &idf,
            rare: 5.0,
        };
        let holds = r.passage("", "", "list the directory", "");
        let half = r.passage("", "", "list the files", "");
        assert!((coverage.of(&holds) - 1.0).abs() < 1e-9);
        assert!((coverage.of(&half) - 0.5).abs() < 1e-9);
        // A word the book never uses weighs twice its rarest word.
        let list = r.bm25.query("list").indices[0];
        let unknown: Vec<Option<f64>> = query
            .terms
            .iter()
            .map(|t| (t.id == list).then_some(2.0))
            .collect();
        let coverage = Coverage {
            terms: &query.terms,
            idf: &unknown,
            rare: 3.0,
        };
        assert!((coverage.of(&half) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn changelogs_are_down_weighted_unless_the_question_is_about_versions() {
        let r = ranker();
        let page = ChunkPayload {
            path: "whatsnew/3.11.html".into(),
            title: "What's New In Python 3.11".into(),
            ..ChunkPayload::default()
        };
        let plain = r.query("How do I parse TOML?", None);
        assert_eq!(r.adjustment(&plain, &page, None), CHANGELOG_PENALTY);
        for question in [
            "What is new in 3.11?",
            "Which version added tomllib?",
            "What changed in the latest release?",
        ] {
            assert_eq!(
                r.adjustment(&r.query(question, None), &page, None),
                1.0,
                "{question}"
            );
        }
        assert!(is_changelog("about/release-notes.html", "Release Notes"));
        assert!(is_changelog("CHANGELOG.html", ""));
        assert!(!is_changelog(
            "library/csv.html",
            "csv — CSV File Reading and Writing"
        ));
    }
}
