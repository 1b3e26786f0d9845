"""Per-route routing behaviour: retries, timeouts, latency thresholds, hedging, continuation.

Every key is optional; the defaults are what a production gateway should do
without being told. Per-target keys (``timeout``, ``latency_threshold``,
``context_window``) go on a target table and override the route's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

CONTENT_POLICY_ACTIONS = ("fail", "fallback")
_FLOAT_KEYS = frozenset(
    {"backoff", "backoff_max", "max_retry_wait", "timeout", "latency_threshold", "total_timeout", "hedge_delay",
     "hedge_percentile"}
)


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """The routing keys of a ``[routes.NAME]`` table."""

    retries: int = 0  # extra tries of the same target for transient failures, per request
    max_attempts: int = 8  # attempts of every kind, per request
    backoff: float = 0.2  # first retry waits up to this (full jitter), doubling each time
    backoff_max: float = 5.0
    max_retry_wait: float = 10.0  # a Retry-After longer than this falls back instead of waiting
    timeout: float | None = None  # seconds per attempt (default: the provider's timeout)
    latency_threshold: float | None = None  # seconds to the response (stream: to the first token)
    total_timeout: float | None = None  # seconds for the whole request, all attempts included
    on_content_policy: str = "fail"  # or "fallback": try the next target after a refusal
    hedge_delay: float | None = None  # start the next target too after this many seconds...
    hedge_percentile: float | None = None  # ...or after this percentile of the target's observed TTFT
    hedge_tools: bool = False  # hedge requests that carry tools (side effects may run twice)
    continue_stream: bool = False  # after a mid-stream failure, continue from the next target
    strategy_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """Per-target overrides on a ``targets`` table."""

    timeout: float | None = None
    latency_threshold: float | None = None
    context_window: int | None = None  # tokens; context-length failures skip targets no larger


TARGET_KEYS = ("model", "weight", "timeout", "latency_threshold", "context_window")


def _number(value: Any, *, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def parse_route_settings(table: Mapping[str, Any], path: str, problems: list[tuple[str, str]]) -> RouteSettings:
    """The routing keys of a route table; problems are reported with key paths."""
    values: dict[str, Any] = {}
    for key in RouteSettings.keys():
        if key not in table:
            continue
        value, kpath = table[key], f"{path}.{key}"
        if key in ("retries", "max_attempts"):
            if not _number(value, integer=True) or value < (0 if key == "retries" else 1):
                problems.append((kpath, "must be a whole number" + (" >= 0" if key == "retries" else " >= 1")))
                continue
        elif key in ("hedge_tools", "continue_stream"):
            if not isinstance(value, bool):
                problems.append((kpath, "must be true or false"))
                continue
        elif key == "on_content_policy":
            if value not in CONTENT_POLICY_ACTIONS:
                problems.append((kpath, f"must be one of {', '.join(CONTENT_POLICY_ACTIONS)}"))
                continue
        elif key == "strategy_options":
            if not isinstance(value, dict):
                problems.append((kpath, "must be a table"))
                continue
        elif key == "hedge_percentile":
            if not _number(value) or not 0 < value < 100:
                problems.append((kpath, "must be a percentile between 0 and 100 (e.g. 90)"))
                continue
        elif not _number(value) or value <= 0:
            problems.append((kpath, "must be a positive number of seconds"))
            continue
        values[key] = float(value) if key in _FLOAT_KEYS else value
    if "hedge_delay" in values and "hedge_percentile" in values:
        problems.append((f"{path}.hedge_delay", "set hedge_delay or hedge_percentile, not both"))
    return RouteSettings(**values)


def parse_target_settings(table: Mapping[str, Any], path: str, problems: list[tuple[str, str]]) -> TargetSettings:
    values: dict[str, Any] = {}
    for key in ("timeout", "latency_threshold"):
        if key in table:
            if not _number(table[key]) or table[key] <= 0:
                problems.append((f"{path}.{key}", "must be a positive number of seconds"))
            else:
                values[key] = float(table[key])
    if "context_window" in table:
        if not _number(table["context_window"], integer=True) or table["context_window"] < 1:
            problems.append((f"{path}.context_window", "must be a positive whole number of tokens"))
        else:
            values["context_window"] = table["context_window"]
    return TargetSettings(**values)


@dataclass(slots=True)
class RouteSpec:
    """A ``[routes.NAME]`` table before its elements are resolved."""

    name: str
    elements: list[tuple[str, float, TargetSettings]]  # (model reference, weight, overrides) in written order
    strategy: str
    settings: RouteSettings = field(default_factory=RouteSettings)
    key: str = ""  # "chain" or "targets": where the elements came from, for error paths
