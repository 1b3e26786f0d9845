"""Failure classification: every upstream failure becomes a class and an action.

Actions: ``retry`` the same target while the route's retry budget lasts (then
fall back), ``fallback`` to the next target, or ``fail`` fast because the
request itself is at fault and another provider would reject it too.

:func:`classify` is the generic answer (the built-in ``classify_failure`` plugin
returns it). A provider that knows its own failures better answers first in
:meth:`Provider.classify <interlock.core.provider.Provider.classify>` and builds
on the same pieces: :func:`failure_class`, the default :data:`ACTIONS` per class
and :func:`parse_retry_after`.
"""

from __future__ import annotations

import email.utils
import re
import time

from interlock.core.types import Action, Classification, FailureClass, UpstreamError

F, A = FailureClass, Action

_CONTEXT = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|input is too long"
    r"|exceeds the maximum number of tokens|input tokens exceed",
    re.IGNORECASE,
)
_POLICY_CODES = {"content_filter", "content_policy_violation", "content_policy", "moderation"}
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "insufficient_balance"}
_OVERLOADED = re.compile(r"overload|capacity|unavailable", re.IGNORECASE)

#: default action per class
ACTIONS: dict[FailureClass, Action] = {
    F.RATE_LIMITED: A.FALLBACK,
    F.QUOTA: A.FALLBACK,
    F.OVERLOADED: A.FALLBACK,
    F.SERVER_ERROR: A.RETRY,
    F.TIMEOUT: A.FALLBACK,
    F.CONNECTION: A.RETRY,
    F.STREAM_ERROR: A.RETRY,
    F.AUTH: A.FALLBACK,  # this instance's key is bad; another provider may be fine
    F.NOT_FOUND: A.FALLBACK,  # this provider does not serve the model
    F.CONTEXT_LENGTH: A.FALLBACK,  # a target with a larger window may take it
    F.CONTENT_POLICY: A.FAIL,
    F.BAD_REQUEST: A.FAIL,
    F.UNKNOWN: A.FALLBACK,
}


def parse_retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if (ms := lower.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def failure_class(error: UpstreamError) -> FailureClass:
    """The class of one failure, from its kind, status, code and message."""
    if error.kind == "timeout":
        return F.TIMEOUT
    if error.kind == "connection":
        return F.CONNECTION
    if error.kind == "internal":
        return F.UNKNOWN
    code = (error.code or "").lower()
    etype = (error.error_type or "").lower()
    text = error.message or ""
    if code in _POLICY_CODES or etype in _POLICY_CODES:
        return F.CONTENT_POLICY
    if code == "context_length_exceeded" or _CONTEXT.search(text):
        return F.CONTEXT_LENGTH
    if error.kind == "stream":
        if error.status == 429 or etype == "rate_limit_error":
            return F.RATE_LIMITED
        if etype == "overloaded_error":
            return F.OVERLOADED
        return F.STREAM_ERROR
    status = error.status or 0
    if status == 429:
        return F.QUOTA if code in _QUOTA_CODES or etype in _QUOTA_CODES else F.RATE_LIMITED
    if status == 402:
        return F.QUOTA
    if status in (401, 403):
        return F.AUTH
    if status == 404:
        return F.NOT_FOUND
    if status == 408:
        return F.TIMEOUT
    if status in (503, 529) or etype == "overloaded_error":
        return F.OVERLOADED
    if status == 504:
        return F.TIMEOUT
    if status >= 500:
        return F.OVERLOADED if _OVERLOADED.search(code) else F.SERVER_ERROR
    if 400 <= status < 500:
        return F.BAD_REQUEST
    return F.UNKNOWN


def classify(error: UpstreamError) -> Classification:
    """The generic verdict: :func:`failure_class`, its default action, and the upstream's retry hint."""
    return classify_as(failure_class(error), error)


def classify_as(failure: FailureClass, error: UpstreamError) -> Classification:
    """``failure`` with its default action and ``error``'s retry hint: what a provider's own rule returns."""
    return Classification(failure, ACTIONS[failure], parse_retry_after(error.headers))
