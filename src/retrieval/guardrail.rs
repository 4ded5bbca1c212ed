//! The "not in this book" guardrail, calibrated per index rather than by a constant.
//!
//! A question's relevance is the share of its weight the best passage holds
//! ([`super::rank::Coverage`]). Where the line between "the book covers this" and "it
//! does not" falls depends on the book: a large API reference uses many everyday words,
//! so an off-topic question finds more of its words there than in a short guide. So the
//! index measures itself:
//! - the off-topic side: the relevance of everyday questions no book is about
//!   (`probes.txt`, never the benchmark's own off-topic set), whose 80th percentile plus
//!   [`MARGIN`] is the threshold;
//! - the in-book side: the relevance of the index's own sentences (the first sentence
//!   of sampled sections) asked as questions; the threshold never goes above
//!   [`IN_BOOK_SHARE`] of their 5th percentile, so what the book says stays answered.
//!
//! The result is clamped to [`FLOOR`]..[`CEILING`], shown by `lectern ingest`, computed
//! again whenever the index's passage count changes, and replaced by
//! `RETRIEVAL_MIN_SCORE` when that is set (0 turns the guardrail off).

use super::{Embed, RetrievalError, Retriever};

/// The everyday questions the off-topic side is measured with.
const PROBES: &str = include_str!("probes.txt");
/// The percentile of the off-topic probes the threshold sits above.
pub const OFF_TOPIC_QUANTILE: f64 = 0.8;
/// Added to that percentile.
pub const MARGIN: f64 = 0.05;
/// The threshold stays at or under this share of the index's own sentences' 5th
/// percentile.
pub const IN_BOOK_SHARE: f64 = 0.9;
/// Bounds of a calibrated threshold.
pub const FLOOR: f64 = 0.25;
pub const CEILING: f64 = 0.9;
/// Sections sampled for the in-book side.
const SAMPLES: usize = 60;

/// What decides that a question is not covered by the book.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    /// Questions whose relevance is under this are answered "not in this book" (0: off).
    pub threshold: f64,
    pub basis: Basis,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Basis {
    /// `RETRIEVAL_MIN_SCORE`.
    Fixed,
    /// Measured on the index.
    Calibrated {
        /// 80th percentile of the off-topic probes' relevance.
        off_topic: f64,
        /// 5th percentile of the index's own sentences' relevance.
        in_book: f64,
        probes: usize,
        samples: usize,
    },
    /// An empty index: nothing to calibrate with yet.
    Empty,
}

impl std::fmt::Display for Guardrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.basis {
            Basis::Fixed if self.threshold == 0.0 => {
                write!(f, "guardrail off (RETRIEVAL_MIN_SCORE=0)")
            }
            Basis::Fixed => write!(
                f,
                "guardrail: \"not in this book\" under relevance {:.2} (RETRIEVAL_MIN_SCORE)",
                self.threshold
            ),
            Basis::Calibrated {
                off_topic,
                in_book,
                probes,
                samples,
            } => write!(
                f,
                "guardrail: \"not in this book\" under relevance {:.2}, calibrated on this index ({probes} off-topic probes: 80th percentile {off_topic:.2}; {samples} of its own sentences: 5th percentile {in_book:.2}; RETRIEVAL_MIN_SCORE overrides it)",
                self.threshold
            ),
            Basis::Empty => write!(
                f,
                "guardrail: \"not in this book\" under relevance {:.2} (the index is empty)",
                self.threshold
            ),
        }
    }
}

/// The guardrail for the index as it is now.
pub(super) async fn calibrate(
    retriever: &Retriever,
    fixed: Option<f64>,
) -> Result<Guardrail, RetrievalError> {
    if let Some(threshold) = fixed {
        return Ok(Guardrail {
            threshold,
            basis: Basis::Fixed,
        });
    }
    let samples = retriever.sample(SAMPLES * 4).await?;
    if samples.is_empty() {
        return Ok(Guardrail {
            threshold: FLOOR,
            basis: Basis::Empty,
        });
    }
    let mut off_topic = Vec::new();
    for probe in PROBES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        off_topic.push(
            retriever
                .search_unrecorded(probe, None, 5, Embed::SparseOnly)
                .await?
                .relevance,
        );
    }
    let mut in_book = Vec::new();
    for sentence in samples
        .iter()
        .filter(|p| p.lead.split_whitespace().count() >= 4)
        .map(|p| p.lead.as_str())
        .take(SAMPLES)
    {
        in_book.push(
            retriever
                .search_unrecorded(sentence, None, 5, Embed::SparseOnly)
                .await?
                .relevance,
        );
    }
    let off = quantile(&mut off_topic, OFF_TOPIC_QUANTILE);
    let own = if in_book.is_empty() {
        1.0
    } else {
        quantile(&mut in_book, 0.05)
    };
    Ok(Guardrail {
        threshold: threshold(off, own),
        basis: Basis::Calibrated {
            off_topic: off,
            in_book: own,
            probes: off_topic.len(),
            samples: in_book.len(),
        },
    })
}

/// The threshold from the two sides' percentiles.
fn threshold(off_topic: f64, in_book: f64) -> f64 {
    (off_topic + MARGIN)
        .clamp(FLOOR, CEILING)
        .min(in_book * IN_BOOK_SHARE)
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_sits_above_off_topic_and_under_what_the_book_says() {
        assert!((threshold(0.4, 1.0) - 0.45).abs() < 1e-9);
        assert!((threshold(0.26, 1.0) - 0.31).abs() < 1e-9);
        // Never under the floor, never over the ceiling.
        assert_eq!(threshold(0.0, 1.0), FLOOR);
        assert_eq!(threshold(0.99, 1.0), CEILING);
        // A book whose own sentences match weakly keeps them answered.
        assert!((threshold(0.6, 0.5) - 0.45).abs() < 1e-9);
    }

    #[test]
    fn quantiles_of_a_sample() {
        let mut v = vec![0.5, 0.1, 0.9, 0.3, 0.7];
        assert_eq!(quantile(&mut v, 0.0), 0.1);
        assert_eq!(quantile(&mut v, 0.5), 0.5);
        assert_eq!(quantile(&mut v, 1.0), 0.9);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }
}
