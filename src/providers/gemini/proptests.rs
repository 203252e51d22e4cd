//! Property tests for the Gemini translations: a streamed answer split anywhere agrees with the
//! same answer non-streamed, and arbitrary bytes or JSON never panic the translator.

use std::collections::VecDeque;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::super::sse::SseDecoder;
use super::super::stream::Translate;
use super::{StreamTranslator, from_wire};
use crate::types::ChatChunk;

/// Splits `text` into pieces at the given char offsets (taken modulo its length).
fn split_at(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.push(0);
    points.push(chars.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| chars[w[0]..w[1]].iter().collect()).collect()
}

#[derive(Debug, Clone)]
struct Answer {
    text: String,
    text_cuts: Vec<usize>,
    calls: Vec<(String, Value)>,
    /// Whether each function call gets its own event (else all ride on the last one).
    calls_apart: bool,
    finish: &'static str,
    /// Gemini separates events with CRLF pairs.
    crlf: bool,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 \"\\\\é中\n]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    })
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        any::<String>(),
        prop::collection::vec(0usize..80, 0..6),
        prop::collection::vec(("[a-z_]{1,10}", prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..4)), 0..3),
        any::<bool>(),
        prop_oneof![Just("STOP"), Just("MAX_TOKENS"), Just("SAFETY"), Just("OTHER")],
        any::<bool>(),
    )
        .prop_map(|(text, text_cuts, calls, calls_apart, finish, crlf)| Answer {
            text,
            text_cuts,
            calls: calls.into_iter().map(|(name, args)| (name, json!(args))).collect(),
            calls_apart,
            finish,
            crlf,
        })
}

fn chunk(parts: Vec<Value>, finish: Option<&str>, usage: Value) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": "r-1"})
}

fn call_part((name, args): &(String, Value)) -> Value {
    json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": "c2ln"})
}

fn usage() -> Value {
    json!({"promptTokenCount": 70, "cachedContentTokenCount": 64, "candidatesTokenCount": 5,
        "thoughtsTokenCount": 3, "totalTokenCount": 78})
}

/// The answer as Gemini streams it (`streamGenerateContent?alt=sse`).
fn stream_bytes(answer: &Answer) -> String {
    let partial = json!({"promptTokenCount": 70, "totalTokenCount": 70});
    let mut events: Vec<Value> = Vec::new();
    for piece in split_at(&answer.text, &answer.text_cuts) {
        events.push(chunk(vec![json!({"text": piece})], None, partial.clone()));
    }
    let mut last = Vec::new();
    if answer.calls_apart {
        events.extend(answer.calls.iter().map(|c| chunk(vec![call_part(c)], None, partial.clone())));
    } else {
        last.extend(answer.calls.iter().map(call_part));
    }
    last.push(json!({"text": ""}));
    events.push(chunk(last, Some(answer.finish), usage()));
    let separator = if answer.crlf { "\r\n\r\n" } else { "\n\n" };
    events.iter().map(|e| format!("data: {e}{separator}")).collect()
}

/// The same answer from `generateContent`.
fn response_json(answer: &Answer) -> Value {
    let mut parts = vec![json!({"text": answer.text})];
    parts.extend(answer.calls.iter().map(call_part));
    chunk(parts, Some(answer.finish), usage())
}

/// Feeds bytes split at `cuts` through the decoder and translator, like the stream driver does.
fn translate(bytes: &[u8], cuts: &[usize]) -> Result<Vec<ChatChunk>, String> {
    let mut decoder = SseDecoder::new();
    let mut translator = StreamTranslator::new("p", "m");
    let mut out = VecDeque::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    for w in points.windows(2) {
        decoder.push(&bytes[w[0]..w[1]]);
        while let Some(event) = decoder.next_event() {
            translator.event(&event, &mut out).map_err(|e| e.to_string())?;
        }
    }
    if let Some(event) = decoder.finish() {
        translator.event(&event, &mut out).map_err(|e| e.to_string())?;
    }
    translator.end_of_input(&mut out).map_err(|e| e.to_string())?;
    out.iter().map(|c| serde_json::from_slice(&c.data).map_err(|e| e.to_string())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streamed_equals_non_streamed(answer in answer(), cuts in prop::collection::vec(0usize..8000, 0..12)) {
        let chunks = translate(stream_bytes(&answer).as_bytes(), &cuts).unwrap();
        let roles = chunks.iter().filter(|c| c.choices.first().is_some_and(|ch| ch.delta.role.is_some())).count();
        let finishes: Vec<&str> = chunks.iter().filter_map(|c| c.choices.first()?.finish_reason.as_deref()).collect();
        prop_assert_eq!(roles, 1);
        prop_assert_eq!(finishes.len(), 1);
        let last = chunks.last().unwrap();
        prop_assert!(last.choices.is_empty() && last.usage.is_some());

        let text: String = chunks.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        prop_assert_eq!(&text, &answer.text);
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for call in chunks.iter().filter_map(|c| c.choices.first()?.delta.tool_calls.clone()).flatten() {
            prop_assert_eq!(call.index as usize, calls.len(), "each call arrives whole, in order");
            calls.push((call.id.unwrap(), call.function.name.unwrap(), call.function.arguments.unwrap()));
        }
        for ((_, _, args), (_, expected)) in calls.iter().zip(&answer.calls) {
            let args: Value = serde_json::from_str(args).expect("tool arguments are valid JSON");
            prop_assert_eq!(&args, expected);
        }

        let full = from_wire(response_json(&answer).to_string().as_bytes(), "m").unwrap();
        let message = &full.choices[0].message;
        prop_assert_eq!(&text, &message.content.clone().unwrap_or_default());
        let expected: Vec<(String, String, String)> = message.tool_calls.iter().flatten()
            .map(|c| (c.id.clone(), c.function.name.clone(), c.function.arguments.clone())).collect();
        prop_assert_eq!(calls, expected);
        prop_assert_eq!(finishes[0], full.choices[0].finish_reason.as_deref().unwrap());
        prop_assert_eq!(last.usage, full.usage);
        prop_assert_eq!(&chunks[0].id, &full.id);
        prop_assert_eq!(&chunks[0].model, &full.model);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), cuts in prop::collection::vec(0usize..2000, 0..6)) {
        let _ = translate(&bytes, &cuts);
        let _ = from_wire(&bytes, "m");
    }

    #[test]
    fn arbitrary_json_events_never_panic(events in prop::collection::vec((0usize..4, json_value(), json_value()), 0..10)) {
        // Raw values, and values dropped into the places a Gemini chunk has structure.
        let mut bytes = String::new();
        for (shape, a, b) in events {
            let value = match shape {
                0 => a,
                1 => json!({"candidates": [{"content": {"parts": [a]}, "finishReason": b}]}),
                2 => json!({"candidates": [{"content": a}], "usageMetadata": b, "promptFeedback": {"blockReason": "SAFETY"}}),
                _ => json!({"error": a, "candidates": b}),
            };
            let _ = from_wire(value.to_string().as_bytes(), "m");
            bytes += &format!("data: {value}\n\n");
        }
        let _ = translate(bytes.as_bytes(), &[]);
    }
}
