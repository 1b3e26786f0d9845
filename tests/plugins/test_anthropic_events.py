"""Reading a passed-through Messages stream (``translation/anthropic_events.py``), event by event.

The end-to-end behaviour (the anthropic SDK against the gateway and the fake) is in
``tests/core/test_messages_door.py``; these pin what the Claude providers rely on:
the commit point, the merged usage, the finish reason and the failures.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from interlock.plugins.providers.translation.anthropic_events import (
    EventReader,
    client_headers,
    native_chunks,
    request_body,
)
from interlock.provider_api import Chunk, UpstreamError, Usage

START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 5, "output_tokens": 1},
}}
EVENTS: list[dict[str, Any]] = [
    START,
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 7, "cache_read_input_tokens": None}},
    {"type": "message_stop"},
]


async def sse(events: list[dict[str, Any]]) -> AsyncIterator[tuple[str, bytes]]:
    for event in events:
        yield str(event["type"]), json.dumps(event).encode()


async def read(events: list[dict[str, Any]]) -> list[Chunk]:
    return [chunk async for chunk in native_chunks(sse(events), "anthropic")]


async def test_every_event_is_passed_on_as_it_came() -> None:
    chunks = await read(EVENTS)
    assert all(c.native for c in chunks)
    assert [c.payload for c in chunks] == [
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in EVENTS
    ]
    assert [c.content for c in chunks] == [False, False, False, True, False, False, False]
    assert (chunks[0].response_id, chunks[0].response_model) == ("msg_1", "claude-x")


async def test_usage_is_merged_onto_message_delta_in_openai_semantics() -> None:
    chunks = await read(EVENTS)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[5]
    # input 10 + cache reads 20 + cache writes 5; a null count in message_delta keeps message_start's
    assert with_usage[0].usage == Usage(prompt_tokens=35, completion_tokens=7, cached_tokens=20, cache_write_tokens=5)
    assert chunks[5].finish_reason == "tool_calls"


async def test_error_event_cut_stream_and_malformed_data_are_stream_failures() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamError) as exc:
        await read([START, error])
    assert exc.value.kind == "stream" and exc.value.error_type == "overloaded_error"
    with pytest.raises(UpstreamError, match="without message_stop") as exc:
        await read(EVENTS[:4])
    assert exc.value.kind == "stream"
    with pytest.raises(UpstreamError, match="malformed") as exc:
        EventReader("anthropic").chunk("content_block_delta", b"{not json")


def test_parsed_events_without_a_wire_name() -> None:
    """Bedrock hands the events over as JSON objects: the name is the object's type."""
    reader = EventReader("bedrock")
    chunk = reader.chunk_of({"type": "message_stop"})
    assert chunk.payload == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert reader.finished


def test_request_body_and_headers() -> None:
    native = {"model": "claude-with-backup", "max_tokens": 5, "messages": [], "stream": True}
    assert request_body(native, "claude-x", stream=False) == {"model": "claude-x", "max_tokens": 5, "messages": []}
    assert request_body(native, None, stream=True) == {"max_tokens": 5, "messages": [], "stream": True}
    assert native["model"] == "claude-with-backup"  # the client's body is never changed
    assert client_headers({"anthropic-version": "2023-06-01", "anthropic-beta": "b1", "x-other": "1"}) == {
        "anthropic-version": "2023-06-01", "anthropic-beta": "b1"}
