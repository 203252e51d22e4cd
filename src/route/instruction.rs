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
    let paragraphs = paragraphs(&text);
    let joined = paragraphs.join("\n");
    if joined.len() <= WHOLE || paragraphs.is_empty() {
        return collapse(&joined);
    }
    let units = or_lines(paragraphs);
    let first = head(units[0], END);
    let last = tail(units[units.len() - 1], END);
    collapse(&format!("{first} … {last}"))
}

/// The non-empty paragraphs of `text`, trimmed.
fn paragraphs(text: &str) -> Vec<&str> {
    text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// The units whose first and last are a text's ends: its paragraphs, or its lines when it is one
/// paragraph. Material pasted without blank lines (a log, a CSV, unfenced code) is one paragraph,
/// and the request sits on its first or last line, not in its first or last 240 bytes.
fn or_lines(paragraphs: Vec<&str>) -> Vec<&str> {
    match paragraphs.as_slice() {
        [only] => only.lines().map(str::trim).filter(|l| !l.is_empty()).collect(),
        _ => paragraphs,
    }
}

/// "Do X with this: <pasted material>": when a colon near the start introduces material on the
/// lines below it, the words before it are the instruction, plus the end of the
/// material ("…\n\nKeep it under 50 words.", or an introduction's real request at the end).
fn lead_in(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    // A colon that ends a phrase ("12:05", "https://" and "a:b" are material): one that ends its
    // line, or on the first line one followed by a space (further down, "ERROR: disk full" is
    // material too).
    let first_line_end = trimmed.find('\n').unwrap_or(trimmed.len());
    let (pos, colon) = trimmed.char_indices().find(|&(at, c)| {
        let after = &trimmed[at + c.len_utf8()..];
        let ends_line = after.trim_start_matches([' ', '\t', '\r']).starts_with('\n');
        (c == ':' || c == '：')
            && (ends_line || (at < first_line_end && (c == '：' || after.starts_with(char::is_whitespace))))
    })?;
    let head = trimmed[..pos].trim();
    let rest = &trimmed[pos + colon.len_utf8()..];
    if pos > 300 || head.len() < 8 {
        return None;
    }
    let rest_trimmed = rest.trim();
    if !rest_trimmed.contains('\n') {
        // On the same line, only a quotation is material ("into Korean: \"This information…\""),
        // with any request after it; plain words go on with the request ("prove: for every n…").
        let after = after_quotation(rest_trimmed)?;
        return Some(if after.len() >= 12 { format!("{head} … {after}") } else { head.to_string() });
    }
    // The request may also come after the material ("Here's our access log:\n…\nWhy the 502s?"):
    // the last paragraph is kept too, or the last line when the material has no blank lines.
    let units = or_lines(paragraphs(rest));
    let closing = units.last().filter(|_| units.len() > 1).map(|last| tail(last, END));
    Some(match closing {
        Some(closing) => format!("{head} … {closing}"),
        None => head.to_string(),
    })
}

/// For text that opens with a quotation of at least `QUOTED` bytes, what follows its closing mark.
fn after_quotation(text: &str) -> Option<&str> {
    const QUOTED: usize = 100;
    const PAIRS: [(char, char); 8] =
        [('"', '"'), ('“', '”'), ('«', '»'), ('„', '“'), ('「', '」'), ('『', '』'), ('\'', '\''), ('‘', '’')];
    let open = text.chars().next()?;
    let (_, close) = PAIRS.iter().find(|(o, _)| *o == open)?;
    let end = text.rfind(*close).filter(|&end| end >= QUOTED)?;
    Some(text[end + close.len_utf8()..].trim())
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
        assert_eq!(instruction(prompt), "Schreib ein Haiku über diese Abfrage, die jede Nacht läuft … GROUP BY region");
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
    fn words_after_a_colon_on_the_same_line_go_on_with_the_request() {
        let prompt =
            "我在准备考研数学。请证明：对任意正整数 n，n^3 − n 都能被 6 整除。请给出两种证明方法，每一步都写清楚理由。";
        assert_eq!(instruction(prompt), prompt);
        let prompt = "Not asking for SQL here, just the math: the users table has 1,200 rows and I sample 50 without replacement. What's the chance one given user is in the sample?";
        assert_eq!(instruction(prompt), prompt);
    }

    #[test]
    fn a_quotation_after_a_colon_is_material_but_the_request_after_it_is_not() {
        let quote = "\"This information is provided for general purposes only and does not constitute legal advice of any kind.\"";
        let prompt = format!("I need this disclaimer in Korean for our footer: {quote}");
        assert_eq!(instruction(&prompt), "I need this disclaimer in Korean for our footer");
        let prompt = format!("For the card I wrote: {quote} Please put it into polite Japanese.");
        assert_eq!(instruction(&prompt), "For the card I wrote … Please put it into polite Japanese.");
        // A short quotation is read with its request.
        let prompt = "Выдели ИНН из строки: «ООО Ромашка, ИНН 7701234567, г. Москва»";
        assert_eq!(instruction(prompt), prompt);
    }

    #[test]
    fn material_pasted_without_blank_lines_is_judged_by_its_first_and_last_lines() {
        let log = "2024-03-01 12:00:01 INFO connected to db:primary at https://db.internal:5432\n".repeat(12);
        let prompt = format!("Can you write a limerick about this log?\n{log}");
        let judged = instruction(&prompt);
        assert!(judged.starts_with("Can you write a limerick about this log? … "), "{judged}");
        assert!(!judged.contains("limerick about this log? 2024"), "material is not part of the request: {judged}");
        let prompt = format!("Hi there,\nplease extract the error codes from this log:\n{log}");
        let judged = instruction(&prompt);
        assert!(judged.starts_with("Hi there, please extract the error codes from this log … 2024-03-01"), "{judged}");
        let prompt = format!("Here's an export from our shop system:\n{log}Why do some rows have no port?");
        assert_eq!(instruction(&prompt), "Here's an export from our shop system … Why do some rows have no port?");
        let prompt = format!("{log}Summarize what went wrong in one sentence.");
        let judged = instruction(&prompt);
        assert!(judged.ends_with(" … Summarize what went wrong in one sentence."), "{judged}");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let prompt = "请把下面的文字翻译成英文。".repeat(60);
        let judged = instruction(&prompt);
        assert!(!judged.is_empty());
    }
}
