"""A fake AWS Bedrock runtime: Converse, ConverseStream (binary event stream), InvokeModel and its stream.

``FakeBedrock`` answers through the shared reply planner like every fake, speaks Bedrock's
REST-JSON wire format (errors carry ``x-amzn-ErrorType`` and ``{"message"}``), and streams
real AWS event-stream frames with CRCs, so the official ``boto3`` client accepts it (see
``tests/testing/test_fake_bedrock.py``). With ``access_key_id`` and ``secret_access_key`` set
it verifies each request's SigV4 signature (through botocore); with ``api_key`` it accepts a
Bedrock API key as ``Authorization: Bearer``. Point a client at :attr:`url`.

InvokeModel answers Titan and Cohere embedding requests and, for Claude model ids, the Anthropic
Messages body Bedrock takes there (no ``model``, no ``stream``, ``anthropic_version``
``bedrock-2023-05-31``, betas in an ``anthropic_beta`` list); InvokeModelWithResponseStream streams
Claude's events, each one's JSON base64-encoded in a ``chunk`` frame (``{"bytes": ...}``), and its
in-band failures as exception frames; CountTokens counts such a body (``input.invokeModel``).
Claude's answers come from :attr:`FakeBedrock.claude`, a
:class:`~interlock.testing.fake_anthropic.FakeAnthropic` to steer (``fake.claude.thinking = ...``).

Knobs a test may set on an instance: :attr:`reasoning` (a reasoning block before the answer),
:attr:`cache_read_tokens` / :attr:`cache_write_tokens` (reported in usage), :attr:`stop_reason`
(overrides the natural one), :attr:`stream_exception` (the in-band exception that
``Fault(error_event_at=...)`` sends) and :attr:`usage` (also a constructor argument): a Converse
``TokenUsage`` object deep-merged (:func:`~interlock.testing._base.merge_usage`) into the ``usage``
of every Converse answer and of a ConverseStream's ``metadata`` event, e.g. ``{"inputTokens": 500,
"cacheReadInputTokens": 6000, "cacheWriteInputTokens": 2000, "outputTokens": 300, "totalTokens":
8800}``. Claude's InvokeModel answers report :attr:`claude`'s ``usage`` instead (Anthropic's shape).
"""

from __future__ import annotations

import base64
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from interlock.testing._base import FakeServer, Fault, merge_usage, request_state
from interlock.testing._bedrock_checks import MALFORMED, check_converse
from interlock.testing._eventstream import corrupt, event_frame, exception_frame
from interlock.testing.fake_anthropic import FakeAnthropic, _text
from interlock.testing._replies import Reply, ReplyError, call_id, embed, plan_reply, prompt_tokens, split

if TYPE_CHECKING:
    from interlock.testing.conformance import ProviderCase

__all__ = ["FakeBedrock", "Fault", "conformance_case"]

EVENT_STREAM = "application/vnd.amazon.eventstream"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_INVALID_TOKEN = "The security token included in the request is invalid."
_INVALID_MODEL = "The provided model identifier is invalid."
_JSON_ASKED = re.compile(r"\bJSON\b")
_SCHEMA_IN_TEXT = re.compile(r"JSON Schema: (\{.*\})\s*$", re.DOTALL)
# (exception name, message) per status, as Bedrock sends them
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", MALFORMED),
    401: ("UnrecognizedClientException", _INVALID_TOKEN),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested resource could not be found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error. Try your request again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: (
        "InternalServerException",
        "The system encountered an unexpected error during processing. Try your request again.",
    ),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
#: payloads of the in-band exceptions a ConverseStream can end with
STREAM_EXCEPTIONS: dict[str, dict[str, Any]] = {
    "modelStreamErrorException": {
        "message": "The model encountered an error while streaming its response.",
        "originalStatusCode": 500,
        "originalMessage": "Internal server error",
    },
    "throttlingException": {"message": "Too many tokens, please wait before trying again."},
    "serviceUnavailableException": {"message": "Bedrock is unable to process your request."},
    "internalServerException": {"message": _ERRORS[500][1]},
    "validationException": {"message": "Input is too long for requested model."},
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
#: the ``anthropic_version`` Claude's InvokeModel body must carry
ANTHROPIC_VERSION = "bedrock-2023-05-31"
_DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


def _type_header(name: str) -> str:
    return f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"


def _texts(blocks: Iterable[Any]) -> list[str]:
    return [b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]


def _tool_result_text(block: dict[str, Any]) -> str:
    parts = []
    for item in block.get("content") or ():
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif isinstance(item, dict) and "json" in item:
            parts.append(orjson.dumps(item["json"]).decode())
    return " ".join(parts)


class FakeBedrock(FakeServer):
    """A deterministic Bedrock runtime endpoint; see the module docstring."""

    auth_failure = (403, _INVALID_TOKEN)

    def __init__(
        self,
        models: Iterable[str] = (
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "amazon.nova-pro-v1:0",
            "amazon.titan-embed-text-v2:0",
            "cohere.embed-english-v3",
        ),
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
        api_key: str | None = None,
        chunks: int = 5,
        seed: int = 0,
        failure_rate: float = 0.0,
        record_limit: int | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        """``access_key_id`` (and ``secret_access_key`` to check signatures) or ``api_key`` make
        the fake require credentials; with neither it accepts any request. ``region`` pins the
        credential scope a signature must use. ``usage``: see the module docstring."""
        self.models: list[str] = list(models)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.chunks = max(1, chunks)
        #: merged into every Converse answer's ``usage`` (None: the fake's own counts only)
        self.usage: Mapping[str, Any] | None = usage
        self.reasoning: str | None = None
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.stop_reason: str | None = None
        self.stream_exception = "modelStreamErrorException"
        self.claude = _InvokeClaude(self, chunks)
        super().__init__(api_key=api_key, seed=seed, failure_rate=failure_rate, record_limit=record_limit)

    # -- FakeServer hooks -------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/model/{model_id:.+}/converse", self._converse)
        router.add_post("/model/{model_id:.+}/converse-stream", self._converse)
        router.add_post("/model/{model_id:.+}/invoke", self._invoke)
        router.add_post("/model/{model_id:.+}/invoke-with-response-stream", self._invoke_stream)
        router.add_post("/model/{model_id:.+}/count-tokens", self._count_tokens)

    def model_of(self, request: web.Request, body: Any) -> Any:
        return request.match_info.get("model_id")

    def is_generation(self, request: web.Request) -> bool:
        # InvokeModel generates for Claude; for the other models it embeds; counting generates nothing
        if request.method != "POST" or request.path.endswith("/count-tokens"):
            return False
        return not request.path.endswith("/invoke") or "anthropic.claude" in request.match_info.get("model_id", "")

    def authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.api_key is not None and hmac.compare_digest(header[7:], self.api_key)
        if self.access_key_id is None:
            return self.api_key is None  # an open fake, unless it only takes API keys
        return self._signature_ok(request, header)

    def _signature_ok(self, request: web.Request, header: str) -> bool:
        """SigV4 for ``bedrock``: the access key and scope, and the signature itself with the secret."""
        m = _AUTH.match(header)
        amz_date = request.headers.get("X-Amz-Date", "")
        if (
            m is None
            or m["akid"] != self.access_key_id
            or m["service"] != "bedrock"
            or not amz_date.startswith(m["date"])
        ):
            return False
        if self.region is not None and m["region"] != self.region:
            return False
        if self.secret_access_key is None:
            return True
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        names = m["signed"].split(";")
        signed = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            data=request_state(request).raw,
            headers={name: request.headers.get(name, "") for name in names},
        )
        signed.context["timestamp"] = amz_date
        auth = SigV4Auth(Credentials(self.access_key_id, self.secret_access_key), "bedrock", m["region"])
        expected = auth.signature(auth.string_to_sign(signed, auth.canonical_request(signed)), signed)
        return hmac.compare_digest(expected, m["signature"])

    def _headers(self) -> dict[str, str]:
        return {"x-amzn-RequestId": str(uuid.UUID(int=int(self.next_id(""))))}

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=orjson.dumps(data),
            status=status,
            content_type="application/json",
            headers={**self._headers(), **(headers or {})},
        )

    def error_response(self, status: int, message: str | None = None, **detail: Any) -> web.Response:
        name, default = _ERRORS.get(
            status, ("InternalServerException" if status >= 500 else "ValidationException", f"HTTP {status}")
        )
        if message == _INVALID_TOKEN:
            name = "UnrecognizedClientException"
        elif message is not None and message.startswith("Unknown request URL"):
            name = "UnknownOperationException"
        name = detail.get("error_type", name)
        return self._json({"message": message or default}, status, {"x-amzn-ErrorType": _type_header(name)})

    def fault_response(self, fault: Fault) -> web.Response:
        response = super().fault_response(fault)
        response.headers.update(self._headers())
        if fault.status is not None and fault.status >= 400 and fault.body is not None:
            # a custom body still comes with the exception name Bedrock sends for that status
            name = _ERRORS.get(
                fault.status,
                ("InternalServerException" if fault.status >= 500 else "ValidationException", ""),
            )[0]
            response.headers.setdefault("x-amzn-ErrorType", _type_header(name))
        return response

    def _invalid(self, message: str) -> web.Response:
        return self.error_response(400, message)

    # -- Converse / ConverseStream ----------------------------------------------------------------

    def _plan(self, body: dict[str, Any]) -> Reply | web.Response:
        messages: list[dict[str, Any]] = body["messages"]
        prompt, images = "", 0
        for message in reversed(messages):
            content = message["content"]
            if message["role"] == "user" and any("text" in b or "image" in b for b in content):
                prompt = " ".join(_texts(content))
                images = sum(1 for b in content if "image" in b)
                break
        last = messages[-1]
        # a turn of tool results only; text after the results is a new question (OpenAI's tool + user)
        answers_tools = last["role"] == "user" and all("toolResult" in b for b in last["content"])
        results = [b["toolResult"] for b in last["content"]] if answers_tools else []
        tool_config = body.get("toolConfig") or {}
        tools = [
            {"name": t["toolSpec"]["name"], "parameters": t["toolSpec"]["inputSchema"]["json"]}
            for t in tool_config.get("tools") or ()
        ]
        choice = tool_config.get("toolChoice") or {}
        tool_choice = "required" if "any" in choice else (choice.get("tool") or {}).get("name")
        system = "\n".join(_texts(body.get("system") or ()))
        schema: dict[str, Any] | None = None
        text_format = (body.get("outputConfig") or {}).get("textFormat") or {}
        try:
            if m := _SCHEMA_IN_TEXT.search(
                system
            ):  # a model follows a schema spelled out in its instructions
                schema = orjson.loads(m.group(1))
            if text_format.get("type") == "json_schema":  # native structured output: the schema is a string
                schema = orjson.loads(
                    ((text_format.get("structure") or {}).get("jsonSchema") or {}).get("schema") or "{}"
                )
        except orjson.JSONDecodeError:
            return self._invalid("The JSON schema is not valid JSON.")
        try:
            return plan_reply(
                prompt=prompt,
                images=images,
                tools=tools or None,
                tool_choice=tool_choice,
                tool_result=_tool_result_text(results[-1]) if results else None,
                json_mode=bool(_JSON_ASKED.search(system)),
                schema=schema,
                max_tokens=(body.get("inferenceConfig") or {}).get("maxTokens"),
            )
        except ReplyError as exc:
            return self._invalid(f"The tool choice is invalid: {exc}.")

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["model_id"] not in self.models:
            return self._invalid(_INVALID_MODEL)
        state = request_state(request)
        if state.malformed or (problem := check_converse(state.json)):
            return self._invalid(MALFORMED if state.malformed else str(problem))
        body: dict[str, Any] = state.json
        reply = self._plan(body)
        if isinstance(reply, web.Response):
            return reply
        texts = _texts(body.get("system") or ())
        for message in body["messages"]:
            for block in message["content"]:
                texts += _texts([block])
                if "toolUse" in block:
                    texts.append(orjson.dumps(block["toolUse"]["input"]).decode())
                if "toolResult" in block:
                    texts.append(_tool_result_text(block["toolResult"]))
        output = reply.completion_tokens + (len(self.reasoning.split()) if self.reasoning else 0)
        usage: dict[str, Any] = {"inputTokens": prompt_tokens(texts), "outputTokens": output}
        if self.cache_read_tokens:
            usage["cacheReadInputTokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            usage["cacheWriteInputTokens"] = self.cache_write_tokens
        usage["totalTokens"] = (
            usage["inputTokens"] + output + self.cache_read_tokens + self.cache_write_tokens
        )
        usage = merge_usage(usage, self.usage)
        stop_reason = self.stop_reason or _STOP_REASONS[reply.finish_reason]
        tool_id = call_id(self.next_id("tool-"), "tooluse_") if reply.tool_name else None
        if request.path.endswith("/converse-stream"):
            return await self._stream(request, reply, tool_id, stop_reason, usage)
        content: list[dict[str, Any]] = []
        if self.reasoning:
            content.append(
                {
                    "reasoningContent": {
                        "reasoningText": {"text": self.reasoning, "signature": "fake-signature"}
                    }
                }
            )
        if reply.tool_name is not None:
            content.append(
                {
                    "toolUse": {
                        "toolUseId": tool_id,
                        "name": reply.tool_name,
                        "input": orjson.loads(reply.arguments or "{}"),
                    }
                }
            )
        else:
            content.append({"text": reply.content or ""})
        return self._json(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason,
                "usage": usage,
                "metrics": {"latencyMs": 42},
            }
        )

    async def _stream(
        self, request: web.Request, reply: Reply, tool_id: str | None, stop_reason: str, usage: dict[str, Any]
    ) -> web.StreamResponse:
        """Bedrock's event sequence: messageStart, deltas (and tool start), stops, then metadata."""
        pad = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"

        def event(name: str, payload: dict[str, Any]) -> bytes:
            # Bedrock pads every event with a random-length "p" field against length side channels
            return event_frame(name, {**payload, "p": pad[: 1 + len(orjson.dumps(payload)) % len(pad)]})

        events: list[bytes] = []
        block = 0
        if self.reasoning:
            for piece in split(self.reasoning, self.chunks):
                events.append(
                    event(
                        "contentBlockDelta",
                        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": piece}}},
                    )
                )
            events.append(
                event(
                    "contentBlockDelta",
                    {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "fake-signature"}}},
                )
            )
            events.append(event("contentBlockStop", {"contentBlockIndex": 0}))
            block = 1
        if reply.tool_name is not None:
            start = {"toolUse": {"toolUseId": tool_id, "name": reply.tool_name}}
            events.append(event("contentBlockStart", {"contentBlockIndex": block, "start": start}))
            for piece in split(reply.arguments or "", self.chunks):
                events.append(
                    event(
                        "contentBlockDelta",
                        {"contentBlockIndex": block, "delta": {"toolUse": {"input": piece}}},
                    )
                )
        else:
            for piece in split(reply.content or "", self.chunks):
                events.append(
                    event("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": piece}})
                )
        tail = [
            event("contentBlockStop", {"contentBlockIndex": block}),
            event("messageStop", {"stopReason": stop_reason}),
            event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}),
        ]
        payload = STREAM_EXCEPTIONS.get(self.stream_exception, {"message": "stream failed"})
        response = web.StreamResponse(headers={"Content-Type": EVENT_STREAM, **self._headers()})
        return await self.play(
            request,
            response,
            head=[event("messageStart", {"role": "assistant"})],
            events=events,
            tail=tail,
            error_event=exception_frame(self.stream_exception, payload),
            malformed=corrupt(
                event("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": "garbled"}})
            ),
        )

    # -- InvokeModel (embeddings) -----------------------------------------------------------------

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model_id"]
        if model not in self.models:
            return self._invalid(_INVALID_MODEL)
        state = request_state(request)
        body = state.json
        if state.malformed or not isinstance(body, dict):
            return self._invalid(MALFORMED)
        if "anthropic.claude" in model:
            return await self._claude(request, body, model, stream=False)
        if "titan-embed" in model:
            extra = sorted(set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"})
            if extra:
                return self._invalid(
                    f"Malformed input request: extraneous key [{extra[0]}] is not permitted, "
                    "please reformat your input and try again."
                )
            text = body.get("inputText")
            dims = body.get("dimensions", 1024)
            if not isinstance(text, str) or not text or dims not in (256, 512, 1024):
                return self._invalid(MALFORMED)
            tokens = max(1, len(text.split()))
            headers = {"X-Amzn-Bedrock-Input-Token-Count": str(tokens)}
            return self._json(
                {"embedding": embed(text, dims), "inputTextTokenCount": tokens}, headers=headers
            )
        if "cohere.embed" in model:
            texts = body.get("texts")
            if (
                not isinstance(texts, list)
                or not 1 <= len(texts) <= 96
                or not all(isinstance(t, str) for t in texts)
                or body.get("input_type")
                not in ("search_document", "search_query", "classification", "clustering")
            ):
                return self._invalid(MALFORMED)
            tokens = sum(max(1, len(t.split())) for t in texts)
            data = {
                "embeddings": [embed(t, 1024) for t in texts],
                "id": str(uuid.uuid4()),
                "response_type": "embeddings_floats",
                "texts": texts,
            }
            return self._json(data, headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})
        return self._invalid("The fake serves InvokeModel for Claude and for Titan and Cohere embedding models only.")

    # -- InvokeModel / InvokeModelWithResponseStream for Claude ------------------------------------

    async def _invoke_stream(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model_id"]
        if model not in self.models:
            return self._invalid(_INVALID_MODEL)
        state = request_state(request)
        if state.malformed or not isinstance(state.json, dict):
            return self._invalid(MALFORMED)
        if "anthropic.claude" not in model:
            return self._invalid("The fake streams InvokeModel for Claude models only.")
        return await self._claude(request, state.json, model, stream=True)

    async def _claude(
        self, request: web.Request, body: dict[str, Any], model: str, *, stream: bool
    ) -> web.StreamResponse:
        """Claude's Messages body as InvokeModel takes it: the model in the path, the version in the body."""
        version = body.get("anthropic_version")
        if version != ANTHROPIC_VERSION and not (isinstance(version, str) and _DATED_VERSION.match(version)):
            # Bedrock's own version, or a dated Messages API version (what anthropic's Bedrock client sends)
            return self._invalid(f"Malformed input request: anthropic_version: must be {ANTHROPIC_VERSION}")
        for key in ("model", "stream"):  # the path and the operation say these
            if key in body:
                return self._invalid(
                    f"Malformed input request: extraneous key [{key}] is not permitted, "
                    "please reformat your input and try again."
                )
        betas = body.get("anthropic_beta")
        if betas is not None and not (isinstance(betas, list) and all(isinstance(b, str) for b in betas)):
            return self._invalid("Malformed input request: anthropic_beta: expected a list of strings")
        checked = self.claude.validate(request, require_model=False)
        if isinstance(checked, web.Response):
            return self._invalid(_claude_message(checked))  # Bedrock reports Claude's complaint as its own
        return await self.claude.answer(request, {**checked, "stream": True} if stream else checked, model)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """CountTokens for a Claude InvokeModel body (``input.invokeModel.body``, base64 as blobs are in JSON)."""
        model = request.match_info["model_id"]
        if model not in self.models:
            return self._invalid(_INVALID_MODEL)
        state = request_state(request)
        invoke = ((state.json or {}).get("input") or {}).get("invokeModel") if isinstance(state.json, dict) else None
        if state.malformed or not isinstance(invoke, dict) or "anthropic.claude" not in model:
            return self._invalid("The fake counts InvokeModel bodies of Claude models only.")
        try:
            body = orjson.loads(base64.b64decode(invoke.get("body") or "", validate=True))
        except ValueError:
            return self._invalid(MALFORMED)
        if not isinstance(body, dict) or body.get("anthropic_version") != ANTHROPIC_VERSION:
            return self._invalid(MALFORMED)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._invalid(MALFORMED)
        texts = [_text(body.get("system") or "")] + [_text(m.get("content")) for m in messages if isinstance(m, dict)]
        return self._json({"inputTokens": prompt_tokens(texts)})

    def claude_frames(self, sse: bytes) -> bytes:
        """One of Claude's server-sent events as Bedrock streams it: a ``chunk`` frame of its JSON, base64."""
        data = next(line[6:] for line in sse.split(b"\n") if line.startswith(b"data: "))
        payload = {"bytes": base64.b64encode(data).decode()}
        # padding of random length against length side channels, as on every Bedrock stream event
        return event_frame("chunk", {**payload, "p": _PAD[: 1 + len(data) % len(_PAD)]})


def _claude_message(response: web.Response) -> str:
    """The message of an Anthropic error response (FakeAnthropic's validation)."""
    assert isinstance(response.body, bytes)
    return str(orjson.loads(response.body)["error"]["message"])


class _InvokeClaude(FakeAnthropic):
    """FakeAnthropic's answers, streamed in Bedrock's framing instead of server-sent events."""

    def __init__(self, bedrock: FakeBedrock, chunks: int) -> None:
        self.bedrock = bedrock
        super().__init__(models=(), chunks=chunks)

    async def play(
        self,
        request: web.Request,
        response: web.StreamResponse,
        *,
        head: Sequence[bytes],
        events: Sequence[bytes],
        tail: Sequence[bytes],
        error_event: bytes,
        malformed: bytes,
    ) -> web.StreamResponse:
        bedrock = self.bedrock
        frame = bedrock.claude_frames
        response.headers["Content-Type"] = EVENT_STREAM
        response.headers["X-Amzn-Bedrock-Content-Type"] = "application/json"
        response.headers.update(bedrock._headers())
        response.headers.pop("Cache-Control", None)
        payload = STREAM_EXCEPTIONS.get(bedrock.stream_exception, {"message": "stream failed"})
        return await super().play(
            request,
            response,
            head=[frame(e) for e in head],
            events=[frame(e) for e in events],
            tail=[frame(e) for e in tail],
            error_event=exception_frame(bedrock.stream_exception, payload),
            malformed=corrupt(frame(events[0] if events else tail[0])),
        )


def conformance_case() -> ProviderCase:
    """The conformance :class:`~interlock.testing.conformance.ProviderCase` for ``bedrock``."""
    from interlock.testing.conformance import FEATURES, ProviderCase
    from interlock.testing.gateway import provider_table

    akid, secret, region = "AKIAFAKECONFORMANCE1", "fake/conformance+secret0123456789abcdef", "us-west-2"
    chat, embedder = "anthropic.claude-3-5-haiku-20241022-v1:0", "amazon.titan-embed-text-v2:0"
    return ProviderCase(
        name="bedrock",
        fake=lambda: FakeBedrock(
            models=[chat, embedder], access_key_id=akid, secret_access_key=secret, region=region
        ),
        provider_toml=lambda fake, timeout: provider_table(
            "bedrock", type="bedrock", base_url=fake.url, region=region, timeout=timeout
        ),
        model=f"bedrock/{chat}",
        embeddings_model=f"bedrock/{embedder}",
        features=FEATURES,
        # Bedrock has no 401 (bad credentials are 403) and reports guardrail blocks as a stop reason
        errors={
            "context_length": (400, {"message": "Input is too long for requested model."}),
            "auth": (403, None),
        },
        environ={
            "AWS_ACCESS_KEY_ID": akid,
            "AWS_SECRET_ACCESS_KEY": secret,
            # never the developer's real AWS setup, and no instance-metadata probing
            "AWS_CONFIG_FILE": "/nonexistent/interlock-test/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/interlock-test/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
