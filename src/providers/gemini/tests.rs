//! Unit tests for the Gemini translations: request, response, stream edge cases, errors, embeddings.

use std::collections::VecDeque;

use super::*;

fn request(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

fn wire(body: Value) -> Value {
    to_wire(&request(body), "gemini").unwrap()
}

#[test]
fn system_and_multi_turn_map_to_system_instruction_and_roles() {
    let wire = wire(json!({
        "model": "gemini-2.5-flash", "max_tokens": 64, "temperature": 0.4, "top_p": 0.9, "stop": "END", "seed": 7,
        "user": "u1", "n": 1, "presence_penalty": 0, "frequency_penalty": 0.5,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What now?"},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Be quick."}]},
            {"role": "user", "content": ""}
        ]
    }));
    assert_eq!(wire["systemInstruction"], json!({"parts": [{"text": "You are terse."}, {"text": "Use metric."}]}));
    assert_eq!(
        wire["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello."}]},
            {"role": "user", "parts": [{"text": "What now?"}, {"text": "Be quick."}]}
        ])
    );
    assert_eq!(
        wire["generationConfig"],
        json!({"maxOutputTokens": 64, "temperature": 0.4, "topP": 0.9, "stopSequences": ["END"], "seed": 7,
            "candidateCount": 1, "frequencyPenalty": 0.5})
    );
    assert!(wire.get("tools").is_none() && wire.get("toolConfig").is_none());
}

#[test]
fn images_become_inline_data_or_file_data() {
    let wire = wire(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=2", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "mp3"}}
    ]}]}));
    let parts = &wire["contents"][0]["parts"];
    assert_eq!(parts[0], json!({"text": "look"}));
    assert_eq!(parts[1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}));
    assert_eq!(
        parts[2],
        json!({"fileData": {"fileUri": "https://example.com/cat.JPG?size=2", "mimeType": "image/jpeg"}})
    );
    assert_eq!(parts[3], json!({"inlineData": {"mimeType": "audio/mp3", "data": "UklGR"}}));
}

#[test]
fn tools_and_tool_choice_translate() {
    let tool = json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "additionalProperties": false, "required": ["city"],
            "properties": {
                "city": {"type": "string", "format": "uri", "description": "City"},
                "unit": {"type": ["string", "null"], "enum": ["C", "F"]},
                "when": {"$ref": "#/$defs/When", "description": "Moment"},
                "tags": {"type": "array", "items": {"const": "x"}},
                "either": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
                "maybe": {"anyOf": [{"type": "string", "description": "inner"}, {"type": "null"}], "description": "outer"}
            },
            "$defs": {"When": {"type": "string", "format": "date-time", "examples": ["now"]}}}}});
    let no_params =
        json!({"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}});
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [tool, no_params]});
    let mut with_choice = base.clone();
    with_choice["tool_choice"] = json!("auto");
    let wire = wire(with_choice);
    let declarations = &wire["tools"][0]["functionDeclarations"];
    assert_eq!(
        declarations[0],
        json!({"name": "get_weather", "description": "Current weather", "parameters": {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City"},
            "unit": {"type": "string", "nullable": true, "enum": ["C", "F"]},
            "when": {"type": "string", "format": "date-time", "description": "Moment"},
            "tags": {"type": "array", "items": {"enum": ["x"]}},
            "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
            "maybe": {"type": "string", "nullable": true, "description": "outer"}
        }}})
    );
    assert_eq!(declarations[1], json!({"name": "ping"}), "an empty OBJECT schema is omitted");
    assert_eq!(wire["toolConfig"], json!({"functionCallingConfig": {"mode": "AUTO"}}));
    for (choice, expected) in [
        (json!("required"), json!({"mode": "ANY"})),
        (json!("none"), json!({"mode": "NONE"})),
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
        ),
    ] {
        let mut body = base.clone();
        body["tool_choice"] = choice;
        assert_eq!(to_wire(&request(body), "g").unwrap()["toolConfig"]["functionCallingConfig"], expected);
    }
}

#[test]
fn tool_results_become_function_responses_named_after_their_call() {
    let wire = wire(json!({"model": "m", "messages": [
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
        {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\": 21}"},
        {"role": "user", "content": "thanks"}
    ]}));
    let contents = wire["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "tool results and the next user turn merge: {contents:?}");
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(contents[1]["parts"][0], json!({"text": "Checking."}));
    assert_eq!(contents[1]["parts"][1]["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));
    assert_eq!(contents[1]["parts"][1]["thoughtSignature"], SKIP_THOUGHT_SIGNATURE);
    assert_eq!(contents[1]["parts"][2], json!({"functionCall": {"name": "get_time", "args": {}}}));
    assert_eq!(contents[2]["role"], "user");
    assert_eq!(
        contents[2]["parts"],
        json!([
            {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"text": "thanks"}
        ])
    );
    let orphan = json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]});
    assert_eq!(to_wire(&request(orphan), "g").unwrap_err().status(), 400);
}

#[test]
fn json_modes_set_the_response_mime_type_and_schema() {
    let wire_json = wire(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
    );
    assert_eq!(wire_json["generationConfig"], json!({"responseMimeType": "application/json"}));
    let wire_schema = wire(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema":
            {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": false}}}}));
    assert_eq!(
        wire_schema["generationConfig"]["responseSchema"],
        json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]})
    );
}

#[test]
fn unsupported_features_are_rejected_naming_provider_and_feature() {
    let tool = json!([{"type": "function", "function": {"name": "f"}}]);
    for (field, value) in [
        ("n", json!(2)),
        ("logit_bias", json!({"1": 1})),
        ("logprobs", json!(true)),
        ("parallel_tool_calls", json!(false)),
        ("modalities", json!(["audio"])),
        ("tools", json!([{"type": "web_search"}])),
        ("response_format", json!({"type": "grammar"})),
        ("reasoning_effort", json!("extreme")),
        ("messages", json!([{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}])),
        (
            "messages",
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]),
        ),
        ("messages", json!([{"role": "function", "name": "f", "content": "1"}])),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
            "properties": {"a": {"$ref": "#/$defs/Missing"}}}}}]),
        ),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
            "properties": {"a": {"$ref": "#"}}}}}]),
        ),
    ] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tool});
        body[field] = value;
        let err = to_wire(&request(body), "gemini-prod").unwrap_err();
        assert_eq!(err.status(), 400, "{field}");
        let text = err.to_string();
        assert!(text.contains("gemini-prod") && text.contains("does not support"), "{field}: {text}");
    }
}

fn response(candidate: Value) -> Value {
    json!({"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "resp-1",
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14}})
}

fn parse(body: Value) -> ChatResponse {
    from_wire(body.to_string().as_bytes(), "fallback").unwrap()
}

#[test]
fn text_answers_translate() {
    let out = parse(response(json!({"content": {"role": "model", "parts": [
        {"text": "thinking...", "thought": true}, {"text": "Hello"}, {"text": " there"}]}, "finishReason": "STOP"})));
    assert_eq!((out.id.as_str(), out.model.as_str()), ("resp-1", "gemini-2.5-flash"));
    assert_eq!(out.choices[0].message.content.as_deref(), Some("Hello there"));
    assert_eq!(out.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(out.usage, Some(Usage::new(10, 4)));
    let cut = parse(response(json!({"content": {"parts": [{"text": "The"}]}, "finishReason": "MAX_TOKENS"})));
    assert_eq!(cut.choices[0].finish_reason.as_deref(), Some("length"));
}

#[test]
fn function_calls_get_distinct_deterministic_ids() {
    let out = parse(response(json!({"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiIB"},
        {"functionCall": {"name": "get_weather", "args": {"city": "London"}}},
        {"functionCall": {"name": "now"}}]}, "finishReason": "STOP"})));
    let message = &out.choices[0].message;
    assert_eq!(message.content, None);
    let calls = message.tool_calls.as_ref().unwrap();
    let got: Vec<(&str, &str, &str)> =
        calls.iter().map(|c| (c.id.as_str(), c.function.name.as_str(), c.function.arguments.as_str())).collect();
    assert_eq!(
        got,
        [
            ("call_0", "get_weather", "{\"city\":\"Paris\"}"),
            ("call_1", "get_weather", "{\"city\":\"London\"}"),
            ("call_2", "now", "{}")
        ]
    );
    assert_eq!(out.choices[0].finish_reason.as_deref(), Some("tool_calls"));
}

#[test]
fn safety_blocks_become_content_filter() {
    let blocked = parse(json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}, "modelVersion": "gemini-2.5-flash"}));
    assert_eq!(blocked.choices[0].finish_reason.as_deref(), Some("content_filter"));
    assert_eq!(blocked.choices[0].message.content.as_deref(), Some(""));
    assert_eq!(blocked.usage, Some(Usage::new(8, 0)));
    for reason in ["SAFETY", "RECITATION", "BLOCKLIST", "SPII"] {
        let out = parse(response(json!({"finishReason": reason, "safetyRatings": []})));
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("content_filter"), "{reason}");
    }
    assert!(from_wire(b"{}", "m").is_err(), "no candidates and no block reason");
}

#[test]
fn usage_counts_cache_and_thoughts() {
    let body = json!({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 2112, "cachedContentTokenCount": 2000, "candidatesTokenCount": 9,
            "thoughtsTokenCount": 30, "totalTokenCount": 2151}});
    let usage = parse(body).usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (2112, 39, 2151));
    assert_eq!(usage.cached_tokens(), 2000);
}

fn run(events: &[Value]) -> Result<Vec<ChatChunk>, GatewayError> {
    let mut translator = StreamTranslator::new("gemini", "m");
    let mut out = VecDeque::new();
    for event in events {
        translator.event(&SseEvent { event: None, data: event.to_string().into() }, &mut out)?;
    }
    translator.end_of_input(&mut out)?;
    Ok(out.iter().map(|c| serde_json::from_slice(&c.data).unwrap()).collect())
}

#[test]
fn stream_errors_truncation_and_prompt_blocks() {
    let text = response(json!({"content": {"parts": [{"text": "Hel"}]}}));
    let err = run(std::slice::from_ref(&text)).unwrap_err();
    assert!(matches!(err, GatewayError::UpstreamProtocol { .. }) && err.to_string().contains("truncated"), "{err}");
    assert!(run(&[]).is_err(), "an empty stream is truncated too");
    let error = |code: u16, status: &str| json!({"error": {"code": code, "message": "boom", "status": status}});
    assert!(matches!(
        run(&[text.clone(), error(429, "RESOURCE_EXHAUSTED")]),
        Err(GatewayError::UpstreamRateLimited { .. })
    ));
    assert!(matches!(run(&[error(400, "INVALID_ARGUMENT")]), Err(GatewayError::UpstreamRejected { status: 400, .. })));
    assert!(matches!(run(&[error(403, "PERMISSION_DENIED")]), Err(GatewayError::UpstreamAuth { status: 403, .. })));
    assert!(matches!(run(&[error(503, "UNAVAILABLE")]), Err(GatewayError::UpstreamServerError { status: 503, .. })));
    assert!(run(&[json!([1, 2])]).is_err());
    let blocked = run(&[json!({"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "r"})]).unwrap();
    assert_eq!(blocked.len(), 3, "role, finish, usage: {blocked:?}");
    assert_eq!(blocked[1].choices[0].finish_reason.as_deref(), Some("content_filter"));
}

fn provider() -> std::sync::Arc<ProviderConfig> {
    let yaml = "providers:\n  g: { kind: gemini, api_key: gm-secret }\nmodels: {}\n";
    let config = crate::config::Config::parse("t.yaml", yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    config.providers["g"].clone()
}

#[test]
fn http_errors_map_like_gemini_means_them() {
    let config = provider();
    let bad_key = br#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}"#;
    assert!(matches!(map_error(&config, 400, None, bad_key), GatewayError::UpstreamAuth { status: 400, .. }));
    let quota =
        br#"{"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.5s"}]}}"#;
    let GatewayError::UpstreamRateLimited { retry_after, .. } = map_error(&config, 429, None, quota) else { panic!() };
    assert_eq!(retry_after.as_deref(), Some("37"));
    let GatewayError::UpstreamRateLimited { retry_after, .. } = map_error(&config, 429, Some("3".into()), quota) else {
        panic!()
    };
    assert_eq!(retry_after.as_deref(), Some("3"), "a Retry-After header wins");
    let bad = br#"{"error": {"code": 400, "message": "* contents: is empty", "status": "INVALID_ARGUMENT"}}"#;
    let GatewayError::UpstreamRejected { code, message, .. } = map_error(&config, 400, None, bad) else { panic!() };
    assert_eq!((code.as_deref(), message.as_str()), (Some("INVALID_ARGUMENT"), "* contents: is empty"));
}

#[test]
fn endpoint_and_key_stay_out_of_the_url() {
    let config = provider();
    let gemini = Gemini::new(&config).unwrap();
    assert_eq!(gemini.headers["x-goog-api-key"], "gm-secret");
    assert!(gemini.headers["x-goog-api-key"].is_sensitive());
    assert_eq!(model_path("gemini-2.5-flash"), "models/gemini-2.5-flash");
    assert_eq!(model_path("tunedModels/mine"), "tunedModels/mine");
}

#[test]
fn embeddings_translate_both_ways() {
    let req: EmbeddingsRequest = serde_json::from_value(
        json!({"model": "gemini-embedding-001", "input": ["a", "b"], "dimensions": 3, "encoding_format": "float"}),
    )
    .unwrap();
    let (wire, base64) = embeddings_to_wire(&req, "g").unwrap();
    assert!(!base64);
    assert_eq!(
        wire["requests"][1],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3})
    );
    let body = br#"{"embeddings": [{"values": [0.5, -1.0, 0.25]}, {"values": [1.0, 0.0, 2.0]}]}"#;
    let out = embeddings_from_wire(body, "gemini-embedding-001", false).unwrap();
    assert_eq!(out["object"], "list");
    assert_eq!(out["data"][1], json!({"object": "embedding", "index": 1, "embedding": [1.0, 0.0, 2.0]}));
    assert_eq!(out["usage"], json!({"prompt_tokens": 0, "total_tokens": 0}));
    let b64 = embeddings_from_wire(body, "m", true).unwrap();
    // 0.5f32, -1.0f32, 0.25f32 little-endian = 00 00 00 3f 00 00 80 bf 00 00 80 3e
    assert_eq!(b64["data"][0]["embedding"], "AAAAPwAAgL8AAIA+");
    assert_eq!(base64_encode(b"ab"), "YWI=");
    assert_eq!(base64_encode(b"a"), "YQ==");
    for input in [json!([[1, 2, 3]]), json!([])] {
        let req: EmbeddingsRequest = serde_json::from_value(json!({"model": "m", "input": input})).unwrap();
        assert_eq!(embeddings_to_wire(&req, "g").unwrap_err().status(), 400);
    }
}
