"""The built-in failure classifier: class and action per failure, and Retry-After parsing."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from interlock.core.failures import classify, failure_class, parse_retry_after
from interlock.core.plugins import make_plugin_manager
from interlock.core.types import Action, Classification, FailureClass, Target, UpstreamError

F, A = FailureClass, Action


def http(status: int, message: str = "boom", **kwargs: Any) -> UpstreamError:
    return UpstreamError(message, kind="http", status=status, **kwargs)


@pytest.mark.parametrize(
    ("error", "cls", "action"),
    [
        (http(429), F.RATE_LIMITED, A.FALLBACK),
        (http(429, code="rate_limit_exceeded", error_type="rate_limit_error"), F.RATE_LIMITED, A.FALLBACK),
        (http(429, code="insufficient_quota", error_type="insufficient_quota"), F.QUOTA, A.FALLBACK),
        (http(429, code="insufficient_quota"), F.QUOTA, A.FALLBACK),
        (http(429, error_type="insufficient_quota"), F.QUOTA, A.FALLBACK),
        (http(402, "Insufficient Balance"), F.QUOTA, A.FALLBACK),
        (http(401, code="invalid_api_key"), F.AUTH, A.FALLBACK),
        (http(403, code="permission_denied"), F.AUTH, A.FALLBACK),
        (http(404, code="model_not_found"), F.NOT_FOUND, A.FALLBACK),
        (http(400, "Invalid value for 'temperature'"), F.BAD_REQUEST, A.FAIL),
        (http(422, "Unprocessable entity"), F.BAD_REQUEST, A.FAIL),
        (http(400, "too long", code="context_length_exceeded"), F.CONTEXT_LENGTH, A.FALLBACK),
        (
            http(
                400,
                "This model's maximum context length is 4097 tokens. However, your messages resulted in 5000 tokens.",
            ),
            F.CONTEXT_LENGTH,
            A.FALLBACK,
        ),
        (http(400, "prompt is too long: 208310 tokens > 200000 maximum"), F.CONTEXT_LENGTH, A.FALLBACK),
        (http(413, "input is too long for requested model"), F.CONTEXT_LENGTH, A.FALLBACK),
        (http(400, "flagged", code="content_filter"), F.CONTENT_POLICY, A.FAIL),
        (http(400, "flagged", code="content_policy_violation"), F.CONTENT_POLICY, A.FAIL),
        (http(400, "flagged", error_type="content_filter"), F.CONTENT_POLICY, A.FAIL),
        (http(500), F.SERVER_ERROR, A.RETRY),
        (http(502, code="bad_gateway"), F.SERVER_ERROR, A.RETRY),
        (http(500, code="service_unavailable"), F.OVERLOADED, A.FALLBACK),
        (http(503, code="overloaded"), F.OVERLOADED, A.FALLBACK),
        (http(503), F.OVERLOADED, A.FALLBACK),
        (http(529, error_type="overloaded_error"), F.OVERLOADED, A.FALLBACK),
        (http(529), F.OVERLOADED, A.FALLBACK),
        (http(504, code="timeout"), F.TIMEOUT, A.FALLBACK),
        (http(408), F.TIMEOUT, A.FALLBACK),
        (UpstreamError("timed out", kind="timeout"), F.TIMEOUT, A.FALLBACK),
        (UpstreamError("refused", kind="connection"), F.CONNECTION, A.RETRY),
        (UpstreamError("cut", kind="stream"), F.STREAM_ERROR, A.RETRY),
        (UpstreamError("in-band", kind="stream", status=429), F.RATE_LIMITED, A.FALLBACK),
        (UpstreamError("in-band", kind="stream", error_type="rate_limit_error"), F.RATE_LIMITED, A.FALLBACK),
        (UpstreamError("in-band", kind="stream", error_type="overloaded_error"), F.OVERLOADED, A.FALLBACK),
        (UpstreamError("in-band", kind="stream", code="content_filter"), F.CONTENT_POLICY, A.FAIL),
        (UpstreamError("plugin raised", kind="internal"), F.UNKNOWN, A.FALLBACK),
        (UpstreamError("weird", kind="http", status=None), F.UNKNOWN, A.FALLBACK),
        (http(302), F.UNKNOWN, A.FALLBACK),
    ],
    ids=lambda v: v.message if isinstance(v, UpstreamError) else str(v.value),
)
def test_failure_class_and_action(error: UpstreamError, cls: FailureClass, action: Action) -> None:
    assert failure_class(error) is cls
    verdict = classify(error)
    assert (verdict.failure_class, verdict.action) == (cls, action)
    assert verdict.retry_after is None


def test_timeout_and_connection_kinds_win_over_status() -> None:
    assert failure_class(UpstreamError("x", kind="timeout", status=400)) is F.TIMEOUT
    assert failure_class(UpstreamError("x", kind="connection", status=429)) is F.CONNECTION


def test_context_length_wins_over_status() -> None:
    err = http(500, "Request exceeds the maximum number of tokens for this model")
    assert failure_class(err) is F.CONTEXT_LENGTH


def test_classify_carries_retry_after() -> None:
    verdict = classify(http(429, headers={"Retry-After": "7"}))
    assert verdict == Classification(F.RATE_LIMITED, A.FALLBACK, 7.0)


def test_classifier_is_the_classify_failure_hook() -> None:
    pm = make_plugin_manager(load_entrypoints=False, environ={})
    verdict = pm.hook.classify_failure(error=http(503), target=Target("p", "m"), provider_type="openai")
    assert verdict.failure_class is F.OVERLOADED and verdict.action is A.FALLBACK


# --------------------------------------------------------------------------- #
# Retry-After
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"RETRY-AFTER": "12"}, 12.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # milliseconds are more precise
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # a bad ms value falls back to seconds
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "Wed, 99 Foo 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    seconds = parse_retry_after({"Retry-After": when})
    assert seconds is not None
    assert 60 < seconds <= 121
