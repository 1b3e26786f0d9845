"""Property-based fuzz of the three client doors: no input makes the gateway answer 5xx.

Hypothesis sends arbitrary JSON bodies (any type at the top, random field types, huge and
odd strings, unicode, control characters, nested junk, near-valid requests with one field
gone wrong, bytes that are not JSON at all) with random ``x-interlock-*``, rule-matched and
credential headers (values that are not UTF-8 too) to ``POST /v1/chat/completions``,
``/v1/messages`` and ``/v1/responses`` of a gateway with a key, rules that read every part of a
request, and a budget. The upstream always answers (kind ``ok`` of ``tests/chaos/_upstream.py``),
so any 5xx is the gateway's own.

Properties, for every example:

- never a 5xx;
- a 4xx is in the door's error shape (OpenAI's ``{"error": {...}}``; Anthropic's
  ``{"type": "error", "error": {...}}`` on ``/v1/messages``);
- a 200 is a whole answer in the door's protocol (a stream ends with its end event and
  carries no error event: the upstream never fails, so an error there is the gateway's);
- the gateway logs no error (an answer that looks fine can hide one: a ledger row it dropped);
- the gateway still answers a plain request afterwards.

CI runs a fixed, derandomized set (``CHAOS_FUZZ_EXAMPLES`` per door, 500 by default; the
earlier manual pass ran 5,700); ``CHAOS_FUZZ_RANDOM=1 CHAOS_FUZZ_EXAMPLES=5000`` hunts further.
``pytest -s`` prints the counts.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlock.testing.gateway import running_gateway
from tests.chaos._client import anthropic_error, json_or_none, openai_error, sse_data
from tests.chaos._threaded import background_loop
from tests.chaos._upstream import REPLY, ChaosUpstream

EXAMPLES = int(os.environ.get("CHAOS_FUZZ_EXAMPLES", "500"))
FUZZ_KEY = "sk-fuzz-gateway-key-0123456789"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # the same examples on every run, so CI is reproducible; CHAOS_FUZZ_RANDOM=1 explores new ones
    derandomize=not os.environ.get("CHAOS_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)


def config(upstream: str) -> str:
    """Routes onto the always-answering upstream, rules that read every part of a request, a budget."""
    return f"""
[providers.chaos]
type = "openai"
base_url = "{upstream}"
api_key = "sk-fuzz-provider-key-0123456789"
responses = false  # the Responses door translates onto Chat Completions: more of the gateway under test
timeout = 20

[[keys]]
name = "fuzzer"
key = "{FUZZ_KEY}"
team = "fuzz"
tags = ["fuzzed"]

[routes.fuzz]
chain = "chaos/ok--fuzz"

[routes.alt]
chain = "chaos/ok--alt"

[prices."ok--fuzz"]
input = 1
output = 2

[prices."ok--alt"]  # every model priced: a budget refuses a model without a price
input = 3
output = 4

[prices."ok--direct"]
input = 1
output = 1

[[budgets]]
scope = "global"
daily_usd = 1000000

[[rules]]
name = "by-header"
route = "alt"
headers = {{ "x-fuzz-tier" = "~^gold" }}

[[rules]]
name = "by-content"
route = "alt"
last_user_regex = "(?i)urgent"
keywords = ["escalate"]

[[rules]]
name = "by-shape"
route = "alt"
tools = true
images = true

[[rules]]
name = "by-size"
route = "alt"
min_prompt_tokens = 50
max_max_tokens = 100

[[rules]]
name = "by-meta"
route = "alt"
metadata = {{ "tier" = "~gold" }}
tags = ["vip"]

[[rules]]
name = "by-system"
route = "alt"
system_regex = "pirate"
json = true
stream = true
"""


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #

ODD_STRINGS = [
    "", " ", "\x00", "\x00\x01\x02\x1f\x7f", "\r\n\r\n", "\u202e\u200b\ufeff", "\U0001f600" * 50, "é" * 10,
    "null", "[DONE]", "data: [DONE]\n\n", '{"error": 1}', "../../etc/passwd", "%s%n%x", "${HOME}", "\\u0000",
    "fuzz", "alt", "chaos/ok--direct", "gpt-4o", "claude-3-5-sonnet-latest", "no/such",
    "fuzz ", "FUZZ", "fuzz\n", "-1", "1e309", "NaN",
]
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ODD_STRINGS),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(0, 40_000)),  # huge
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),  # control characters
)
numbers = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 1e308, -0.0, 0.5, 1.0000001]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


def one_of_weighted(*pairs: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``one_of`` with weights: repeating a branch in ``one_of`` does not make it likelier."""
    picks = [i for i, (weight, _) in enumerate(pairs) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda i: pairs[i][1])


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid request with up to three things gone wrong (some untouched).

    Each mutation picks one value anywhere in the request, all equally likely however deep, and
    replaces it with any JSON value, drops it, or adds a junk sibling: one wrong field inside an
    otherwise good request reaches code that a wholly random body never gets past validation to.
    """
    body = copy.deepcopy(draw(valid))  # never mutate a strategy's own value (st.just, sampled_from)
    for _ in range(draw(st.integers(0, 3))):
        slots = list(_slots(body))
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        if action == "replace":
            container[key] = draw(replacement)
        elif action == "drop":
            del container[key]
        elif isinstance(container, dict):
            container[draw(texts)] = draw(replacement)
        else:
            container.append(draw(replacement))
    return body


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """``(container, key)`` for every value inside ``node``, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        yield node, key
        yield from _slots(value)


#: what a mutation puts in place of a value: containers as often as scalars (a list where a string
#: belongs is the classic crash: unhashable in a set lookup, iterated where it should be read)
replacement = one_of_weighted((2, junk), (1, st.lists(junk, max_size=2)), (1, st.dictionaries(texts, junk, max_size=2)))

models = st.sampled_from(["fuzz", "fuzz", "fuzz", "alt", "chaos/ok--direct"])
prose = one_of_weighted((3, st.text(max_size=60)), (1, texts))  # what people write, and what they should not
small = st.integers(1, 4096)

# Chat Completions
chat_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": prose}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {"url": st.sampled_from(["https://example.com/y.png", "data:image/png;base64,iVBORw0KGgo="])},
        optional={"detail": st.sampled_from(["low", "high", "auto"])},
    )}),
)
tool_call = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=20), "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                                       "arguments": st.sampled_from(['{"q": 1}', "{}", '{"x": "\u00e9"}'])}),
})
chat_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user"]),
                           "content": st.one_of(prose, st.lists(chat_parts, min_size=1, max_size=3))},
                          optional={"name": st.from_regex(r"[A-Za-z0-9_]{1,20}", fullmatch=True)}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(st.none(), prose)},
                          optional={"tool_calls": st.lists(tool_call, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"role": st.just("tool"), "content": prose, "tool_call_id": st.text(min_size=1, max_size=20)}),
)
function_tool = st.fixed_dictionaries({
    "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": st.from_regex(r"[a-z_]{1,20}", fullmatch=True)}, optional={
        "description": prose, "parameters": st.just({"type": "object", "properties": {"q": {"type": "string"}}}),
    }),
})
chat_body = mutated(st.fixed_dictionaries(
    {"model": models, "messages": st.lists(chat_message, min_size=1, max_size=4)},
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "max_tokens": small, "max_completion_tokens": small, "n": st.integers(1, 3),
        "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "seed": st.integers(0, 2**31),
        "stop": st.one_of(prose, st.lists(prose, max_size=4)), "user": prose,
        "tools": st.lists(function_tool, min_size=1, max_size=3),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}, {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}]),
        "metadata": st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3),
        "parallel_tool_calls": st.booleans(), "logit_bias": st.just({"50256": -100}),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]), "x_extra": junk,
    },
))

# Anthropic Messages
block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": prose},
                          optional={"cache_control": st.just({"type": "ephemeral"})}),
    st.fixed_dictionaries({"type": st.just("image"), "source": st.sampled_from([
        {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        {"type": "url", "url": "https://example.com/y.png"}])}),
)
assistant_block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": prose}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.from_regex(r"toolu_[a-z0-9]{1,10}", fullmatch=True),
                           "name": st.from_regex(r"[a-z_]{1,20}", fullmatch=True), "input": st.just({"q": "x"})}),
)
messages_message = st.one_of(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.one_of(prose, st.lists(block, min_size=1, max_size=3))}),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(st.fixed_dictionaries({
        "type": st.just("tool_result"), "tool_use_id": st.from_regex(r"toolu_[a-z0-9]{1,10}", fullmatch=True),
        "content": prose}), min_size=1, max_size=2)}),
    st.fixed_dictionaries({"role": st.just("assistant"),
                           "content": st.one_of(prose, st.lists(assistant_block, min_size=1, max_size=2))}),
)
messages_body = mutated(st.fixed_dictionaries(
    {"model": models, "max_tokens": small, "messages": st.lists(messages_message, min_size=1, max_size=4)},
    optional={
        "system": st.one_of(prose, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": prose}),
                                            min_size=1, max_size=2)),
        "stream": st.booleans(), "temperature": st.floats(0, 1), "top_p": st.floats(0, 1), "top_k": st.integers(1, 500),
        "stop_sequences": st.lists(prose, max_size=3), "metadata": st.fixed_dictionaries({"user_id": prose}),
        "tools": st.lists(st.fixed_dictionaries({
            "name": st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
            "input_schema": st.just({"type": "object", "properties": {"q": {"type": "string"}}})},
            optional={"description": prose}), min_size=1, max_size=3),
        "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}]),
        "thinking": st.sampled_from([{"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}]),
        "x_extra": junk,
    },
))

# OpenAI Responses
input_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": prose}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": st.just("https://example.com/y.png")},
                          optional={"detail": st.sampled_from(["low", "high", "auto"])}),
)
input_item = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]),
                           "content": st.one_of(prose, st.lists(input_part, min_size=1, max_size=3))},
                          optional={"type": st.just("message")}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": prose}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": st.from_regex(r"call_[a-z0-9]{1,10}", fullmatch=True),
                           "name": st.from_regex(r"[a-z_]{1,20}", fullmatch=True), "arguments": st.just('{"q": 1}')}),
    st.fixed_dictionaries({"type": st.just("function_call_output"),
                           "call_id": st.from_regex(r"call_[a-z0-9]{1,10}", fullmatch=True), "output": prose}),
)
responses_body = mutated(st.fixed_dictionaries(
    {"model": models, "input": st.one_of(prose, st.lists(input_item, min_size=1, max_size=4))},
    optional={
        "instructions": prose, "stream": st.booleans(), "max_output_tokens": st.integers(16, 4096),
        "temperature": st.floats(0, 2), "store": st.booleans(),
        "previous_response_id": st.sampled_from(["resp_nope", "resp_0"]),
        "tools": st.lists(st.fixed_dictionaries({
            "type": st.just("function"), "name": st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
            "parameters": st.just({"type": "object", "properties": {}})}), min_size=1, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "text": st.sampled_from([{"format": {"type": "text"}}, {"format": {"type": "json_object"}}]),
        "reasoning": st.sampled_from([{"effort": "low"}, {"effort": "high", "summary": "auto"}]),
        "metadata": st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3),
        "include": st.just(["reasoning.encrypted_content"]), "truncation": st.sampled_from(["auto", "disabled"]),
        "x_extra": junk,
    },
))


def encoded(bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Mostly the door's (mutated) body as JSON; else any JSON value, or bytes that are not JSON."""

    def dump(value: Any, ascii_only: bool) -> bytes:
        return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    return one_of_weighted(
        (8, st.builds(dump, bodies, st.booleans())),
        (1, st.builds(dump, junk, st.booleans())),
        (1, st.one_of(st.binary(max_size=200), st.sampled_from([
            b"", b"{", b"[]", b"null", b'{"model": "fuzz", "messages": [', b"\xff\xfe{}", b"{}" * 10,
            b'{"model": NaN}', b'{"model": "fuzz"}\x00', b'{"a":' * 2000]))),
    )


header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0xA0, max_codepoint=0xFF), max_size=10),
    st.sampled_from(["vip", "vip, batch", ",,,", "a" * 5000, "gold", "gold-plus", "~^gold", "", "vip,\tvip"]),
).map(lambda v: v.strip(" \t"))  # HTTP itself forbids surrounding whitespace: the client would refuse to send it
CREDENTIALS = ("authorization", "x-api-key", "api-key")
headers = st.dictionaries(
    st.sampled_from(["x-interlock-tags", "x-interlock-tags", "x-fuzz-tier", "x-request-id", "x-interlock-route",
                     "x-interlock-model", "x-interlock-team", "x-interlock-user", "x-interlock-budget",
                     "anthropic-version", "anthropic-beta", "openai-beta", "x-stainless-retry-count", *CREDENTIALS]),
    st.one_of(header_values, st.sampled_from([f"Bearer {FUZZ_KEY}", FUZZ_KEY, "Bearer", "Basic Zm9vOmJhcg=="]),
              header_values.map(lambda v: f"Bearer {v}".strip())),
    max_size=5,
)


# --------------------------------------------------------------------------- #
# the properties
# --------------------------------------------------------------------------- #


class Fuzzer:
    """Sends one example to a door and checks the answer; counts what it saw."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.http = httpx2.Client(timeout=60)
        self.seen: Counter[str] = Counter()
        self.bodies: dict[str, bytes] = {}  # by request id: what an error logged by the gateway was about

    def send(self, path: str, body: bytes, extra: dict[str, str]) -> httpx2.Response:
        hdrs = {k: v.encode("latin-1") for k, v in extra.items()}  # bytes as they are: not always UTF-8
        if not any(name in extra for name in CREDENTIALS):
            hdrs["authorization"] = f"Bearer {FUZZ_KEY}".encode()
        request_id = extra.get("x-request-id") or f"fuzz-{sum(self.seen.values())}"
        hdrs.setdefault("x-request-id", request_id.encode("latin-1"))
        self.bodies[request_id] = body
        return self.http.post(f"{self.root}{path}", content=body, headers={"content-type": "application/json", **hdrs})

    def check(self, door: str, path: str, body: bytes, extra: dict[str, str]) -> None:
        try:
            self._check(door, path, body, extra)
        except BaseException:
            self.seen["failed examples"] += 1  # hypothesis shrinks it; the totals then mean nothing
            raise

    def _check(self, door: str, path: str, body: bytes, extra: dict[str, str]) -> None:
        resp = self.send(path, body, extra)
        self.seen[f"{door} total"] += 1
        self.seen[f"{door} {resp.status_code // 100}xx"] += 1
        where = f"{door} {resp.status_code}: body {body[:300]!r} headers {extra!r} -> {resp.content[:500]!r}"
        assert resp.status_code < 500, where
        if resp.status_code >= 400:
            shaped = anthropic_error if door == "messages" else openai_error
            assert shaped(json_or_none(resp.content)), where
            return
        assert resp.status_code == 200, where
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            self.seen[f"{door} streams"] += 1
            assert whole_stream(door, resp.content), where
        else:
            assert whole_answer(door, json_or_none(resp.content)), where

    def close(self) -> None:
        self.http.close()


def whole_answer(door: str, obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    if door == "chat":
        return isinstance(obj.get("choices"), list) and bool(obj["choices"]) and obj["choices"][0]["message"][
            "content"] == REPLY
    if door == "messages":
        return obj.get("type") == "message" and any(b.get("text") == REPLY for b in obj.get("content") or ())
    return obj.get("object") == "response" and obj.get("status") == "completed"


def whole_stream(door: str, body: bytes) -> bool:
    events = sse_data(body)
    payloads = [json_or_none(e.encode()) for e in events if e != "[DONE]"]
    if any(not isinstance(p, dict) for p in payloads):
        return False
    if door == "chat":
        text = "".join(c.get("delta", {}).get("content") or "" for p in payloads for c in p.get("choices") or ())
        return events[-1:] == ["[DONE]"] and not any("error" in p for p in payloads) and text == REPLY
    types = [p.get("type") for p in payloads]
    if door == "messages":
        return types[-1:] == ["message_stop"] and "error" not in types
    return types[-1:] == ["response.completed"] and "error" not in types and "response.failed" not in types


class Errors(logging.Handler):
    """Every ERROR the gateway logs: an answer that looks fine can hide one (a dropped ledger row)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    errors = Errors()
    logging.getLogger("interlock").addHandler(errors)
    with background_loop() as bg:
        upstream = bg.enter(ChaosUpstream())
        gw = bg.enter(running_gateway(config(upstream.base_url), workdir=tmp_path_factory.mktemp("fuzz")))
        fz = Fuzzer(gw.root)
        try:
            yield fz
            seen = fz.seen
            print(f"\nfuzz: {dict(sorted(seen.items()))}")
            for exporter in gw.gateway.exporters:  # the ledger writes what it buffered (or logs why not)
                bg.run(exporter.flush())
            logged = [f"{r.getMessage()} [{r.exc_info[1]!r}]" if r.exc_info else r.getMessage() for r in errors.records]
            ids = {m.group(1) for line in logged for m in re.finditer(r"request (\S+?)[)\s;]", line)}
            about = {rid: fz.bodies[rid][:300] for rid in ids if rid in fz.bodies}
            assert not logged, f"the gateway logged errors: {logged[:5]}; requests: {about}"
            # still up, still answering, after everything it was sent
            assert fz.http.get(f"{gw.root}/health").status_code == 200
            ok = fz.http.post(f"{gw.root}/v1/chat/completions", headers={"authorization": f"Bearer {FUZZ_KEY}"}, json={
                "model": "fuzz", "messages": [{"role": "user", "content": "still there?"}]})
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == REPLY
            # every door that ran reached its deep paths: answers (streamed too) as well as refusals
            for door in ("chat", "messages", "responses"):
                if seen[f"{door} total"] and not seen["failed examples"]:
                    assert seen[f"{door} total"] >= EXAMPLES and seen[f"{door} 5xx"] == 0, seen
                    assert min(seen[f"{door} 2xx"], seen[f"{door} 4xx"]) > EXAMPLES // 20, seen
                    assert seen[f"{door} streams"] > 0, seen
        finally:
            fz.close()
            logging.getLogger("interlock").removeHandler(errors)



@FUZZ
@given(body=encoded(chat_body), extra=headers)
def test_chat_completions_never_5xx(fuzzer: Fuzzer, body: bytes, extra: dict[str, str]) -> None:
    fuzzer.check("chat", "/v1/chat/completions", body, extra)


@FUZZ
@given(body=encoded(messages_body), extra=headers)
def test_messages_never_5xx(fuzzer: Fuzzer, body: bytes, extra: dict[str, str]) -> None:
    fuzzer.check("messages", "/v1/messages", body, extra)


@FUZZ
@given(body=encoded(responses_body), extra=headers)
def test_responses_never_5xx(fuzzer: Fuzzer, body: bytes, extra: dict[str, str]) -> None:
    fuzzer.check("responses", "/v1/responses", body, extra)
