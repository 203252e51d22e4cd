//! "The instruction decides, not the pasted content": the part of a prompt the router judges.
//! Fenced code blocks are dropped; a long prompt is judged by its first and last paragraphs,
//! which is where people put what they want done with the material in between.

use crate::types::{Message, Role};

/// Prompts up to this many bytes are judged whole.
const WHOLE: usize = 400;
/// Each end of a long prompt contributes at most this many bytes.
const END: usize = 240;

/// The text of the last user turn (the request being made now).
pub fn last_user_text(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .and_then(|m| m.content.as_ref())
        .map(|c| c.text())
        .unwrap_or_default()
}

/// The instruction part of a prompt.
pub fn instruction(prompt: &str) -> String {
    let text = strip_code_fences(prompt);
    if let Some(head) = lead_in(&text) {
        return collapse(&head);
    }
    let paragraphs: Vec<&str> = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect();
    let joined = paragraphs.join("\n");
    if joined.len() <= WHOLE || paragraphs.is_empty() {
        return collapse(&joined);
    }
    let first = head(paragraphs[0], END);
    let last = paragraphs.last().map(|p| tail(p, END)).unwrap_or_default();
    if paragraphs.len() == 1 {
        return collapse(&format!("{first} … {last}"));
    }
    collapse(&format!("{first} … {last}"))
}

/// "Do X with this: <pasted material>": when a colon near the start introduces material (several
/// lines, or a long run of text), the words before it are the instruction, plus a short closing
/// paragraph if there is one ("…\n\nKeep it under 50 words.").
fn lead_in(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    let (pos, colon) = trimmed.char_indices().find(|(_, c)| *c == ':' || *c == '：')?;
    let head = trimmed[..pos].trim();
    let rest = &trimmed[pos + colon.len_utf8()..];
    let pasted = rest.trim().contains('\n') || rest.trim().len() >= 150;
    if pos > 300 || head.len() < 8 || !pasted {
        return None;
    }
    let closing = rest
        .trim_end()
        .rsplit("\n\n")
        .next()
        .map(str::trim)
        .filter(|p| p.len() < 200 && !p.is_empty() && rest.trim() != *p);
    Some(match closing {
        Some(closing) => format!("{head} … {closing}"),
        None => head.to_string(),
    })
}

fn strip_code_fences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            out.push_str(if in_fence { "\n[code]\n" } else { "\n\n" });
            continue;
        }
        if !in_fence {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_blocks_are_not_the_instruction() {
        let prompt = "Translate the comments in this snippet to German:\n```python\n# add two numbers\ndef add(a, b):\n    return a + b\n```";
        assert_eq!(instruction(prompt), "Translate the comments in this snippet to German: [code]");
    }

    #[test]
    fn long_prompts_are_judged_by_their_ends() {
        let pasted = "Invoice 2024-117. Item: 40 hours consulting at 120 EUR. ".repeat(30);
        let prompt = format!("Write a short poem about this invoice.\n\n{pasted}\n\nKeep it cheerful.");
        let judged = instruction(&prompt);
        assert!(judged.starts_with("Write a short poem about this invoice."), "{judged}");
        assert!(judged.ends_with("Keep it cheerful."), "{judged}");
        assert!(judged.len() < 2 * END + 10);
    }

    #[test]
    fn a_colon_introducing_pasted_material_ends_the_instruction() {
        let prompt = "Schreib ein Haiku über diese Abfrage, die jede Nacht läuft:\nSELECT region, SUM(betrag)\nFROM bestellungen\nGROUP BY region";
        assert_eq!(instruction(prompt), "Schreib ein Haiku über diese Abfrage, die jede Nacht läuft");
        let prompt = format!(
            "Summarize this email for me:\n{}\n\nKeep it under 50 words.",
            "Hi all, the garage is closed. ".repeat(10)
        );
        assert_eq!(instruction(&prompt), "Summarize this email for me … Keep it under 50 words.");
        assert_eq!(
            instruction("Question: how do I reverse a list in Python?"),
            "Question: how do I reverse a list in Python?"
        );
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let prompt = "请把下面的文字翻译成英文。".repeat(60);
        let judged = instruction(&prompt);
        assert!(!judged.is_empty());
    }
}
