"""Official SDKs across wire formats, driven by tests/sdk_cross.rs.

Part A: the `anthropic` SDK against the gateway's /v1/messages, served by an OpenAI-format model.
Part B: the `openai` SDK against models served by Anthropic (and Gemini) upstreams that replay
recorded wire fixtures; the Rust side queues the fixtures in the order this script asks.
"""

import json
import os
import sys

import anthropic
import openai

BASE = os.environ["LLM_GATEWAY_URL"]
KEY = os.environ["LLM_GATEWAY_API_KEY"]
FAILURES = []
PASSED = 0


def check(name, condition, detail=""):
    global PASSED
    if condition:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILURES.append(name)
        print(f"FAIL {name}: {detail}")


WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def part_a_anthropic_sdk():
    client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
    expected = 'Mock reply from gpt-4o-mini: you said "hello from anthropic".'
    ask = [{"role": "user", "content": "hello from anthropic"}]

    msg = client.messages.create(model="gpt", max_tokens=100, system="be brief", messages=ask)
    check("anthropic create: text", msg.content[0].type == "text" and msg.content[0].text == expected, msg)
    check("anthropic create: stop_reason", msg.stop_reason == "end_turn", msg.stop_reason)
    check("anthropic create: usage", msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage)

    with client.messages.stream(model="gpt", max_tokens=100, messages=ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check("anthropic stream: text", text == expected, text)
    check("anthropic stream: final message", final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final)

    weather_ask = [{"role": "user", "content": "weather in Paris?"}]
    with client.messages.stream(
        model="gpt",
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=weather_ask,
    ) as stream:
        final = stream.get_final_message()
    tools = [b for b in final.content if b.type == "tool_use"]
    check("anthropic stream tool_use", len(tools) == 1 and tools[0].name == "get_weather", final.content)
    check("anthropic stream tool input", tools and tools[0].input == {"city": "mock-city"}, tools)
    check("anthropic stream tool stop_reason", final.stop_reason == "tool_use", final.stop_reason)

    follow_up = weather_ask + [
        {"role": "assistant", "content": final.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tools[0].id, "content": "18C"}]},
    ]
    msg = client.messages.create(model="gpt", max_tokens=100, tools=[WEATHER], messages=follow_up)
    check("anthropic tool_result round trip", msg.content[0].text == "The tool returned: 18C", msg.content)

    try:
        client.messages.create(model="no-such-model", max_tokens=5, messages=ask)
        check("anthropic NotFoundError", False, "no exception")
    except anthropic.NotFoundError as e:
        check("anthropic NotFoundError", e.status_code == 404, e)
    try:
        anthropic.Anthropic(base_url=BASE, api_key="wrong-key-123", max_retries=0).messages.create(
            model="gpt", max_tokens=5, messages=ask
        )
        check("anthropic AuthenticationError", False, "no exception")
    except anthropic.AuthenticationError as e:
        check("anthropic AuthenticationError", e.status_code == 401, e)


def part_b_openai_sdk(model, label):
    client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
    hello = "Hello! How can I help you today?"
    ask = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}]

    r = client.chat.completions.create(model=model, messages=ask, max_tokens=64)
    check(f"{label}: text", r.choices[0].message.content == hello, r)
    check(f"{label}: usage", (r.usage.prompt_tokens, r.usage.completion_tokens) == (12, 9), r.usage)

    chunks = list(
        client.chat.completions.create(
            model=model, messages=ask, stream=True, stream_options={"include_usage": True}, max_tokens=64
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(f"{label}: streamed text", text == hello, text)
    check(f"{label}: usage chunk", chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9, chunks[-1])

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}]
    stream = client.chat.completions.create(model=model, messages=ask, tools=tools, stream=True, max_tokens=64)
    calls = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": None, "args": ""})
                slot["id"] = call.id or slot["id"]
                slot["name"] = (call.function.name if call.function else None) or slot["name"]
                slot["args"] += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    check(f"{label}: streamed tool call", list(calls) == [0] and calls[0]["name"] == "get_weather", calls)
    check(f"{label}: tool arguments", calls and json.loads(calls[0]["args"]) == {"city": "Paris"}, calls)
    check(f"{label}: tool finish", finish == "tool_calls", finish)


part_a_anthropic_sdk()
part_b_openai_sdk("claude", "openai sdk via anthropic")
if os.environ.get("LLM_GATEWAY_GEMINI_MODEL"):
    part_b_openai_sdk(os.environ["LLM_GATEWAY_GEMINI_MODEL"], "openai sdk via gemini")

print(f"{PASSED} passed, {len(FAILURES)} failed")
sys.exit(1 if FAILURES else 0)
