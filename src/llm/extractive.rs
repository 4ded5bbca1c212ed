//! Answers without a model: the sentences of the retrieved passages that share the most
//! words with the question, in passage order, each cited, under a line that says this is
//! an extract. Used when no model is configured, and whenever the model fails, so a
//! reader never gets an empty answer.

use std::collections::HashSet;

use crate::retrieval::Passage;

/// How many sentences an extractive answer quotes at most.
const MAX_SENTENCES: usize = 4;
pub const NOTICE: &str = "Extractive answer (quoted from the book; no language model was used):";
pub const NOTHING_FOUND: &str = "I could not find anything about this in the book.";

pub fn answer(question: &str, passages: &[Passage]) -> String {
    if passages.is_empty() {
        return NOTHING_FOUND.to_owned();
    }
    let wanted = terms(question);
    let mut scored: Vec<(usize, usize, f64, &str)> = Vec::new();
    for (p, passage) in passages.iter().enumerate() {
        for sentence in sentences(&passage.text) {
            let overlap = terms(sentence).intersection(&wanted).count();
            let weight = overlap as f64 + passage.score.max(0.0) * 1e-3;
            scored.push((p, scored.len(), weight, sentence));
        }
    }
    // Best sentences first, then back into reading order for the answer.
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<_> = scored.into_iter().take(MAX_SENTENCES).collect();
    chosen.sort_by_key(|(p, order, _, _)| (*p, *order));
    let body: Vec<String> = chosen
        .iter()
        .map(|(p, _, _, sentence)| format!("{} [{}]", sentence.trim(), p + 1))
        .collect();
    format!("{NOTICE}\n\n{}", body.join(" "))
}

fn terms(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 2)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| s.chars().count() > 3)
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "how", "its", "what", "when", "where", "which", "who", "why",
    "with", "this", "that", "from", "does", "did", "into", "about", "there", "their", "then",
    "than", "them", "they", "will", "would", "should", "could", "your", "have",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str) -> Passage {
        Passage {
            title: "T".into(),
            path: "p.md".into(),
            heading: String::new(),
            text: text.into(),
            score: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn quotes_the_matching_sentences_with_citations() {
        let passages = [
            passage("Cats sleep a lot. The borrow checker enforces ownership rules."),
            passage("Ownership means each value has one owner. Unrelated filler here."),
        ];
        let answer = answer(
            "What does the borrow checker enforce about ownership?",
            &passages,
        );
        assert!(answer.starts_with(NOTICE));
        assert!(answer.contains("The borrow checker enforces ownership rules. [1]"));
        assert!(answer.contains("Ownership means each value has one owner. [2]"));
    }

    #[test]
    fn says_so_when_nothing_was_found() {
        assert_eq!(answer("anything", &[]), NOTHING_FOUND);
    }
}
