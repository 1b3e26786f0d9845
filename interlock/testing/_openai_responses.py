"""The fake OpenAI server's ``POST /v1/responses``: the Responses API, plain and streamed.

Answers come from the shared reply planner (:func:`interlock.testing._replies.plan_reply`),
read from a Responses request: the last user message's text and images, function
tools and ``tool_choice``, a ``function_call_output`` at the end of the input,
``text.format`` (JSON object or schema) and ``max_output_tokens``. The answer is
one message item, or one ``function_call`` item; a stream sends the events the
official SDK's accumulator expects, numbered by ``sequence_number``, and degrades
under the server's :class:`~interlock.testing._base.Fault` like every other stream.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, request_state
from interlock.testing._replies import Reply, ReplyError, call_id, plan_reply, prompt_tokens, split

_PARSE_ERROR = "We could not parse the JSON body of your request."


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _invalid(param: str | None, message: str, code: str | None = None) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}, 400)


def _text(content: Any) -> tuple[str, int]:
    """``(text, image count)`` of a Responses message's content: a string or input parts."""
    if isinstance(content, str):
        return content, 0
    texts, images = [], 0
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and part.get("type") == "input_image":
            images += 1
    return " ".join(texts), images


def _plan(body: dict[str, Any], items: list[Any]) -> Reply | web.Response:
    users = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
    prompt, images = _text(users[-1].get("content") if users else "")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return _invalid("tools", "Invalid type for 'tools': expected an array.")
    functions = [{"name": t.get("name"), "parameters": t.get("parameters")} for t in tools
                 if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice.get("name")
    last = items[-1] if items and isinstance(items[-1], dict) else {}
    tool_result = None
    if last.get("type") == "function_call_output":
        output = last.get("output")
        tool_result = output if isinstance(output, str) else _text(output)[0]
    fmt = (body.get("text") or {}).get("format") or {}
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 16):
        return _invalid("max_output_tokens", "Invalid 'max_output_tokens': integer below minimum value (16).")
    try:
        return plan_reply(
            prompt=prompt, images=images, tools=functions or None, tool_choice=choice if isinstance(choice, str) else None,
            tool_result=tool_result, json_mode=fmt.get("type") == "json_object",
            schema=(fmt.get("schema") or {"type": "object"}) if fmt.get("type") == "json_schema" else None,
            max_tokens=limit,
        )
    except ReplyError as exc:
        return _invalid("tool_choice", f"Invalid value for 'tool_choice': {exc}.")


def _usage(items: list[Any], reply: Reply) -> dict[str, Any]:
    texts = [_text(i.get("content"))[0] for i in items if isinstance(i, dict)]
    texts += [str(i.get("arguments") or i.get("output") or "") for i in items if isinstance(i, dict) and "call_id" in i]
    prompt = prompt_tokens(texts)
    return {
        "input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": reply.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + reply.completion_tokens,
    }


def _response(body: dict[str, Any], rid: str, status: str, output: list[Any], usage: Any, reply: Reply | None) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if reply is not None and reply.finish_reason == "length" else None
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status, "background": False,
        "error": None, "incomplete_details": incomplete, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": body["model"], "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0), "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0),
        "truncation": "disabled", "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


async def responses(fake: FakeServer, request: web.Request, models: list[str], chunks: int) -> web.StreamResponse:
    """``POST /v1/responses`` on ``fake``, which serves ``models`` and streams text in about ``chunks`` pieces."""
    state = request_state(request)
    body = state.json
    if state.malformed or not isinstance(body, dict):
        return _invalid(None, _PARSE_ERROR)
    for name in ("model", "input"):
        if body.get(name) is None:
            return _invalid(name, f"Missing required parameter: '{name}'.", "missing_required_parameter")
    if body["model"] not in models:
        return _json({"error": {"message": f"The model `{body['model']}` does not exist or you do not have access to it.",
                                "type": "invalid_request_error", "param": None, "code": "model_not_found"}}, 404)
    if body.get("previous_response_id") is not None:
        return _invalid("previous_response_id", "Previous response with id not found.", "previous_response_not_found")
    items = [{"role": "user", "content": body["input"]}] if isinstance(body["input"], str) else body["input"]
    if not isinstance(items, list):
        return _invalid("input", "Invalid type for 'input': expected a string or an array.")
    reply = _plan(body, items)
    if isinstance(reply, web.Response):
        return reply
    rid = fake.next_id("resp_fake")
    item_id = fake.next_id("msg_fake" if reply.tool_name is None else "fc_fake")
    status = "incomplete" if reply.finish_reason == "length" else "completed"
    if reply.tool_name is None:
        part = {"type": "output_text", "text": reply.content or "", "annotations": [], "logprobs": []}
        item: dict[str, Any] = {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}
    else:
        item = {"id": item_id, "type": "function_call", "status": "completed", "arguments": reply.arguments or "",
                "call_id": call_id(rid), "name": reply.tool_name}
    usage = _usage(items, reply)
    final = _response(body, rid, status, [item], usage, reply)
    if body.get("stream") is not True:
        return _json(final)
    return await _stream(fake, request, body, rid, item, reply, final, chunks)


async def _stream(
    fake: FakeServer, request: web.Request, body: dict[str, Any], rid: str, item: dict[str, Any], reply: Reply,
    final: dict[str, Any], chunks: int,
) -> web.StreamResponse:
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": next(seq)}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    progress = _response(body, rid, "in_progress", [], None, None)
    where = {"item_id": item["id"], "output_index": 0}
    head = [event("response.created", response=progress), event("response.in_progress", response=progress)]
    if reply.tool_name is None:
        head.append(event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []}))
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        head.append(event("response.content_part.added", **where, content_index=0, part=empty))
        text = reply.content or ""
        events = [event("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
                  for piece in split(text, chunks)]
        tail = [
            event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]),
            event("response.content_part.done", **where, content_index=0, part=item["content"][0]),
        ]
    else:
        head.append(event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "arguments": ""}))
        args = reply.arguments or ""
        events = [event("response.function_call_arguments.delta", **where, delta=piece) for piece in split(args, chunks)]
        tail = [event("response.function_call_arguments.done", **where, arguments=args)]
    tail.append(event("response.output_item.done", output_index=0, item=item))
    tail.append(event("response.completed" if final["status"] == "completed" else "response.incomplete", response=final))
    error = event("error", code="server_error", message="The server had an error while processing your request.", param=None)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    return await fake.play(
        request, response, head=head, events=events, tail=tail, error_event=error,
        malformed=b"event: response.output_text.delta\ndata: {not json\n\n",
    )
