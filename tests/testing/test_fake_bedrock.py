"""FakeBedrock is only useful if the official SDK accepts it, so these tests drive it with boto3."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
import urllib3
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from interlock.testing import FakeBedrock, Fault
from interlock.testing._eventstream import encode_frame

AKID, SECRET, REGION = "AKIAFAKETEST00000001", "fake/secret+key0123456789", "eu-central-1"
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
ARN = "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-20250514-v1:0"
TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
HELLO: Any = [{"role": "user", "content": [{"text": "Hello there, how are you today?"}]}]
WEATHER: Any = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather for a city",
        "inputSchema": {
            "json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    }
}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
# One frame of a real InvokeModelWithResponseStream response as recorded in AI21's SDK tests
# (tests/unittests/test_aws_stream_decoder.py): the encoder must reproduce AWS's bytes exactly.
RECORDED_FRAME = (
    b"\x00\x00\x01\x80\x00\x00\x00K\xfe\x96$F\x0b:event-type\x07\x00\x05chunk\r:content-type\x07\x00"
    b"\x10application/json\r:message-type\x07\x00\x05event{"
    b'"bytes":"eyJpZCI6ImNtcGwtOTgxZjdmMTc2YWQ0NDE0NTliOTRlNDVlZTI5MmEzMjEiLCJjaG9pY2VzIjpbeyJpbmRleC'
    b"I6MCwiZGVsdGEiOnsicm9sZSI6ImFzc2lzdGFudCJ9LCJmaW5pc2hfcmVhc29uIjpudWxsfV0sInVzYWdlIjp7InByb21wd"
    b'F90b2tlbnMiOjQ0LCJ0b3RhbF90b2tlbnMiOjQ0LCJjb21wbGV0aW9uX3Rva2VucyI6MH19","p":"abcdefghijklmnopq'
    b'rstuv"}5\xca\xa7\x98'
)


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 must never read the developer's AWS setup or probe instance metadata."""
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/interlock-test/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/interlock-test/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fake() -> Iterator[FakeBedrock]:
    server = FakeBedrock(
        models=[CLAUDE, ARN, TITAN, COHERE], access_key_id=AKID, secret_access_key=SECRET, region=REGION
    )
    with server.run_in_thread():
        yield server


def make_client(fake: FakeBedrock, secret: str = SECRET, key: str = AKID) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),  # no SDK retries: every status must surface
    )


@pytest.fixture
def client(fake: FakeBedrock) -> Iterator[Any]:
    sdk = make_client(fake)
    yield sdk
    sdk.close()


def stream_events(client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every event of one ConverseStream; the stream is closed even when iterating raises."""
    stream = client.converse_stream(modelId=CLAUDE, **kwargs)["stream"]
    try:
        return list(stream)
    finally:
        stream.close()  # an unfinished body would keep its connection out of the pool


# -- framing ------------------------------------------------------------------------------------


def test_encoder_reproduces_a_recorded_aws_frame() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(RECORDED_FRAME)
    (message,) = list(buffer)
    assert encode_frame(message.headers, message.payload) == RECORDED_FRAME


def test_every_header_type_round_trips_through_botocore() -> None:
    buffer = EventStreamBuffer()
    headers: dict[str, Any] = {"yes": True, "no": False, "n": -7, "raw": b"\x00\xff", "s": "héllo"}
    buffer.add_data(encode_frame(headers, b"payload") * 2)
    messages = list(buffer)
    assert [(m.headers, m.payload) for m in messages] == [(headers, b"payload")] * 2


# -- Converse -------------------------------------------------------------------------------------


def test_converse_text_usage_and_request_recording(fake: FakeBedrock, client: Any) -> None:
    result = client.converse(
        modelId=CLAUDE,
        messages=HELLO,
        system=[{"text": "Be brief."}],
        inferenceConfig={"maxTokens": 100, "temperature": 0.2},
    )
    assert result["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "Fake reply to: Hello there, how are you today?"}],
    }
    assert result["stopReason"] == "end_turn"
    usage = result["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] == 9
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert result["metrics"]["latencyMs"] >= 0
    assert result["ResponseMetadata"]["RequestId"]
    sent = fake.requests[-1]
    assert sent.path == f"/model/{CLAUDE}/converse"
    assert sent.json["system"] == [{"text": "Be brief."}]
    assert sent.json["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.2}
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")


def test_converse_image_and_multi_turn(client: Any) -> None:
    messages = [
        {"role": "user", "content": [{"text": "first"}]},
        {"role": "assistant", "content": [{"text": "first answer"}]},
        {
            "role": "user",
            "content": [{"text": "what is this"}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
        },
    ]
    result = client.converse(modelId=CLAUDE, messages=messages)
    assert result["output"]["message"]["content"][0]["text"] == "Fake reply to: what is this (1 image)"


def test_max_tokens_truncates(client: Any) -> None:
    result = client.converse(modelId=CLAUDE, messages=HELLO, inferenceConfig={"maxTokens": 2})
    assert result["stopReason"] == "max_tokens"
    assert result["output"]["message"]["content"][0]["text"] == "Fake reply"


def test_json_by_instruction_and_by_output_config(client: Any) -> None:
    asked = client.converse(
        modelId=CLAUDE, messages=HELLO, system=[{"text": "Respond only with valid JSON."}]
    )
    text = asked["output"]["message"]["content"][0]["text"]
    assert json.loads(text) == {"reply": "Fake reply to: Hello there, how are you today?"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    structured = client.converse(
        modelId=CLAUDE,
        messages=HELLO,
        outputConfig={
            "textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "x"}},
            }
        },
    )
    assert json.loads(structured["output"]["message"]["content"][0]["text"]) == {"n": 1}


def test_tool_use_round_trip(client: Any) -> None:
    first = client.converse(modelId=CLAUDE, messages=HELLO, toolConfig={"tools": [WEATHER]})
    assert first["stopReason"] == "tool_use"
    (block,) = first["output"]["message"]["content"]
    use = block["toolUse"]
    assert (
        use["name"] == "get_weather"
        and use["input"] == {"city": "text"}
        and use["toolUseId"].startswith("tooluse_")
    )
    messages = [
        *HELLO,
        first["output"]["message"],
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}],
        },
    ]
    second = client.converse(modelId=CLAUDE, messages=messages, toolConfig={"tools": [WEATHER]})
    assert second["output"]["message"]["content"][0]["text"] == "Tool result: sunny"
    assert second["stopReason"] == "end_turn"


def test_forced_tool_choice_and_unknown_tool(client: Any) -> None:
    time_tool = {
        "toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}
    }
    forced = client.converse(
        modelId=CLAUDE,
        messages=HELLO,
        toolConfig={"tools": [WEATHER, time_tool], "toolChoice": {"tool": {"name": "get_time"}}},
    )
    assert forced["output"]["message"]["content"][0]["toolUse"]["name"] == "get_time"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse(
            modelId=CLAUDE,
            messages=HELLO,
            toolConfig={"tools": [WEATHER], "toolChoice": {"tool": {"name": "nope"}}},
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_reasoning_and_cache_knobs(fake: FakeBedrock, client: Any) -> None:
    fake.reasoning, fake.cache_read_tokens, fake.cache_write_tokens = "Let me think it over.", 30, 5
    result = client.converse(modelId=CLAUDE, messages=HELLO)
    content = result["output"]["message"]["content"]
    assert content[0]["reasoningContent"]["reasoningText"]["text"] == "Let me think it over."
    assert content[1]["text"].startswith("Fake reply to:")
    usage = result["usage"]
    assert usage["cacheReadInputTokens"] == 30 and usage["cacheWriteInputTokens"] == 5
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] + 35


def test_inference_profile_arn_in_the_path(fake: FakeBedrock, client: Any) -> None:
    result = client.converse(modelId=ARN, messages=HELLO)
    assert result["output"]["message"]["content"][0]["text"].startswith("Fake reply to:")
    assert fake.requests[-1].path == f"/model/{ARN}/converse"


# -- ConverseStream -------------------------------------------------------------------------------


def test_stream_event_sequence(client: Any) -> None:
    events = stream_events(client, messages=HELLO)
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) == {"contentBlockDelta"}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Fake reply to: Hello there, how are you today?"
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 9


def test_stream_tool_use(client: Any) -> None:
    events = stream_events(client, messages=HELLO, toolConfig={"tools": [WEATHER]})
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather"
    args = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e
    )
    assert json.loads(args) == {"city": "text"}
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_stream_reasoning_then_text(fake: FakeBedrock, client: Any) -> None:
    fake.reasoning = "Thinking about the weather today."
    events = stream_events(client, messages=HELLO)
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    thought = "".join(
        d["delta"]["reasoningContent"].get("text", "") for d in deltas if d["contentBlockIndex"] == 0
    )
    assert thought == "Thinking about the weather today."
    assert any(d["delta"]["reasoningContent"].get("signature") for d in deltas if d["contentBlockIndex"] == 0)
    assert "".join(d["delta"]["text"] for d in deltas if d["contentBlockIndex"] == 1).startswith(
        "Fake reply to:"
    )


# -- InvokeModel (embeddings) ---------------------------------------------------------------------


def test_titan_embeddings(client: Any) -> None:
    result = client.invoke_model(
        modelId=TITAN, body=json.dumps({"inputText": "alpha beta", "dimensions": 256})
    )
    data = json.loads(result["body"].read())
    assert len(data["embedding"]) == 256 and data["inputTextTokenCount"] == 2
    assert result["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.invoke_model(modelId=TITAN, body=json.dumps({"inputText": "x", "texts": ["x"]}))
    assert "extraneous key [texts]" in info.value.response["Error"]["Message"]


def test_cohere_embeddings(client: Any) -> None:
    body = {"texts": ["alpha", "beta"], "input_type": "search_document"}
    result = client.invoke_model(modelId=COHERE, body=json.dumps(body))
    data = json.loads(result["body"].read())
    assert data["response_type"] == "embeddings_floats" and data["texts"] == ["alpha", "beta"]
    assert len(data["embeddings"]) == 2 and data["embeddings"][0] != data["embeddings"][1]
    with pytest.raises(botocore.exceptions.ClientError):
        client.invoke_model(modelId=COHERE, body=json.dumps({"texts": ["alpha"]}))  # input_type is required


# -- errors and faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_status_faults_raise_the_modelled_exception(
    fake: FakeBedrock, client: Any, status: int, code: str
) -> None:
    fake.add_fault(Fault(status=status))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse(modelId=CLAUDE, messages=HELLO)
    assert info.value.response["Error"]["Code"] == code
    assert type(info.value) is getattr(client.exceptions, code)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_custom_error_body_keeps_the_exception_name_and_retry_after(fake: FakeBedrock, client: Any) -> None:
    fake.add_fault(Fault(status=400, body={"message": "Input is too long for requested model."}))
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.converse(modelId=CLAUDE, messages=HELLO)
    assert info.value.response["Error"]["Message"] == "Input is too long for requested model."
    fake.add_fault(
        Fault(status=429, retry_after=3, headers={"x-amzn-ErrorType": "ModelNotReadyException:http://x/"})
    )
    with pytest.raises(client.exceptions.ModelNotReadyException) as ready:
        client.converse(modelId=CLAUDE, messages=HELLO)
    assert ready.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "3"


def test_fault_matches_the_model_in_the_path(fake: FakeBedrock, client: Any) -> None:
    fake.add_fault(Fault(status=503, model=ARN))
    assert client.converse(modelId=CLAUDE, messages=HELLO)["stopReason"] == "end_turn"
    with pytest.raises(client.exceptions.ServiceUnavailableException):
        client.converse(modelId=ARN, messages=HELLO)


def test_unknown_model_and_invalid_body(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.converse(modelId="nope.model-v1:0", messages=HELLO)
    assert info.value.response["Error"]["Message"] == "The provided model identifier is invalid."
    with pytest.raises(client.exceptions.ValidationException) as alternation:
        client.converse(modelId=CLAUDE, messages=[*HELLO, *HELLO])
    assert "alternate" in alternation.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ValidationException) as tools:
        client.converse(
            modelId=CLAUDE,
            messages=[
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}}],
                },
            ],
        )
    assert "toolConfig" in tools.value.response["Error"]["Message"]


@pytest.mark.parametrize(("key", "secret"), [("AKIAOTHERKEY00000001", SECRET), (AKID, "wrong-secret")])
def test_bad_credentials_are_rejected(fake: FakeBedrock, key: str, secret: str) -> None:
    sdk = make_client(fake, secret=secret, key=key)
    try:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sdk.converse(modelId=CLAUDE, messages=HELLO)
    finally:
        sdk.close()
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_cut_stream_raises(fake: FakeBedrock, client: Any) -> None:
    fake.add_fault(Fault(cut_after=2))
    stream = client.converse_stream(modelId=CLAUDE, messages=HELLO)["stream"]
    seen: list[str] = []
    # urllib3 reports the truncated chunked body; newer botocore wraps it as ResponseStreamingError
    with pytest.raises((urllib3.exceptions.ProtocolError, botocore.exceptions.ResponseStreamingError)):
        try:
            for event in stream:
                seen.append(next(iter(event)))
        finally:
            stream.close()
    assert seen == ["messageStart", "contentBlockDelta", "contentBlockDelta"]


def test_malformed_frame_fails_its_checksum(fake: FakeBedrock, client: Any) -> None:
    fake.add_fault(Fault(malformed_at=1))
    with pytest.raises(ChecksumMismatch):
        stream_events(client, messages=HELLO)


@pytest.mark.parametrize(
    "exception", ["modelStreamErrorException", "throttlingException", "serviceUnavailableException"]
)
def test_in_band_exception_event(fake: FakeBedrock, client: Any, exception: str) -> None:
    fake.stream_exception = exception
    fake.add_fault(Fault(error_event_at=1))
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        stream_events(client, messages=HELLO)
    assert info.value.response["Error"]["Code"] == exception


def test_api_key_auth_is_checked(fake: FakeBedrock) -> None:
    """boto3 refuses Bearer auth over plain HTTP, so this request is built by hand."""
    import urllib.error
    import urllib.request

    keyed = FakeBedrock(models=[CLAUDE], api_key="bedrock-key-1")
    body = json.dumps({"messages": HELLO}).encode()
    with keyed.run_in_thread():
        for token, status in (("bedrock-key-1", 200), ("other", 403)):
            request = urllib.request.Request(
                f"{keyed.url}/model/{CLAUDE.replace(':', '%3A')}/converse",
                data=body,
                method="POST",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    assert resp.status == status
                    assert json.loads(resp.read())["output"]["message"]["content"][0]["text"].startswith(
                        "Fake reply"
                    )
            except urllib.error.HTTPError as exc:
                assert exc.code == status
                assert exc.headers["x-amzn-ErrorType"].startswith("UnrecognizedClientException")
                exc.close()


def test_image_bytes_are_validated(client: Any, fake: FakeBedrock) -> None:
    result = client.converse(
        modelId=CLAUDE,
        messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": PNG}}}]}],
    )
    assert result["output"]["message"]["content"][0]["text"] == "Fake reply to:  (1 image)"
    sent = fake.requests[-1].json["messages"][0]["content"][0]["image"]["source"]["bytes"]
    assert base64.b64decode(sent) == PNG  # boto3 base64-encodes blob members in JSON


# -- InvokeModel / InvokeModelWithResponseStream: Claude's Messages body -----------------------------

MESSAGES_BODY: Any = {
    "anthropic_version": "bedrock-2023-05-31",
    "anthropic_beta": ["interleaved-thinking-2025-05-14"],
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Hello there"}],
}


def claude_events(client: Any, body: Any, model: str = CLAUDE) -> list[dict[str, Any]]:
    """Every Anthropic event of one InvokeModelWithResponseStream, decoded as the SDK hands them over."""
    stream = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))["body"]
    try:
        return [json.loads(event["chunk"]["bytes"]) for event in stream]
    finally:
        stream.close()


def test_invoke_claude_messages(fake: FakeBedrock, client: Any) -> None:
    fake.claude.cache_read_tokens = 7
    result = client.invoke_model(modelId=CLAUDE, body=json.dumps(MESSAGES_BODY))
    answer = json.loads(result["body"].read())
    assert answer["type"] == "message" and answer["role"] == "assistant" and answer["model"] == CLAUDE
    assert answer["content"] == [{"type": "text", "text": "Fake reply to: Hello there"}]
    assert answer["stop_reason"] == "end_turn"
    assert answer["usage"]["cache_read_input_tokens"] == 7 and answer["usage"]["output_tokens"] > 0
    assert result["contentType"] == "application/json"
    sent = fake.requests[-1]
    assert sent.path == f"/model/{CLAUDE}/invoke" and sent.json == MESSAGES_BODY


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"anthropic_version": "vertex-2023-10-16"}, "anthropic_version"),
        ({"model": CLAUDE}, "extraneous key [model]"),
        ({"stream": True}, "extraneous key [stream]"),
        ({"anthropic_beta": "context-1m-2025-08-07"}, "anthropic_beta"),
        ({"max_tokens": None}, "max_tokens"),
    ],
)
def test_invoke_claude_refuses_what_bedrock_refuses(client: Any, change: dict[str, Any], message: str) -> None:
    body = {k: v for k, v in {**MESSAGES_BODY, **change}.items() if v is not None}
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.invoke_model(modelId=CLAUDE, body=json.dumps(body))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert message in info.value.response["Error"]["Message"]


def test_invoke_stream_claude_event_sequence(fake: FakeBedrock, client: Any) -> None:
    fake.claude.thinking = "first this then that"
    events = claude_events(client, MESSAGES_BODY)
    types = [e["type"] for e in events]
    assert types[:2] == ["message_start", "ping"] and types[-2:] == ["message_delta", "message_stop"]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert {"type": "signature_delta", "signature": "c2lnbmF0dXJl"} in deltas
    assert "".join(d.get("text", "") for d in deltas) == "Fake reply to: Hello there"
    assert events[0]["message"]["model"] == CLAUDE
    assert fake.requests[-1].path == f"/model/{CLAUDE}/invoke-with-response-stream"


def test_invoke_stream_claude_faults(fake: FakeBedrock, client: Any) -> None:
    fake.stream_exception = "throttlingException"
    fake.add_fault(Fault(error_event_at=1))
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        claude_events(client, MESSAGES_BODY)
    assert info.value.response["Error"]["Code"] == "throttlingException"
    fake.add_fault(Fault(malformed_at=0))
    with pytest.raises(ChecksumMismatch):
        claude_events(client, MESSAGES_BODY)
    fake.add_fault(Fault(cut_after=2))
    seen: list[str] = []
    stream = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(MESSAGES_BODY))["body"]
    with pytest.raises((urllib3.exceptions.ProtocolError, botocore.exceptions.ResponseStreamingError)):
        try:
            for event in stream:
                seen.append(json.loads(event["chunk"]["bytes"])["type"])
        finally:
            stream.close()
    assert seen == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta"]


def test_count_tokens_of_a_claude_body(fake: FakeBedrock, client: Any) -> None:
    short = client.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": json.dumps(MESSAGES_BODY)}})
    longer_body = {**MESSAGES_BODY, "messages": [{"role": "user", "content": "Hello there " * 40}]}
    longer = client.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": json.dumps(longer_body)}})
    assert longer["inputTokens"] > short["inputTokens"] > 0
    sent = fake.requests[-1]
    assert sent.path == f"/model/{CLAUDE}/count-tokens"
    assert json.loads(base64.b64decode(sent.json["input"]["invokeModel"]["body"])) == longer_body
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": json.dumps({"messages": []})}})
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_usage_knob_reaches_converse_and_the_stream_metadata(fake: FakeBedrock, client: Any) -> None:
    fake.usage = {"inputTokens": 500, "cacheReadInputTokens": 6000, "cacheWriteInputTokens": 2000,
                  "outputTokens": 300, "totalTokens": 8800}
    plain = client.converse(modelId=CLAUDE, messages=HELLO)["usage"]
    metadata = [e["metadata"] for e in stream_events(client, messages=HELLO) if "metadata" in e]
    assert plain == metadata[0]["usage"] == fake.usage
