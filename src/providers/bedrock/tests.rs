//! Tests of the Bedrock adapter: request and response translation, signing, and the stream
//! translator driven through the event-stream decoder (including property and fuzz tests).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn request(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn system_multi_turn_images_tools_and_results_translate() {
    let req = request(json!({
        "model": "m", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "be kind"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
            {"role": "user", "content": "twice"},
            {"role": "assistant", "content": "calling", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "42"},
            {"role": "user", "content": "and?"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "F", "parameters": {"type": "object"}}}],
        "tool_choice": "auto"
    }));
    let wire = to_wire(&req, "bedrock").unwrap();
    assert_eq!(wire["system"], json!([{"text": "be brief"}, {"text": "be kind"}]));
    assert_eq!(
        wire["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
    );
    assert_eq!(
        wire["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "f", "description": "F", "inputSchema": {"json": {"type": "object"}}}}],
               "toolChoice": {"auto": {}}})
    );
    assert!(wire.get("model").is_none(), "the model id travels in the URL");
    let messages = wire["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "consecutive user turns and tool results merge: {messages:?}");
    assert_eq!(
        messages[0]["content"],
        json!([{"text": "look"}, {"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}}, {"text": "twice"}])
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"],
        json!([{"text": "calling"}, {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}])
    );
    assert_eq!(
        messages[2]["content"],
        json!([{"toolResult": {"toolUseId": "t1", "content": [{"text": "42"}]}}, {"text": "and?"}])
    );
}

#[test]
fn tool_choice_maps_and_none_is_decided_explicitly() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let with = |choice: Value, history: bool| {
        let mut messages = vec![json!({"role": "user", "content": "x"})];
        if history {
            messages.push(json!({"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": "t", "content": "ok"}));
        }
        to_wire(&request(json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": choice})), "br")
    };
    assert_eq!(with(json!("required"), false).unwrap()["toolConfig"]["toolChoice"], json!({"any": {}}));
    let forced = with(json!({"type": "function", "function": {"name": "f"}}), false).unwrap();
    assert_eq!(forced["toolConfig"]["toolChoice"], json!({"tool": {"name": "f"}}));
    let schema = &forced["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"];
    assert_eq!(schema, &json!({"type": "object", "properties": {}}));
    assert!(with(json!("none"), false).unwrap().get("toolConfig").is_none(), "none without history drops tools");
    let err = with(json!("none"), true).unwrap_err();
    assert!(matches!(err, GatewayError::Unsupported { .. }), "{err}");
    assert!(with(json!("auto"), true).unwrap()["toolConfig"].is_object());
    let no_tools = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"});
    assert!(matches!(to_wire(&request(no_tools), "br"), Err(GatewayError::InvalidRequest { .. })));
}

#[test]
fn json_mode_is_a_system_instruction() {
    let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}}));
    assert_eq!(to_wire(&req, "br").unwrap()["system"], json!([{"text": JSON_INSTRUCTION}]));
}

#[test]
fn unsupported_features_are_rejected_naming_provider_and_feature() {
    let image = json!([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]);
    for (field, value, feature) in [
        ("n", json!(2), "`n`"),
        ("logit_bias", json!({"1": 1}), "logit_bias"),
        ("temperature", json!(1.5), "temperature 1.5"),
        ("frequency_penalty", json!(0.5), "frequency_penalty"),
        ("top_k", json!(5), "top_k"),
        ("parallel_tool_calls", json!(false), "parallel_tool_calls"),
        ("response_format", json!({"type": "json_schema"}), "json_schema"),
        ("messages", json!([{"role": "user", "content": image}]), "image URLs"),
        ("messages", json!([{"role": "user", "content": [{"type": "input_audio"}]}]), "input_audio"),
        ("messages", json!([{"role": "function", "content": "x", "name": "f"}]), "function"),
    ] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        body[field] = value;
        let err = to_wire(&request(body), "bedrock-prod").unwrap_err();
        assert_eq!(err.status(), 400);
        let text = err.to_string();
        assert!(text.contains("bedrock-prod") && text.contains("does not support"), "{text}");
        assert!(text.contains(feature), "{feature}: {text}");
    }
}

#[test]
fn responses_translate_text_tools_stop_reasons_and_cached_usage() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Let me look."},
        {"reasoningContent":{"reasoningText":{"text":"hmm"}}},
        {"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},
        "stopReason":"tool_use","usage":{"inputTokens":12,"outputTokens":9,"totalTokens":2121,
        "cacheReadInputTokens":2000,"cacheWriteInputTokens":100},"metrics":{"latencyMs":10}}"#;
    let response = from_wire(body, "chatcmpl-r1", "anthropic.claude").unwrap();
    assert_eq!((response.id.as_str(), response.model.as_str()), ("chatcmpl-r1", "anthropic.claude"));
    let choice = &response.choices[0];
    assert_eq!(choice.message.content.as_deref(), Some("Let me look."));
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    let call = &choice.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!((call.id.as_str(), call.function.name.as_str()), ("tooluse_1", "get_weather"));
    assert_eq!(call.function.arguments, r#"{"city":"Paris"}"#);
    let usage = response.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (2112, 9, 2121));
    assert_eq!((usage.cached_tokens(), usage.cache_creation_input_tokens), (2000, Some(100)));
    for (reason, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        let body = format!(
            r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"x"}}]}}}},"stopReason":"{reason}","usage":{{"inputTokens":1,"outputTokens":2,"totalTokens":3}}}}"#
        );
        let response = from_wire(body.as_bytes(), "i", "m").unwrap();
        assert_eq!(response.choices[0].finish_reason.as_deref(), Some(finish));
        assert!(response.choices[0].message.tool_calls.is_none());
        assert_eq!(response.usage.unwrap().prompt_tokens_details, None);
    }
    assert!(from_wire(b"{\"message\":\"nope\"}", "i", "m").unwrap_err().contains("not a Bedrock Converse"));
}

#[test]
fn credentials_never_show_and_requests_are_signed_for_bedrock() {
    let yaml = "providers:\n  b: { kind: bedrock, aws_region: eu-west-1, aws_access_key_id: AKIDTEST, \
                aws_secret_access_key: very-secret, aws_session_token: session-secret }\n";
    let config = crate::config::Config::parse("t.yaml", yaml, &|_| None).unwrap();
    let provider = &config.providers["b"];
    let bedrock = Bedrock::new(provider).unwrap();
    let debug = format!("{bedrock:?}");
    assert!(!debug.contains("very-secret") && !debug.contains("session-secret"), "{debug}");
    let url = reqwest::Url::parse(&format!(
        "{}/model/{}/converse",
        provider.base_url,
        sigv4::uri_encode("meta.llama3-70b-instruct-v1:0")
    ))
    .unwrap();
    assert_eq!(url.path(), "/model/meta.llama3-70b-instruct-v1%3A0/converse");
    let headers = bedrock.signed_headers(&url, b"{}").unwrap();
    let auth = headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"), "{auth}");
    assert!(auth.contains("/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="), "{auth}");
    assert!(headers["authorization"].is_sensitive() && headers["x-amz-security-token"].is_sensitive());
    assert_eq!(headers["x-amz-content-sha256"], sigv4::payload_hash(b"{}").as_str());
    assert!(!format!("{headers:?}").contains("session-secret"));
}

/// A real send to a raw socket: the signature, recomputed from the request exactly as it arrived
/// (method, path, the `host` the HTTP client chose, headers, body bytes), must match.
#[tokio::test]
async fn the_signature_verifies_against_the_request_as_received() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
        let (head_len, body_len) = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).unwrap().trim().parse().unwrap();
            if raw.len() >= end + 4 + length {
                break (end, length);
            }
        };
        let body = include_str!("../../../tests/fixtures/bedrock/text.json");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-amzn-requestid: req-1\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        let head = String::from_utf8(raw[..head_len].to_vec()).unwrap();
        (head, raw[head_len + 4..head_len + 4 + body_len].to_vec())
    });
    let yaml = format!(
        "providers:\n  b: {{ kind: bedrock, base_url: \"http://{addr}\", aws_region: us-west-2, aws_access_key_id: AKIDE2E, \
         aws_secret_access_key: e2e-secret, aws_session_token: e2e-token }}\n\
         models:\n  m:\n    deployments: [ {{ provider: b, model: \"anthropic.claude-3-haiku-20240307-v1:0\" }} ]\n"
    );
    let config = crate::config::Config::parse("t.yaml", &yaml, &|_| None).unwrap();
    let (provider, model) = (&config.providers["b"], &config.models["m"]);
    let endpoint = Bedrock::endpoint(provider, &model.deployments[0]);
    let client = crate::providers::ClientCache::default().client(model.timeouts.connect).unwrap();
    let req = request(
        json!({"model": "anthropic.claude-3-haiku-20240307-v1:0", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    let limits = CallLimits::starting_now(model.timeouts);
    let ChatReply::Complete(done) =
        Bedrock::new(provider).unwrap().chat(&client, &endpoint, provider, &req, limits).await.unwrap()
    else {
        panic!("expected a complete answer")
    };
    let answer: Value = serde_json::from_slice(&done.body).unwrap();
    assert_eq!(answer["id"], "chatcmpl-req-1");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello! How can I help you today?");

    let (head, body) = server.await.unwrap();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    assert_eq!(request_line, "POST /model/anthropic.claude-3-haiku-20240307-v1%3A0/converse HTTP/1.1");
    let headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(':').unwrap())
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap();
    assert_eq!(header("x-amz-content-sha256"), sigv4::payload_hash(&body));
    assert_eq!(header("x-amz-security-token"), "e2e-token");
    let url =
        reqwest::Url::parse(&format!("http://{}{}", header("host"), request_line.split(' ').nth(1).unwrap())).unwrap();
    let signed = [("content-type", header("content-type")), ("x-amz-content-sha256", header("x-amz-content-sha256"))];
    let check = sigv4::Request { method: "POST", url: &url, headers: &signed, payload: &body };
    let credentials = sigv4::Credentials {
        access_key_id: "AKIDE2E",
        secret_access_key: "e2e-secret",
        session_token: Some("e2e-token"),
    };
    let scope = sigv4::Scope { region: "us-west-2", service: "bedrock", amz_date: header("x-amz-date") };
    let expected = sigv4::sign(&check, &credentials, scope);
    assert_eq!(header("authorization"), expected.last().unwrap().1);
}

// ---- streams: frames in, chunks out ----

fn frame(name: &str, payload: &Value) -> Vec<u8> {
    match name.strip_prefix("exception:") {
        Some(kind) => eventstream::encode(
            &[(":message-type", "exception"), (":exception-type", kind), (":content-type", "application/json")],
            payload.to_string().as_bytes(),
        ),
        None => eventstream::encode_event(name, payload.to_string().as_bytes()),
    }
}

/// What `stream::drive` does, synchronously: bytes in the given write sizes → chunks.
fn run(bytes: &[u8], sizes: &[usize]) -> Result<Vec<ChatChunk>, GatewayError> {
    let mut decoder = eventstream::Decoder::new();
    let mut translator = StreamTranslator::new("br", "chatcmpl-x", "m");
    let mut out = VecDeque::new();
    let protocol = |message| GatewayError::UpstreamProtocol { provider: "br".into(), message };
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    let mut done = false;
    while !rest.is_empty() && !done {
        let n = sizes.next().map_or(rest.len(), |n| (*n).clamp(1, rest.len()));
        decoder.push(&rest[..n]);
        rest = &rest[n..];
        while !done && let Some(event) = decoder.next_event().map_err(protocol)? {
            done = translator.event(&event, &mut out)?;
        }
    }
    if !done {
        match decoder.finish().map_err(protocol)? {
            Some(event) if translator.event(&event, &mut out)? => {}
            _ => translator.end_of_input(&mut out)?,
        }
    }
    Ok(out.iter().map(|c| serde_json::from_slice(&c.data).unwrap()).collect())
}

#[derive(Debug, Default, PartialEq)]
struct Assembled {
    text: String,
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Usage>,
    roles: usize,
    finishes: usize,
}

fn assemble(chunks: &[ChatChunk]) -> Assembled {
    let mut out = Assembled::default();
    for chunk in chunks {
        assert!(out.usage.is_none(), "nothing follows the usage chunk");
        out.usage = chunk.usage;
        for choice in &chunk.choices {
            out.roles += usize::from(choice.delta.role.is_some());
            out.text.push_str(choice.delta.content.as_deref().unwrap_or_default());
            for call in choice.delta.tool_calls.iter().flatten() {
                if let Some(id) = &call.id {
                    assert_eq!(call.index as usize, out.calls.len());
                    out.calls.push((id.clone(), call.function.name.clone().unwrap(), String::new()));
                }
                out.calls[call.index as usize].2.push_str(call.function.arguments.as_deref().unwrap_or_default());
            }
            if let Some(finish) = &choice.finish_reason {
                out.finishes += 1;
                out.finish = Some(finish.clone());
            }
        }
    }
    out
}

const USAGE: &str = r#"{"inputTokens":12,"outputTokens":9,"totalTokens":21}"#;

#[test]
fn stream_ends_at_metadata_or_cleanly_after_message_stop_and_maps_exceptions() {
    let start = frame("messageStart", &json!({"role": "assistant", "p": "abcdef"}));
    let delta = frame("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}));
    let stop = frame("messageStop", &json!({"stopReason": "max_tokens"}));
    let metadata = frame("metadata", &json!({"usage": serde_json::from_str::<Value>(USAGE).unwrap()}));
    let full = [start.clone(), delta.clone(), stop.clone(), metadata].concat();
    let out = assemble(&run(&full, &[3]).unwrap());
    assert_eq!((out.text.as_str(), out.finish.as_deref(), out.roles), ("Hi", Some("length"), 1));
    assert_eq!(out.usage, Some(Usage::new(12, 9)));
    let out = assemble(&run(&[start.clone(), delta.clone(), stop].concat(), &[]).unwrap());
    assert_eq!((out.finishes, out.usage), (1, None), "complete, usage unknown");
    let cut = run(&[start.clone(), delta.clone()].concat(), &[]).unwrap_err();
    assert!(cut.to_string().contains("before messageStop"), "{cut}");
    let early = run(&delta, &[]).unwrap_err();
    assert!(early.to_string().contains("before messageStart"), "{early}");
    for (kind, status) in [
        ("throttlingException", 429),
        ("validationException", 400),
        ("modelStreamErrorException", 502),
        ("internalServerException", 502),
        ("serviceUnavailableException", 502),
    ] {
        let bytes = [start.clone(), frame(&format!("exception:{kind}"), &json!({"message": "boom"}))].concat();
        let err = run(&bytes, &[]).unwrap_err();
        assert_eq!(err.status().as_u16(), status, "{kind}: {err}");
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Splits `text` at the given byte offsets, moved back to char boundaries.
fn split_at(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    points.extend([0, text.len()]);
    points.sort_unstable();
    points.windows(2).map(|w| text[w[0]..w[1]].to_string()).collect()
}

type ToolCase = (String, BTreeMap<String, Value>, Vec<usize>);

fn tool_case() -> impl Strategy<Value = ToolCase> {
    (
        "[a-z_]{1,10}",
        prop::collection::btree_map(".{0,5}", json_value(), 0..4),
        prop::collection::vec(any::<usize>(), 0..6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streamed_answers_equal_the_non_streamed_answer(
        pieces in prop::collection::vec(".{0,12}", 0..6),
        tools in prop::collection::vec(tool_case(), 0..3),
        reason in prop::sample::select(vec!["end_turn", "max_tokens", "stop_sequence", "content_filtered"]),
        sizes in prop::collection::vec(1usize..40, 1..8),
        (input, output, cached) in (0u64..5000, 0u64..5000, prop::option::of(0u64..5000)),
    ) {
        let text: String = pieces.concat();
        let reason = if tools.is_empty() { reason } else { "tool_use" };
        let mut usage = json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output});
        if let Some(cached) = cached {
            usage["cacheReadInputTokens"] = json!(cached);
        }
        let mut events = vec![frame("messageStart", &json!({"role": "assistant"}))];
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(json!({"text": text}));
        }
        for piece in &pieces {
            events.push(frame("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": piece}})));
        }
        events.push(frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
        for (i, (name, input, cuts)) in tools.iter().enumerate() {
            let block = i + 1;
            let id = format!("tooluse_{i}");
            let input = Value::Object(input.clone().into_iter().collect());
            content.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
            let start = json!({"contentBlockIndex": block, "start": {"toolUse": {"toolUseId": id, "name": name}}});
            events.push(frame("contentBlockStart", &start));
            for part in split_at(&input.to_string(), cuts) {
                let delta = json!({"contentBlockIndex": block, "delta": {"toolUse": {"input": part}}});
                events.push(frame("contentBlockDelta", &delta));
            }
            events.push(frame("contentBlockStop", &json!({"contentBlockIndex": block})));
        }
        events.push(frame("messageStop", &json!({"stopReason": reason})));
        events.push(frame("metadata", &json!({"usage": usage, "metrics": {"latencyMs": 5}})));
        let streamed = assemble(&run(&events.concat(), &sizes).unwrap());

        let body = json!({"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": reason, "usage": usage});
        let whole = from_wire(body.to_string().as_bytes(), "chatcmpl-x", "m").unwrap();
        let choice = &whole.choices[0];
        prop_assert_eq!((streamed.roles, streamed.finishes), (1, 1));
        prop_assert_eq!(&streamed.text, &text);
        prop_assert_eq!(streamed.text.as_str(), choice.message.content.as_deref().unwrap_or_default());
        prop_assert_eq!(streamed.finish.as_deref(), choice.finish_reason.as_deref());
        prop_assert_eq!(streamed.usage, whole.usage);
        let calls = choice.message.tool_calls.clone().unwrap_or_default();
        prop_assert_eq!(streamed.calls.len(), calls.len());
        for ((id, name, args), call) in streamed.calls.iter().zip(&calls) {
            prop_assert_eq!((id, name), (&call.id, &call.function.name));
            let args: Value = serde_json::from_str(args).unwrap();
            prop_assert_eq!(&args, &serde_json::from_str::<Value>(&call.function.arguments).unwrap());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), size in 1usize..64) {
        let _ = run(&bytes, &[size]);
    }

    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(
        events in prop::collection::vec((
            prop::sample::select(vec!["messageStart", "contentBlockStart", "contentBlockDelta",
                "contentBlockStop", "messageStop", "metadata", "exception:throttlingException", "other"]),
            prop_oneof![json_value(), json_value().prop_map(|v| json!({"contentBlockIndex": 0, "delta": v})),
                json_value().prop_map(|v| json!({"contentBlockIndex": 1, "start": {"toolUse": v}}))],
        ), 0..12),
    ) {
        let mut bytes = frame("messageStart", &json!({"role": "assistant"}));
        for (name, payload) in &events {
            bytes.extend(frame(name, payload));
        }
        let _ = run(&bytes, &[7]);
    }
}
