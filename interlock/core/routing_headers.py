"""The ``x-interlock-*`` response headers: where a request went and what it cost, on every door.

Every answer, successful or not and whichever protocol the client speaks, says how
many attempts it took (``x-interlock-attempts``), and once a target answered which
one (``x-interlock-provider``, ``x-interlock-model``) and whether that was a
fallback (``x-interlock-fallback``). The route, the rule that chose it and a compact
summary of every attempt follow when there are any; the cost (and a fallback's cost
delta) once the request is priced. Values a client influenced (rule reasons, model
names) are made header-safe: printable ASCII, at most 1 KiB (256 characters for a model
or route name; the doors refuse longer names and control characters up front).
"""

from __future__ import annotations

from decimal import Decimal

from interlock.core.types import Attempt, Decision, Target

_USD_STEP = Decimal("0.0000000001")


def routing_headers(decision: Decision, attempt: Attempt | None, target: Target | None) -> dict[str, str]:
    """The routing headers of ``decision``; ``attempt``/``target`` are the answer's, None on failure."""
    headers = {"x-interlock-attempts": str(len(decision.attempts))}
    if attempt is not None and target is not None:
        headers["x-interlock-provider"] = target.provider
        headers["x-interlock-model"] = header_safe(target.model, 256)
        headers["x-interlock-fallback"] = "true" if decision.fallback_used else "false"
    if decision.route:
        headers["x-interlock-route"] = header_safe(decision.route, 256)
    if decision.rule:
        headers["x-interlock-rule"] = header_safe(decision.rule)
    if decision.attempts:
        # a compact summary of every attempt: target=outcome[:what the router did next]
        summary = ", ".join([_summary(a) for a in decision.attempts])
        headers["x-interlock-decision"] = header_safe(summary)
    return headers


def cost_headers(decision: Decision) -> dict[str, str]:
    """``x-interlock-cost-usd`` (and the fallback's ``x-interlock-cost-delta-usd``) once priced."""
    headers = {}
    if decision.cost_usd is not None:
        headers["x-interlock-cost-usd"] = usd(decision.cost_usd)
    if decision.cost_delta_usd is not None:
        headers["x-interlock-cost-delta-usd"] = usd(decision.cost_delta_usd)
    return headers


def cost_comment(decision: Decision) -> bytes:
    """The cost headers as SSE comments (``: x-interlock-cost-usd=...``), what ends a stream that succeeded:
    a stream's headers leave before its cost is known, and clients ignore comments."""
    if decision.cost_usd is None:
        return b""
    text = f": x-interlock-cost-usd={usd(decision.cost_usd)}\n\n"
    if decision.cost_delta_usd is not None:
        text += f": x-interlock-cost-delta-usd={usd(decision.cost_delta_usd)}\n\n"
    return text.encode()


def usd(value: Decimal) -> str:
    """Dollars as plain decimal text, to 1e-10 and without trailing zeros (``0.00012``)."""
    return f"{value.quantize(_USD_STEP).normalize():f}"


def header_safe(value: str, limit: int = 1024) -> str:
    """``value`` as printable ASCII (anything else becomes ``?``), cut to ``limit`` characters."""
    if not (value.isascii() and value.isprintable()):
        value = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _summary(a: Attempt) -> str:
    return f"{a.provider}/{a.model}={a.outcome}:{a.action}" if a.action else f"{a.provider}/{a.model}={a.outcome}"
