"""A deliberately cheap fake LLM upstream for the benchmark (not a conformance fake).

One process serves the same app on several ports, one per configured latency
(``--port 9100:0 --port 9120:20`` = instant on 9100, 20 ms on 9120), so the
benchmark can point a gateway at "instant" and "20 ms" upstreams without
running two processes. Endpoints:

* ``POST /v1/chat/completions`` (OpenAI wire): JSON, or SSE with ``--chunks``
  content chunks after a role chunk, then a finish chunk, a usage chunk
  (``choices: []``) and ``data: [DONE]`` (~``chunks + 4`` events);
* ``POST /v1/messages`` (Anthropic wire): JSON, or SSE ``message_start``,
  ``content_block_start``, ``--chunks`` ``content_block_delta``,
  ``content_block_stop``, ``message_delta`` (usage), ``message_stop``;
* ``POST /v1/responses`` (OpenAI Responses wire): a ``response`` object with one
  assistant message, or SSE ``response.created``, ``response.in_progress``,
  ``response.output_item.added``, ``response.content_part.added``, ``--chunks``
  ``response.output_text.delta``, ``response.output_text.done``,
  ``response.content_part.done``, ``response.output_item.done``,
  ``response.completed`` (usage), each with its ``event:`` line and a rising
  ``sequence_number``;
* ``GET /health``.

Everything that can be precomputed is: a reply is a few byte concatenations
and every SSE event is written separately (one ``write`` per event, as a real
upstream does). ``interlock.testing``'s fakes validate and record every
request, which is what tests need but costs more per request than this; the
benchmark measures this server directly (the "direct" rows) so its ceiling is
visible in the results. Run: ``python bench/upstream.py --port 9100:0``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time

import orjson
from aiohttp import web

_ids = itertools.count(1)
_WORDS = [f"w{i} " for i in range(64)]


def _openai_json(model: str, text: str) -> tuple[bytes, bytes]:
    """(prefix, suffix) around the completion id of a non-streaming reply."""
    body = orjson.dumps(
        {
            "id": "@ID@",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
        }
    )
    head, tail = body.split(b"@ID@")
    return head, tail


def _openai_stream(model: str, chunks: int) -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def ev(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    events = [ev({"role": "assistant", "content": ""})]
    events += [ev({"content": _WORDS[i % 64]}) for i in range(chunks)]
    events.append(ev({}, "stop"))
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _anthropic_json(model: str, text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 20},
        }
    )


def _anthropic_stream(model: str, chunks: int) -> list[bytes]:
    def ev(name: str, data: dict) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    message = {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    events = [
        ev("message_start", {"type": "message_start", "message": message}),
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}}),
    ]
    events += [
        ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": _WORDS[i % 64]}})
        for i in range(chunks)
    ]
    events += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": chunks}}),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return events


def _response_object(model: str, status: str, output: list, usage: dict | None) -> dict:
    """A Responses ``response`` object with the fields the openai SDK's ``Response`` requires."""
    return {
        "id": "@ID@", "object": "response", "created_at": int(time.time()), "status": status, "model": model,
        "output": output, "usage": usage, "error": None, "incomplete_details": None, "instructions": None,
        "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto",
        "tools": [], "max_output_tokens": None, "previous_response_id": None, "reasoning": {"effort": None},
        "store": False, "text": {"format": {"type": "text"}}, "truncation": "disabled",
    }


def _responses_usage(output_tokens: int) -> dict:
    return {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 12 + output_tokens}


def _responses_message(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": "msg_bench", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _responses_json(model: str, text: str) -> tuple[bytes, bytes]:
    """(prefix, suffix) around the response id of a non-streaming Responses reply."""
    body = orjson.dumps(_response_object(model, "completed", [_responses_message(text)], _responses_usage(20)))
    head, tail = body.split(b"@ID@")
    return head, tail


def _responses_stream(model: str, chunks: int) -> list[bytes]:
    seq = itertools.count()

    def ev(name: str, data: dict) -> bytes:
        data = {"type": name, "sequence_number": next(seq), **data}
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data).replace(b"@ID@", b"resp_bench") + b"\n\n"

    text = "".join(_WORDS[i % 64] for i in range(chunks))
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    events = [
        ev("response.created", {"response": _response_object(model, "in_progress", [], None)}),
        ev("response.in_progress", {"response": _response_object(model, "in_progress", [], None)}),
        ev("response.output_item.added", {"output_index": 0, "item": {**_responses_message("", "in_progress"),
                                                                      "content": []}}),
        ev("response.content_part.added", {**where, "part": part}),
    ]
    events += [ev("response.output_text.delta", {**where, "delta": _WORDS[i % 64], "logprobs": []})
               for i in range(chunks)]
    events += [
        ev("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ev("response.content_part.done", {**where, "part": {**part, "text": text}}),
        ev("response.output_item.done", {"output_index": 0, "item": _responses_message(text)}),
        ev("response.completed", {"response": _response_object(model, "completed", [_responses_message(text)],
                                                               _responses_usage(chunks))}),
    ]
    return events


class Upstream:
    def __init__(self, chunks: int, chunk_delay: float) -> None:
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.text = "".join(_WORDS[i % 64] for i in range(20))
        self._cache: dict[tuple[str, str], object] = {}
        self.served = 0

    def _get(self, kind: str, model: str):
        key = (kind, model)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 256:  # bounded: a client inventing model names cannot grow us
                self._cache.clear()
            hit = {
                "oj": lambda: _openai_json(model, self.text),
                "os": lambda: _openai_stream(model, self.chunks),
                "aj": lambda: _anthropic_json(model, self.text),
                "as": lambda: _anthropic_stream(model, self.chunks),
                "rj": lambda: _responses_json(model, self.text),
                "rs": lambda: _responses_stream(model, self.chunks),
            }[kind]()
            self._cache[key] = hit
        return hit

    def app(self, latency: float) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)

        async def stream(request: web.Request, events: list[bytes]) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            delay = self.chunk_delay
            for event in events:
                await resp.write(event)
                if delay:
                    await asyncio.sleep(delay)
            await resp.write_eof()
            return resp

        async def chat(request: web.Request) -> web.StreamResponse:
            body = orjson.loads(await request.read())
            self.served += 1
            if latency:
                await asyncio.sleep(latency)
            model = body.get("model") or "unknown"
            if body.get("stream"):
                return await stream(request, self._get("os", model))
            head, tail = self._get("oj", model)
            return web.Response(body=head + b"chatcmpl-%d" % next(_ids) + tail, content_type="application/json")

        async def messages(request: web.Request) -> web.StreamResponse:
            body = orjson.loads(await request.read())
            self.served += 1
            if latency:
                await asyncio.sleep(latency)
            model = body.get("model") or "unknown"
            if body.get("stream"):
                return await stream(request, self._get("as", model))
            return web.Response(body=self._get("aj", model), content_type="application/json")

        async def responses(request: web.Request) -> web.StreamResponse:
            body = orjson.loads(await request.read())
            self.served += 1
            if latency:
                await asyncio.sleep(latency)
            model = body.get("model") or "unknown"
            if body.get("stream"):
                return await stream(request, self._get("rs", model))
            head, tail = self._get("rj", model)
            return web.Response(body=head + b"resp_%d" % next(_ids) + tail, content_type="application/json")

        async def health(request: web.Request) -> web.Response:
            return web.Response(text=f'{{"ok": true, "served": {self.served}}}', content_type="application/json")

        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/chat/completions", chat)
        app.router.add_post("/v1/messages", messages)
        app.router.add_post("/v1/responses", responses)
        app.router.add_post("/responses", responses)
        app.router.add_get("/health", health)
        return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", action="append", required=True, help="PORT:LATENCY_MS (repeatable)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between stream events")
    args = parser.parse_args()
    upstream = Upstream(args.chunks, args.chunk_delay_ms / 1000)
    runners = []
    for spec in args.port:
        port, _, latency = spec.partition(":")
        runner = web.AppRunner(upstream.app(float(latency or 0) / 1000), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, args.host, int(port), backlog=1024).start()
        runners.append(runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"upstream ready pid={os.getpid()} ports={args.port}", flush=True)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


if __name__ == "__main__":
    try:
        import uvloop  # optional: the upstream should be as cheap as possible

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
