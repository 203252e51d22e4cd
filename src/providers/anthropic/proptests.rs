//! Property tests for both Anthropic translations: streamed and non-streamed answers agree, the
//! event grammar holds, and arbitrary bytes never panic or hang the translators.

use std::collections::VecDeque;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::super::anthropic_inbound::EventWriter;
use super::super::sse::SseDecoder;
use super::super::stream::Translate;
use super::{StreamTranslator, from_wire};
use crate::types::ChatChunk;

/// Splits `text` into pieces at the given (sorted, deduplicated) char offsets.
fn split_at(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.push(0);
    points.push(chars.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| chars[w[0]..w[1]].iter().collect()).collect()
}

fn sse(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[derive(Debug, Clone)]
struct Answer {
    text: String,
    text_cuts: Vec<usize>,
    tools: Vec<(String, Value, Vec<usize>)>,
    stop: &'static str,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-zA-Z0-9 \"\\\\é中]{0,12}".prop_map(Value::from),
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
        "[a-zA-Z0-9 ,.!?é中\n\"{}]{0,60}",
        prop::collection::vec(0usize..80, 0..6),
        prop::collection::vec(
            (
                "[a-z_]{1,10}",
                prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..4),
                prop::collection::vec(0usize..200, 0..5),
            ),
            0..3,
        ),
        prop_oneof![Just("end_turn"), Just("max_tokens"), Just("tool_use"), Just("stop_sequence")],
    )
        .prop_map(|(text, text_cuts, tools, stop)| Answer {
            text,
            text_cuts,
            tools: tools.into_iter().map(|(name, args, cuts)| (name, json!(args), cuts)).collect(),
            stop,
        })
}

/// The answer as Anthropic streams it.
fn stream_bytes(answer: &Answer) -> String {
    let mut out = sse(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude", "content": [], "usage": {"input_tokens": 7, "output_tokens": 1}}}),
    );
    let mut index = 0;
    if !answer.text.is_empty() {
        out += &sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        );
        for piece in split_at(&answer.text, &answer.text_cuts) {
            out += &sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        out += &sse("content_block_stop", json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    for (i, (name, args, cuts)) in answer.tools.iter().enumerate() {
        out += &sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {}}}),
        );
        for piece in split_at(&args.to_string(), cuts) {
            out += &sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            );
        }
        out += &sse("content_block_stop", json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    out += &sse("ping", json!({"type": "ping"}));
    out += &sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": answer.stop}, "usage": {"output_tokens": 11}}),
    );
    out + &sse("message_stop", json!({"type": "message_stop"}))
}

/// The same answer as a non-streamed Anthropic message.
fn message_json(answer: &Answer) -> Value {
    let mut content = Vec::new();
    if !answer.text.is_empty() {
        content.push(json!({"type": "text", "text": answer.text}));
    }
    for (i, (name, args, _)) in answer.tools.iter().enumerate() {
        content.push(json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": args}));
    }
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": content,
        "stop_reason": answer.stop, "usage": {"input_tokens": 7, "output_tokens": 11}})
}

/// Feeds bytes split at `cuts` through the decoder and translator.
fn translate(bytes: &[u8], cuts: &[usize]) -> Result<Vec<ChatChunk>, String> {
    let mut decoder = SseDecoder::new();
    let mut translator = StreamTranslator::new("p");
    let mut out = VecDeque::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    let mut done = false;
    for w in points.windows(2) {
        decoder.push(&bytes[w[0]..w[1]]);
        while let Some(event) = decoder.next_event() {
            done |= translator.event(&event, &mut out).map_err(|e| e.to_string())?;
        }
    }
    if !done {
        translator.end_of_input(&mut out).map_err(|e| e.to_string())?;
    }
    out.iter().map(|c| serde_json::from_slice(&c.data).map_err(|e| e.to_string())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streamed_equals_non_streamed(answer in answer(), cuts in prop::collection::vec(0usize..4000, 0..12)) {
        let chunks = translate(stream_bytes(&answer).as_bytes(), &cuts).unwrap();
        let roles = chunks.iter().filter(|c| c.choices.first().is_some_and(|ch| ch.delta.role.is_some())).count();
        let finishes: Vec<&str> = chunks.iter().filter_map(|c| c.choices.first()?.finish_reason.as_deref()).collect();
        prop_assert_eq!(roles, 1);
        prop_assert_eq!(finishes.len(), 1);
        let last = chunks.last().unwrap();
        prop_assert!(last.choices.is_empty() && last.usage.is_some());

        let text: String = chunks.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        let mut args: Vec<(String, String)> = Vec::new();
        for call in chunks.iter().filter_map(|c| c.choices.first()?.delta.tool_calls.clone()).flatten() {
            if let Some(name) = call.function.name { args.push((name, String::new())); }
            args[call.index as usize].1.push_str(call.function.arguments.as_deref().unwrap_or_default());
        }
        let full = from_wire(message_json(&answer).to_string().as_bytes()).unwrap();
        let message = &full.choices[0].message;
        prop_assert_eq!(&text, &message.content.clone().unwrap_or_default());
        let expected: Vec<(String, Value)> = message.tool_calls.iter().flatten()
            .map(|c| (c.function.name.clone(), serde_json::from_str(&c.function.arguments).unwrap())).collect();
        let streamed: Vec<(String, Value)> = args.into_iter()
            .map(|(n, a)| (n, serde_json::from_str(&a).expect("tool arguments reassemble to valid JSON"))).collect();
        prop_assert_eq!(streamed, expected);
        prop_assert_eq!(finishes[0], full.choices[0].finish_reason.as_deref().unwrap());
        prop_assert_eq!(last.usage, full.usage);
    }

    #[test]
    fn inbound_writer_emits_the_event_grammar(answer in answer(), cuts in prop::collection::vec(0usize..4000, 0..8)) {
        // Anthropic stream → OpenAI chunks → Anthropic events again: the round trip keeps the content.
        let chunks = translate(stream_bytes(&answer).as_bytes(), &cuts).unwrap();
        let mut writer = EventWriter::new();
        let mut text = Vec::new();
        for chunk in &chunks {
            text.extend_from_slice(&writer.chunk(&serde_json::to_vec(chunk).unwrap()).unwrap());
        }
        text.extend_from_slice(&writer.finish());
        let text = String::from_utf8(text).unwrap();
        let events: Vec<Value> = text.split("\n\n").filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.split_once("\ndata: ").unwrap().1).unwrap()).collect();
        prop_assert_eq!(&events[0]["type"], "message_start");
        prop_assert_eq!(&events[events.len() - 1]["type"], "message_stop");
        let reassembled: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
        prop_assert_eq!(reassembled, answer.text.clone());
        let starts = events.iter().filter(|e| e["type"] == "content_block_start").count();
        let stops = events.iter().filter(|e| e["type"] == "content_block_stop").count();
        prop_assert_eq!(starts, stops);
        prop_assert_eq!(starts, usize::from(!answer.text.is_empty()) + answer.tools.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), cuts in prop::collection::vec(0usize..2000, 0..6)) {
        let _ = translate(&bytes, &cuts);
        let _ = EventWriter::new().chunk(&bytes);
    }

    #[test]
    fn arbitrary_json_events_never_panic(events in prop::collection::vec((prop_oneof![Just("message_start"), Just("content_block_start"), Just("content_block_delta"), Just("message_delta"), Just("message_stop"), Just("error")], json_value()), 0..12)) {
        let mut bytes = String::new();
        for (name, mut value) in events {
            if let Value::Object(map) = &mut value { map.insert("type".into(), json!(name)); }
            bytes += &sse(name, value);
        }
        let _ = translate(bytes.as_bytes(), &[]);
    }
}
