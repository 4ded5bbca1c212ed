//! The synonym table: readers ask about a "folder" where documentation says
//! "directory". Built in (`synonyms.txt` beside this file, general vocabulary only) and
//! extended by `RETRIEVAL_SYNONYMS` (a file of the same format). Each line is a group of
//! comma-separated phrases; a question holding every word of one phrase (after the BM25
//! tokenizer's stemming) also asks for the words of the group's other phrases.

use std::collections::HashSet;

use super::embed::Bm25;

/// The built-in table.
pub const BUILT_IN: &str = include_str!("synonyms.txt");

/// Groups of phrases, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synonyms {
    groups: Vec<Vec<String>>,
    /// The same groups as the words BM25 makes of each phrase.
    words: Vec<Vec<Vec<u32>>>,
}

impl Synonyms {
    /// Reads a table; an error names the line that is not a group of two or more
    /// phrases.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut groups = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let phrases: Vec<String> = line
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            if phrases.len() < 2 {
                return Err(format!(
                    "line {}: a group needs two or more comma-separated phrases",
                    number + 1
                ));
            }
            groups.push(phrases);
        }
        let mut table = Self {
            groups,
            words: Vec::new(),
        };
        table.tokenize();
        Ok(table)
    }

    /// The built-in table, with `extra` (the text of a `RETRIEVAL_SYNONYMS` file) after
    /// it.
    pub fn with_extra(extra: Option<&str>) -> Result<Self, String> {
        let mut table = Self::parse(BUILT_IN).map_err(|e| format!("the built-in table: {e}"))?;
        if let Some(extra) = extra {
            let more = Self::parse(extra)?;
            table.groups.extend(more.groups);
            table.tokenize();
        }
        Ok(table)
    }

    fn tokenize(&mut self) {
        let Ok(bm25) = Bm25::english() else {
            return;
        };
        self.words = self
            .groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|phrase| bm25.query(phrase).indices)
                    .filter(|words| !words.is_empty())
                    .collect()
            })
            .collect();
    }

    /// For every phrase whose words are all in `question`: that phrase's words and the
    /// words of the other phrases of its group.
    pub fn matches<'a>(
        &'a self,
        question: &'a HashSet<u32>,
    ) -> impl Iterator<Item = (&'a [u32], Vec<Vec<u32>>)> + 'a {
        self.words.iter().flat_map(move |group| {
            group
                .iter()
                .enumerate()
                .filter(move |(_, phrase)| phrase.iter().all(|w| question.contains(w)))
                .map(move |(i, phrase)| {
                    let others = group
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, other)| other.clone())
                        .collect();
                    (phrase.as_slice(), others)
                })
        })
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_reads() {
        let table = Synonyms::with_extra(None).unwrap();
        assert!(table.len() > 20);
    }

    #[test]
    fn a_phrase_matches_when_all_its_words_are_asked_stemmed() {
        let table = Synonyms::parse("scratch file, temporary file\n").unwrap();
        let bm25 = Bm25::english().unwrap();
        let asked: HashSet<u32> = bm25
            .query("How do I make scratch files?")
            .indices
            .into_iter()
            .collect();
        let matched: Vec<_> = table.matches(&asked).collect();
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].1, vec![bm25.query("temporary file").indices]);
        let only_file: HashSet<u32> = bm25.query("a file").indices.into_iter().collect();
        assert_eq!(table.matches(&only_file).count(), 0);
    }

    #[test]
    fn a_line_of_one_phrase_is_refused_with_its_number() {
        assert_eq!(
            Synonyms::parse("# comment\nfolder, directory\nlonely\n"),
            Err("line 3: a group needs two or more comma-separated phrases".into())
        );
    }
}
