"""A translated answer as a Responses ``response`` object: output items, status, usage, echoed request.

:class:`OutputBuilder` turns Chat Completions output (reasoning text, text, refusals,
tool calls) into Responses output items. A stream feeds it chunk by chunk and gets
the stream events as it goes; a non-stream answer feeds it the whole message at
once. Both go through the same code, so a streamed response rebuilt by the SDK is
the non-stream one. :func:`response_object` wraps items in the ``response`` object,
echoing the request's parameters as the SDK's ``Response`` model expects them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from interlock.core.doors.responses_request import GATEWAY_ID_MARK
from interlock.core.responses_wire import usage_to_responses
from interlock.core.types import Usage

#: ``emit(event_type, fields)``: one stream event (without its sequence number)
Emit = Callable[[str, dict[str, Any]], None]

#: a content part kind: the item type it lives in, its event prefix and the field holding its text
_PARTS: dict[str, tuple[str, str, str]] = {
    "output_text": ("message", "response.output_text", "text"),
    "refusal": ("message", "response.refusal", "refusal"),
    "reasoning_text": ("reasoning", "response.reasoning_text", "text"),
}


def new_id(prefix: str) -> str:
    """A gateway-minted id (``resp_ilk…``, ``msg_ilk…``): unique, and recognisably not OpenAI's."""
    return f"{prefix}_{GATEWAY_ID_MARK}{os.urandom(12).hex()}"


def _part(kind: str, text: str) -> dict[str, Any]:
    part: dict[str, Any] = {"type": kind, _PARTS[kind][2]: text}
    if kind == "output_text":
        part["annotations"], part["logprobs"] = [], []
    return part


class OutputBuilder:
    """Output items from Chat Completions deltas, with the stream events that build them when ``emit`` is given."""

    def __init__(self, emit: Emit | None = None) -> None:
        self.items: list[dict[str, Any]] = []
        self._emit = emit
        self._item: dict[str, Any] | None = None  # the open message or reasoning item
        self._part: str | None = None  # the open part's kind
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # open function calls by their chat tool-call index
        self._args: dict[int, list[str]] = {}

    def _event(self, kind: str, **fields: Any) -> None:
        if self._emit is not None:
            self._emit(kind, fields)

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, it in enumerate(self.items) if it is item)

    # -- what the chat output says ---------------------------------------------- #

    def text(self, delta: str, kind: str = "output_text") -> None:
        """Some answer text (``kind`` "output_text"), refusal ("refusal") or reasoning ("reasoning_text")."""
        item_type = _PARTS[kind][0]
        if self._item is None or self._item["type"] != item_type:
            self._close_calls()
            self._close_item("completed")
            self._open_item(item_type)
        if self._part != kind:
            self._close_part()
            self._open_part(kind)
        assert self._item is not None
        self._text.append(delta)
        fields: dict[str, Any] = {"item_id": self._item["id"], "output_index": self._index(self._item),
                                  "content_index": len(self._item["content"]) - 1, "delta": delta}
        if kind == "output_text":
            fields["logprobs"] = []
        self._event(f"{_PARTS[kind][1]}.delta", **fields)

    def tool_call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> None:
        """A tool call's start (id and name) or a piece of its arguments, by its chat tool-call index."""
        call = self._calls.get(index)
        if call is None:
            self._close_item("completed")
            call = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "arguments": "",
                    "call_id": call_id or new_id("call"), "name": name or ""}
            self.items.append(call)
            self._calls[index], self._args[index] = call, []
            self._event("response.output_item.added", output_index=len(self.items) - 1, item=dict(call))
        if arguments:
            self._args[index].append(arguments)
            self._event("response.function_call_arguments.delta", item_id=call["id"],
                        output_index=self._index(call), delta=arguments)

    def finish(self, status: str) -> list[dict[str, Any]]:
        """Close every open item with ``status`` ("completed" or "incomplete"); the output items."""
        self._close_calls()
        self._close_item(status)
        return self.items

    # -- items and parts ----------------------------------------------------- #

    def _open_item(self, item_type: str) -> None:
        if item_type == "message":
            item: dict[str, Any] = {"id": new_id("msg"), "type": "message", "role": "assistant",
                                    "status": "in_progress", "content": []}
        else:
            item = {"id": new_id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
        self.items.append(item)
        self._item = item
        self._event("response.output_item.added", output_index=len(self.items) - 1, item={**item, "content": []})

    def _open_part(self, kind: str) -> None:
        assert self._item is not None
        self._item["content"].append(_part(kind, ""))
        self._part, self._text = kind, []
        self._event("response.content_part.added", item_id=self._item["id"], output_index=self._index(self._item),
                    content_index=len(self._item["content"]) - 1, part=_part(kind, ""))

    def _close_part(self) -> None:
        if self._item is None or self._part is None:
            return
        kind, text = self._part, "".join(self._text)
        part = _part(kind, text)
        self._item["content"][-1] = part
        where = {"item_id": self._item["id"], "output_index": self._index(self._item),
                 "content_index": len(self._item["content"]) - 1}
        done: dict[str, Any] = {**where, _PARTS[kind][2]: text}
        if kind == "output_text":
            done["logprobs"] = []
        self._event(f"{_PARTS[kind][1]}.done", **done)
        self._event("response.content_part.done", **where, part=dict(part))
        self._part, self._text = None, []

    def _close_item(self, status: str) -> None:
        if self._item is None:
            return
        self._close_part()
        item, self._item = self._item, None
        item["status"] = status
        self._event("response.output_item.done", output_index=self._index(item), item=dict(item))

    def _close_calls(self) -> None:
        for index, call in self._calls.items():
            call["arguments"] = "".join(self._args[index])
            call["status"] = "completed"
            where = {"item_id": call["id"], "output_index": self._index(call)}
            self._event("response.function_call_arguments.done", **where, arguments=call["arguments"])
            self._event("response.output_item.done", output_index=where["output_index"], item=dict(call))
        self._calls, self._args = {}, {}

    # -- a whole chat message ---------------------------------------------------- #

    def message(self, message: dict[str, Any]) -> None:
        """A complete chat ``message`` (non-stream): reasoning, then text or refusal, then tool calls."""
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.text(reasoning, "reasoning_text")
        if isinstance(message.get("content"), str) and message["content"]:
            self.text(message["content"])
        if isinstance(message.get("refusal"), str) and message["refusal"]:
            self.text(message["refusal"], "refusal")
        for i, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            self.tool_call(i, call.get("id"), function.get("name"), function.get("arguments") or "")

    def delta(self, delta: dict[str, Any]) -> None:
        """One streamed chat ``delta``."""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.text(reasoning, "reasoning_text")
        if isinstance(delta.get("content"), str) and delta["content"]:
            self.text(delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self.text(delta["refusal"], "refusal")
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            self.tool_call(int(call.get("index") or 0), call.get("id"), function.get("name"), function.get("arguments") or "")


# -- the response object --------------------------------------------------------------- #


def status_of(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """The response status and ``incomplete_details`` a chat finish reason amounts to."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    request: dict[str, Any], response_id: str, created_at: float, model: str, *, status: str = "in_progress",
    output: list[dict[str, Any]] | None = None, usage: Usage | None = None, incomplete: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object for ``request`` (the client's body), its parameters echoed with OpenAI's defaults."""
    text: dict[str, Any] = request["text"] if isinstance(request.get("text"), dict) else {}
    reasoning: dict[str, Any] = request["reasoning"] if isinstance(request.get("reasoning"), dict) else {}
    echoed_text: dict[str, Any] = {"format": text.get("format") or {"type": "text"}}
    if text.get("verbosity") is not None:
        echoed_text["verbosity"] = text["verbosity"]
    obj: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": output if output is not None else [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": echoed_text,
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": usage_to_responses(usage),
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }
    if status == "completed":
        obj["completed_at"] = time.time()
    return obj
