"""Translation between OpenAI chat requests and Replicate predictions.

Replicate has no chat schema: every model declares its own inputs. The
official language models (``meta/meta-llama-3-70b-instruct`` and the
cog-vllm family) take a single ``prompt`` plus ``system_prompt`` and sampling
knobs, and apply their own chat template to the prompt. So the conversation is
rendered into one prompt:

* a conversation of exactly one user message (after the system/developer
  messages are lifted into ``system_prompt``) is sent as that message's text,
  unchanged, so the model's own chat template sees exactly what the user wrote;
* anything longer is rendered as a transcript, one block per turn, blocks
  separated by a blank line, ending with the cue for the model's turn::

      User: first question

      Assistant: first answer

      User: second question

      Assistant:

The fake Replicate server parses the same format back (its "model" answers the
last ``User:`` block), so the two are kept in step by :data:`TRANSCRIPT_LABELS`
and :data:`ASSISTANT_CUE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from interlock.provider_api import (
    UpstreamError,
    Usage,
    json_schema_of,
    jsonutil,
    max_tokens_of,
    stop_of,
    system_text,
    text_of,
    tool_choice_of,
)

#: role -> transcript label
TRANSCRIPT_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool"}
#: the block that ends a transcript and hands the turn to the model
ASSISTANT_CUE = "Assistant:"
BLOCK_SEPARATOR = "\n\n"

#: OpenAI parameters copied into the prediction input under the same name (cog-vllm's inputs)
_SAME_NAME = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_VERSION = re.compile(r"^[0-9a-f]{64}$")
_MODEL = re.compile(r"^(?P<owner>[^/:\s]+)/(?P<name>[^/:\s]+)(?::(?P<version>[^/:\s]+))?$")


class Unsupported(UpstreamError):
    """The request asks for something no Replicate prediction can do (JSON mode, forced tools, n > 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="http", status=400, code="unsupported_parameter", error_type="invalid_request_error")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Where a model name sends its predictions: an official model's route, or a version."""

    owner: str | None
    name: str | None
    version: str | None

    def create_path(self) -> str:
        """The create-prediction path under the API root."""
        if self.version is None:
            return f"/v1/models/{quote(self.owner or '', safe='')}/{quote(self.name or '', safe='')}/predictions"
        return "/v1/predictions"


def parse_model(model: str) -> ModelRef:
    """``owner/name`` (official model route), ``owner/name:version`` or a bare 64-hex version id."""
    if _VERSION.match(model):
        return ModelRef(None, None, model)
    m = _MODEL.match(model)
    if not m:
        raise UpstreamError(
            f"{model!r} is not a Replicate model: use 'owner/name' or 'owner/name:<version id>'",
            kind="http", status=404, code="model_not_found",
        )
    return ModelRef(m.group("owner"), m.group("name"), m.group("version"))


# --------------------------------------------------------------------------- #
# request
# --------------------------------------------------------------------------- #


def render_prompt(messages: list[dict[str, Any]]) -> str:
    """The ``prompt`` for a conversation: the lone user message, or a transcript (see module doc)."""
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    if len(turns) == 1 and turns[0].get("role") == "user":
        return text_of(turns[0].get("content"))
    blocks = [f"{TRANSCRIPT_LABELS.get(str(m.get('role')), 'User')}: {_turn_text(m)}".rstrip() for m in turns]
    if not turns or turns[-1].get("role") != "assistant":
        blocks.append(ASSISTANT_CUE)
    return BLOCK_SEPARATOR.join(blocks)


def _turn_text(message: dict[str, Any]) -> str:
    """A turn's text; an assistant's earlier tool calls are spelled out, as there is no tool schema."""
    text = text_of(message.get("content"))
    calls = [
        f"[called {c['function'].get('name', '')}({c['function'].get('arguments') or ''})]"
        for c in message.get("tool_calls") or ()
        if isinstance(c, dict) and isinstance(c.get("function"), dict)
    ]
    return " ".join(p for p in (text, *calls) if p)


def last_image(messages: list[dict[str, Any]]) -> str | None:
    """The most recent image part's URL (``data:`` URL or http(s) URL), as sent.

    Replicate vision models take one ``image`` input (a URL or a data URL), so
    only the newest image of the conversation can be passed on.
    """
    found: str | None = None
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if isinstance(url, str) and url:
                    found = url
    return found


def check_supported(body: dict[str, Any]) -> None:
    """Refuse what a prompt-in, text-out prediction cannot honour rather than silently ignoring it."""
    json_mode, _ = json_schema_of(body)
    if json_mode:
        raise Unsupported("Replicate predictions have no JSON mode (response_format)")
    choice = tool_choice_of(body)
    if body.get("tools") and choice not in (None, "none"):
        raise Unsupported("Replicate predictions have no tool calling, so a tool call cannot be forced")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise Unsupported("a Replicate prediction returns one completion (n must be 1)")


def build_input(body: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The prediction ``input`` for an OpenAI chat body; ``overrides`` are applied last and win."""
    messages: list[dict[str, Any]] = body.get("messages") or []
    data: dict[str, Any] = {"prompt": render_prompt(messages)}
    if (system := system_text(messages)) is not None:
        data["system_prompt"] = system
    if (limit := max_tokens_of(body)) is not None:
        data["max_tokens"] = limit
    for key in _SAME_NAME:
        if body.get(key) is not None:
            data[key] = body[key]
    if isinstance(body.get("seed"), int):
        data["seed"] = body["seed"]
    if stop := stop_of(body):
        data["stop_sequences"] = ",".join(stop)  # the schema takes one comma-separated string
    if (image := last_image(messages)) is not None:
        data["image"] = image
    if overrides:
        data.update(overrides)
    return data


# --------------------------------------------------------------------------- #
# response
# --------------------------------------------------------------------------- #


def output_text(output: Any) -> str:
    """A prediction's output as text: language models return an array of tokens to concatenate."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(item if isinstance(item, str) else jsonutil.dumps(item).decode() for item in output if item is not None)
    return jsonutil.dumps(output).decode()


def usage_of(prediction: dict[str, Any]) -> Usage | None:
    """Token usage from ``metrics``; None when the model does not report token counts."""
    metrics = prediction.get("metrics")
    if not isinstance(metrics, dict):
        return None
    prompt, completion = metrics.get("input_token_count"), metrics.get("output_token_count")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else 0,
        completion_tokens=completion if isinstance(completion, int) else 0,
    )


# TensorRT-LLM's wording on Replicate's meta/llama-2 deployments (replicate-python issues #260, #264),
# which the classifier's generic context-length pattern does not cover
_CONTEXT_EXTRA = re.compile(r"prompt length \(\d+\) exceeds maximum input length", re.IGNORECASE)


def prediction_error(name: str, prediction: dict[str, Any], *, kind: str = "http") -> UpstreamError:
    """The failure for a prediction that ended ``failed`` or ``canceled``."""
    status = str(prediction.get("status") or "failed")
    detail = prediction.get("error")
    text = detail if isinstance(detail, str) and detail else f"prediction {status}"
    code = "context_length_exceeded" if _CONTEXT_EXTRA.search(text) else f"prediction_{status}"
    return UpstreamError(
        f"{name}: prediction {prediction.get('id', '')} {status}: {text[:1000]}",
        kind="stream" if kind == "stream" else "http",
        body=prediction,
        code=code,
    )
