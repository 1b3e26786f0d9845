"""What Bedrock's Converse API checks before a model sees a request, for the fake to enforce.

A fake that accepted anything would let a translator's mistakes through; these are the
checks real Bedrock makes (and the ValidationException texts it answers with) for the
mistakes a translator can make: unknown fields, roles that do not alternate, blank text,
bad images, tool blocks without a ``toolConfig``, malformed tool specs.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

__all__ = ["MALFORMED", "check_converse"]

MALFORMED = "Malformed input request, please reformat your input and try again."
_START_WITH_USER = (
    "A conversation must start with a user message. "
    "Try again with a conversation that starts with a user message."
)
_ALTERNATE = (
    "A conversation must alternate between user and assistant roles. Make sure the conversation alternates "
    "between user and assistant roles and try again."
)
_CONVERSE_KEYS = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
}
_BLOCK_KEYS = {
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
}


def _check_block(block: Any, where: str) -> str | None:
    """Bedrock's complaint about one content block, or None when it is well formed."""
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCK_KEYS:
        return f"The content block at {where} must set exactly one member of ContentBlock."
    if "text" in block and not (isinstance(block["text"], str) and block["text"].strip()):
        return (
            f"The text field in the ContentBlock object at {where} is blank. "
            "Add text to the text field, and try again."
        )
    if "image" in block:
        image = block["image"] if isinstance(block["image"], dict) else {}
        if image.get("format") not in ("png", "jpeg", "gif", "webp"):
            return f"The format of the image at {where} is not supported."
        try:
            base64.b64decode((image.get("source") or {}).get("bytes") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            return f"The image bytes at {where} are not valid base64."
    if "toolUse" in block:
        use = block["toolUse"] if isinstance(block["toolUse"], dict) else {}
        if not use.get("toolUseId") or not use.get("name") or not isinstance(use.get("input"), dict):
            return f"The toolUse block at {where} needs toolUseId, name and an object input."
    if "toolResult" in block:
        result = block["toolResult"] if isinstance(block["toolResult"], dict) else {}
        if not result.get("toolUseId") or not isinstance(result.get("content"), list):
            return f"The toolResult block at {where} needs toolUseId and content."
    return None


def check_converse(body: Any) -> str | None:
    """The ValidationException message Bedrock would send for a Converse body, or None."""
    if not isinstance(body, dict):
        return MALFORMED
    unknown = sorted(set(body) - _CONVERSE_KEYS)
    if unknown:
        return f"Unknown parameter(s) in the request: {', '.join(unknown)}"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _START_WITH_USER
    uses_tools = False
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"The role at messages.{i} must be user or assistant."
        if i == 0 and role != "user":
            return _START_WITH_USER
        if i > 0 and role == messages[i - 1].get("role"):
            return _ALTERNATE
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return (
                f"The content field in the Message object at messages.{i} is empty. "
                "Add a ContentBlock object to the content field and try again."
            )
        for j, block in enumerate(content):
            if problem := _check_block(block, f"messages.{i}.content.{j}"):
                return problem
            uses_tools = uses_tools or "toolUse" in block or "toolResult" in block
    system = body.get("system", [])
    if not isinstance(system, list) or any(
        not isinstance(b, dict) or set(b) - {"text", "cachePoint", "guardContent"} for b in system
    ):
        return "The system field must be a list of SystemContentBlock objects."
    config = body.get("inferenceConfig", {})
    if not isinstance(config, dict) or set(config) - {"maxTokens", "temperature", "topP", "stopSequences"}:
        return "The inferenceConfig field has unknown members."
    max_tokens = config.get("maxTokens", 1)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "The maximum tokens you requested must be a positive integer."
    tool_config = body.get("toolConfig")
    if uses_tools and tool_config is None:
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    if tool_config is not None:
        tools = tool_config.get("tools") if isinstance(tool_config, dict) else None
        if (
            not isinstance(tools, list)
            or not tools
            or any(
                not isinstance((t or {}).get("toolSpec"), dict)
                or "json" not in (t["toolSpec"].get("inputSchema") or {})
                or not t["toolSpec"].get("name")
                for t in tools
            )
        ):
            return "The toolConfig.tools field must list toolSpec objects with a name and inputSchema.json."
        choice = tool_config.get("toolChoice")
        if choice is not None and (
            not isinstance(choice, dict)
            or len(choice) != 1
            or next(iter(choice)) not in ("auto", "any", "tool")
        ):
            return "The toolChoice field must set exactly one of auto, any or tool."
    return None
