"""Drives a running llm-gateway with the official `openai` Python SDK.

Run by tests/sdk_openai.rs, which starts a mock OpenAI upstream and the gateway, queues two
upstream faults (a 429 with `retry-after`, then a stream cut off mid-way) and runs this script. It
is a plain script, not a pytest module: the checks run in order (the first two upstream requests
consume the faults), each prints PASS or FAIL with its reason, and the exit status is 0 only if all
passed.

Environment (all required):
  LLM_GATEWAY_BASE_URL        the gateway's OpenAI base URL, e.g. http://127.0.0.1:1234/v1
  LLM_GATEWAY_API_KEY         a client key the gateway accepts
  LLM_GATEWAY_CHAT_MODEL      a chat model served by the mock upstream (e.g. gpt)
  LLM_GATEWAY_UPSTREAM_MODEL  the upstream model it maps to (e.g. gpt-4o-mini)
  LLM_GATEWAY_EMBED_MODEL     an embeddings model (e.g. embed)
  LLM_GATEWAY_MODELS          comma-separated model names /v1/models must list
  LLM_GATEWAY_RETRY_AFTER     the retry-after value of the queued upstream 429
"""

import asyncio
import json
import os
import sys
import traceback

import openai

BASE_URL = os.environ["LLM_GATEWAY_BASE_URL"]
API_KEY = os.environ["LLM_GATEWAY_API_KEY"]
CHAT_MODEL = os.environ["LLM_GATEWAY_CHAT_MODEL"]
UPSTREAM_MODEL = os.environ["LLM_GATEWAY_UPSTREAM_MODEL"]
EMBED_MODEL = os.environ["LLM_GATEWAY_EMBED_MODEL"]
MODELS = [m for m in os.environ["LLM_GATEWAY_MODELS"].split(",") if m]
RETRY_AFTER = os.environ["LLM_GATEWAY_RETRY_AFTER"]

client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20)

PROMPT = "hello from the python sdk"
# The mock upstream is deterministic.
EXPECTED_TEXT = f'Mock reply from {UPSTREAM_MODEL}: you said "{PROMPT}".'

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL_RESULT = "18C and sunny"


def check_upstream_429_is_rate_limit_error_with_retry_after():
    # Must be the first request that reaches the upstream: it consumes the queued 429.
    try:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "rate limit me"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429, f"status {e.status_code}"
        got = e.response.headers.get("retry-after")
        assert got == RETRY_AFTER, f"retry-after header: expected {RETRY_AFTER!r}, got {got!r}"
        assert isinstance(e.body, dict) and e.body.get("type") == "rate_limit_error", (
            f"error body should be an OpenAI error of type rate_limit_error, got {e.body!r}"
        )
        return
    raise AssertionError("expected openai.RateLimitError for the upstream 429, the call succeeded")


def check_stream_cut_by_upstream_raises_api_error():
    # Must be the second upstream request: it consumes the queued cut (the upstream closes the
    # connection mid-stream without [DONE]). The SDK must raise rather than return partial text.
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "cut me off"}], stream=True
    )
    got = []
    try:
        for chunk in stream:
            got.append(chunk)
    except openai.APIError as e:
        assert not isinstance(e, openai.APIStatusError), f"expected an in-stream error, got HTTP {e.status_code}"
        assert got, "the stream failed before its first chunk; expected the cut after a few chunks"
        assert "openai" in e.message, f"the error should name the provider: {e.message!r}"
        return
    raise AssertionError(f"the stream ended normally after {len(got)} chunks; expected openai.APIError for the cut")


def check_chat_non_streaming():
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": PROMPT}]
    )
    assert raw.status_code == 200, f"status {raw.status_code}"
    assert raw.headers.get("x-gateway-model") == CHAT_MODEL, (
        f"x-gateway-model header: expected {CHAT_MODEL!r}, got {raw.headers.get('x-gateway-model')!r}"
    )
    assert raw.headers.get("x-gateway-upstream-model") == UPSTREAM_MODEL, (
        f"x-gateway-upstream-model header: {raw.headers.get('x-gateway-upstream-model')!r}"
    )
    completion = raw.parse()
    assert isinstance(completion, openai.types.chat.ChatCompletion), f"parsed to {type(completion)}"
    assert completion._request_id and completion._request_id == raw.headers.get("x-request-id"), (
        f"SDK request id {completion._request_id!r} vs x-request-id {raw.headers.get('x-request-id')!r}"
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant", f"role {choice.message.role!r}"
    assert choice.message.content == EXPECTED_TEXT, f"content: expected {EXPECTED_TEXT!r}, got {choice.message.content!r}"
    assert choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}"
    assert completion.usage is not None, "no usage"
    assert completion.usage.total_tokens > 0, f"usage.total_tokens {completion.usage.total_tokens}"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens, (
        f"usage does not add up: {completion.usage}"
    )


def check_chat_streaming_with_usage():
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert stream.response.headers.get("x-gateway-model") == CHAT_MODEL, (
        f"x-gateway-model header on the stream: {stream.response.headers.get('x-gateway-model')!r}"
    )
    chunks = list(stream)
    assert chunks, "the stream yielded no chunks"
    for c in chunks:
        assert c.object == "chat.completion.chunk", f"chunk object {c.object!r}"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_TEXT, f"streamed text {text!r} != non-streamed text {EXPECTED_TEXT!r}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], f"finish reasons {finishes!r}"
    last = chunks[-1]
    assert last.choices == [], f"final chunk must have choices == [], got {last.choices!r}"
    assert last.usage is not None and last.usage.total_tokens > 0, f"final chunk usage {last.usage!r}"
    without_usage = [c for c in chunks[:-1] if c.usage is not None]
    assert not without_usage, f"usage appeared before the final chunk: {without_usage!r}"


def check_chat_streaming_without_usage_hides_usage_chunk():
    chunks = list(
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True)
    )
    empty = [c for c in chunks if not c.choices]
    assert not empty, f"a chunk with no choices reached a client that did not ask for usage: {empty!r}"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == EXPECTED_TEXT, f"streamed text {text!r}"


def check_tool_call_round_trip():
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1, f"expected one tool call, got {calls!r}"
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather", f"tool call {call!r}"
    assert call.id, "tool call has no id"
    args = json.loads(call.function.arguments)
    assert isinstance(args.get("city"), str) and args["city"], f"arguments {args!r}"

    messages = WEATHER_QUESTION + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]
    second = client.chat.completions.create(model=CHAT_MODEL, messages=messages, tools=[WEATHER_TOOL])
    answer = second.choices[0].message.content or ""
    assert TOOL_RESULT in answer, f"answer after the tool result should contain {TOOL_RESULT!r}, got {answer!r}"
    assert second.choices[0].finish_reason == "stop", f"finish_reason {second.choices[0].finish_reason!r}"


def check_tool_call_streamed():
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER, stream=True
    )
    calls = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    assert finish == "tool_calls", f"finish_reason {finish!r}"
    assert list(calls) == [0], f"tool call indexes {list(calls)!r}"
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather", f"reassembled call {call!r}"
    args = json.loads(call["arguments"])
    assert isinstance(args.get("city"), str) and args["city"], f"reassembled arguments {call['arguments']!r}"


def check_stream_helper_final_completion():
    # The SDK's high-level helper accumulates chunks into a ChatCompletion.
    with client.chat.completions.stream(
        model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [None])[0]
    assert call is not None and call.function.name == "get_weather", f"final completion {final!r}"
    assert json.loads(call.function.arguments).get("city"), f"arguments {call.function.arguments!r}"


def check_async_client_streaming():
    async def run():
        async with openai.AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20) as aclient:
            stream = await aclient.chat.completions.create(
                model=CHAT_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    text = asyncio.run(run())
    assert text == EXPECTED_TEXT, f"async streamed text {text!r}"


def check_embeddings():
    result = client.embeddings.create(model=EMBED_MODEL, input=["a", "b"])
    assert len(result.data) == 2, f"expected 2 embeddings, got {len(result.data)}"
    assert [d.index for d in result.data] == [0, 1], f"indexes {[d.index for d in result.data]}"
    for d in result.data:
        assert isinstance(d.embedding, list) and d.embedding, f"embedding {d.embedding!r}"
        assert all(isinstance(x, float) for x in d.embedding), "embedding values are not floats"
    assert result.data[0].embedding != result.data[1].embedding, "different inputs gave equal vectors"
    assert result.usage.total_tokens > 0, f"usage {result.usage!r}"


def check_models():
    ids = [m.id for m in client.models.list()]
    missing = [m for m in MODELS if m not in ids]
    assert not missing, f"models.list() is missing {missing}; got {ids}"
    model = client.models.retrieve(CHAT_MODEL)
    assert model.id == CHAT_MODEL and model.object == "model", f"models.retrieve: {model!r}"


def check_bad_key_is_authentication_error():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="not-a-real-key", max_retries=0, timeout=20)
    for name, call in [
        ("chat", lambda: bad.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "x"}])),
        ("models", lambda: bad.models.list()),
    ]:
        try:
            call()
        except openai.AuthenticationError as e:
            assert e.status_code == 401, f"{name}: status {e.status_code}"
            assert "not-a-real-key" not in str(e), f"{name}: the error echoes the presented key: {e}"
            continue
        raise AssertionError(f"{name}: expected openai.AuthenticationError with a bad key, the call succeeded")


def check_invalid_request_is_bad_request_error():
    try:
        client.chat.completions.create(model=CHAT_MODEL, messages=[])
    except openai.BadRequestError as e:
        assert e.param == "messages", f"error param {e.param!r}"
        return
    raise AssertionError("expected openai.BadRequestError for an empty messages list, the call succeeded")


def check_unknown_model_is_not_found_error():
    for name, call in [
        ("chat", lambda: client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])),
        ("chat stream", lambda: list(client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}], stream=True))),
        ("embeddings", lambda: client.embeddings.create(model="no-such-model", input="x")),
        ("models.retrieve", lambda: client.models.retrieve("no-such-model")),
    ]:
        try:
            call()
        except openai.NotFoundError as e:
            assert e.code == "model_not_found", f"{name}: error code {e.code!r}"
            assert "no-such-model" in str(e), f"{name}: the message should name the model: {e}"
            continue
        raise AssertionError(f"{name}: expected openai.NotFoundError for an unknown model, the call succeeded")


CHECKS = [
    check_upstream_429_is_rate_limit_error_with_retry_after,  # first: consumes the queued 429
    check_stream_cut_by_upstream_raises_api_error,  # second: consumes the queued stream cut
    check_chat_non_streaming,
    check_chat_streaming_with_usage,
    check_chat_streaming_without_usage_hides_usage_chunk,
    check_tool_call_round_trip,
    check_tool_call_streamed,
    check_stream_helper_final_completion,
    check_async_client_streaming,
    check_embeddings,
    check_models,
    check_bad_key_is_authentication_error,
    check_invalid_request_is_bad_request_error,
    check_unknown_model_is_not_found_error,
]


def main():
    print(f"openai {openai.__version__} against {BASE_URL}", flush=True)
    failed = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            check()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
            failed.append(name)
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
        else:
            print(f"PASS {name}", flush=True)
    print(f"{len(CHECKS) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
