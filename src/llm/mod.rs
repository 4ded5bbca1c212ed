//! Writing the answer: a prompt that grounds the model in the retrieved passages (or the
//! reader's selection) and the conversation so far, sent to an OpenAI-compatible model,
//! with the extractive answer as the fallback whenever there is no model or it fails.

pub mod extractive;
pub mod openai;

use std::sync::atomic::{AtomicBool, Ordering};

use openai::{ChatMessage, ChatModel, LlmError};

use crate::retrieval::Passage;

/// Everything the answer is written from.
pub struct PromptInput<'a> {
    pub question: &'a str,
    pub selected_text: Option<&'a str>,
    pub passages: &'a [Passage],
    /// Earlier turns of the conversation, oldest first, as `(role, content)`.
    pub history: &'a [(String, String)],
}

const SYSTEM: &str = "You are the reading companion of a book. Answer the reader's question using only the numbered passages provided (and the passage the reader selected, if any). Cite the passages you use as [1], [2], … right after the sentence that uses them. If the passages do not contain the answer, say that the book does not cover it. Be concise.";

/// Builds the chat messages for a model.
pub fn prompt(input: &PromptInput<'_>) -> Vec<ChatMessage> {
    let mut context = String::new();
    if let Some(selected) = input.selected_text {
        context.push_str("The reader selected this passage and asks about it:\n\"\"\"\n");
        context.push_str(selected);
        context.push_str("\n\"\"\"\n\n");
    }
    context.push_str("Passages from the book:\n");
    for (i, p) in input.passages.iter().enumerate() {
        let heading = if p.heading.is_empty() {
            String::new()
        } else {
            format!(" — {}", p.heading)
        };
        context.push_str(&format!(
            "[{}] {}{} ({})\n{}\n\n",
            i + 1,
            p.title,
            heading,
            p.path,
            p.text
        ));
    }
    let mut messages = vec![
        ChatMessage {
            role: "system",
            content: SYSTEM.to_owned(),
        },
        ChatMessage {
            role: "system",
            content: context,
        },
    ];
    for (role, content) in input.history {
        let role = if role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        messages.push(ChatMessage {
            role,
            content: content.clone(),
        });
    }
    messages.push(ChatMessage {
        role: "user",
        content: input.question.to_owned(),
    });
    messages
}

/// The model, if configured.
pub struct Generator {
    model: Option<ChatModel>,
    /// Whether the last call to the model succeeded (for `health`).
    last_call_ok: AtomicBool,
}

/// How an answer was produced, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    Model,
    /// The model was not configured.
    Extractive,
    /// The model failed; the extract stands in.
    Fallback,
}

impl AnswerKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Extractive => "extractive",
            Self::Fallback => "fallback",
        }
    }
}

impl Generator {
    pub fn new(model: Option<ChatModel>) -> Self {
        Self {
            model,
            last_call_ok: AtomicBool::new(true),
        }
    }

    /// `None` without a model; otherwise whether its last call succeeded.
    pub fn healthy(&self) -> Option<bool> {
        self.model
            .as_ref()
            .map(|_| self.last_call_ok.load(Ordering::Relaxed))
    }

    /// Writes the answer, streaming pieces through `on_delta`. Never fails and never
    /// returns an empty answer: without a model, or when it fails before writing
    /// anything, the extractive answer is streamed instead; when it fails midway, what it
    /// wrote is kept and the reader is told it was cut short.
    pub async fn answer(
        &self,
        input: &PromptInput<'_>,
        mut on_delta: impl FnMut(&str),
    ) -> (String, AnswerKind) {
        let Some(model) = &self.model else {
            let text = extractive_for(input);
            on_delta(&text);
            return (text, AnswerKind::Extractive);
        };
        let outcome = model.complete(&prompt(input), &mut on_delta).await;
        self.last_call_ok.store(outcome.is_ok(), Ordering::Relaxed);
        match outcome {
            Ok(text) if !text.trim().is_empty() => (text, AnswerKind::Model),
            Ok(_) => fallback(input, on_delta, &LlmError::Protocol("empty answer".into())),
            Err((error, partial)) if partial.trim().is_empty() => fallback(input, on_delta, &error),
            Err((error, mut partial)) => {
                tracing::warn!(error = %error, "model stopped mid-answer");
                let note =
                    "\n\n(The answer was cut short because the language model stopped responding.)";
                on_delta(note);
                partial.push_str(note);
                (partial, AnswerKind::Model)
            }
        }
    }
}

fn extractive_for(input: &PromptInput<'_>) -> String {
    match input.selected_text {
        Some(selected) if input.passages.is_empty() => {
            let quote = crate::retrieval::Passage {
                title: "Selected text".into(),
                path: String::new(),
                heading: String::new(),
                text: selected.to_owned(),
                score: 1.0,
            };
            extractive::answer(input.question, std::slice::from_ref(&quote))
        }
        _ => extractive::answer(input.question, input.passages),
    }
}

fn fallback(
    input: &PromptInput<'_>,
    mut on_delta: impl FnMut(&str),
    error: &LlmError,
) -> (String, AnswerKind) {
    tracing::warn!(error = %error, "model unavailable; answering extractively");
    let text = extractive_for(input);
    on_delta(&text);
    (text, AnswerKind::Fallback)
}
