//! A conversation as a document a reader can keep: Markdown to read, JSON to process.

use serde_json::json;

use crate::chat::SourceRef;
use crate::entities::{conversation, message};

fn sources(message: &message::Model) -> Vec<SourceRef> {
    serde_json::from_value(message.sources.clone()).unwrap_or_default()
}

/// `# Title`, then each question as a quote and each answer as text with its sources as
/// a numbered list of links (or paths, for pages without an address).
pub fn markdown(conversation: &conversation::Model, messages: &[message::Model]) -> String {
    let mut out = format!(
        "# {}\n\n_Exported from Lectern. Started {}, last active {}._\n",
        conversation.title.replace('\n', " "),
        conversation.created_at.format("%Y-%m-%d %H:%M UTC"),
        conversation.updated_at.format("%Y-%m-%d %H:%M UTC"),
    );
    for message in messages {
        if message.role == "user" {
            out.push_str("\n## Question\n\n");
            for line in message.content.lines() {
                out.push_str("> ");
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str("\n## Answer\n\n");
            out.push_str(message.content.trim_end());
            out.push('\n');
            let cited = sources(message);
            if !cited.is_empty() {
                out.push_str("\nSources:\n\n");
                for (n, source) in cited.iter().enumerate() {
                    let label = if source.heading.is_empty() {
                        source.title.clone()
                    } else {
                        format!("{} › {}", source.title, source.heading)
                    };
                    let label = label.replace(['[', ']'], "");
                    match &source.url {
                        Some(url) => out.push_str(&format!("{}. [{label}]({url})\n", n + 1)),
                        None => out.push_str(&format!("{}. {label} (`{}`)\n", n + 1, source.path)),
                    }
                }
            }
        }
    }
    out
}

/// Every field of the conversation and its messages.
pub fn json(conversation: &conversation::Model, messages: &[message::Model]) -> String {
    let messages: Vec<_> = messages
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "sources": sources(m),
                "unanswered": m.unanswered,
                "createdAt": m.created_at,
            })
        })
        .collect();
    let document = json!({
        "id": conversation.id,
        "title": conversation.title,
        "createdAt": conversation.created_at,
        "updatedAt": conversation.updated_at,
        "messages": messages,
    });
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".into())
}
