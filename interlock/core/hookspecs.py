"""The plugin contract: every hook interlock calls, grouped by when it runs.

A plugin is any module or object with functions marked ``@hookimpl`` whose
names match the specs below. Built-in providers, strategies, the failure
classifier and the exporters are plugins of exactly this kind; third-party
packages add more through the ``interlock`` entry-point group::

    [project.entry-points.interlock]
    acme = "interlock_acme"

Rules that keep the hot path honest:

* Startup hooks receive a ``register`` callback and call it; the core owns the
  collections they fill.
* Per-request hooks are synchronous and pure. pluggy has no async support, and
  an ``async def`` implementation of a ``firstresult`` hook would silently win
  with a coroutine object. Async work belongs in the objects plugins register
  (a provider's ``chat``, an exporter's ``flush``).
* Implementations may accept any subset of a hook's arguments, so arguments are
  only ever added, never renamed.
* Built-in implementations of ``firstresult`` hooks are ``trylast``: any
  third-party plugin answers first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from interlock.core.catalog import PriceBook
    from interlock.core.exporter import Exporter
    from interlock.core.provider import Provider
    from interlock.core.strategy import Strategy
    from interlock.core.types import (
        Alert, Classification, Decision, RequestContext, Route, RouteChoice, Target, UpstreamError, Usage,
    )

PROJECT = "interlock"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- #
# Startup: registration. Called once while the app is built.
# --------------------------------------------------------------------------- #


@hookspec
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register provider types.

    Called once at startup. Call ``register(ProviderClass)`` for each provider
    type the plugin offers; ``ProviderClass.type_name`` is the name config uses
    in ``[providers.NAME] type = "..."``. A type name registered twice is a
    startup error naming both plugins.
    """


@hookspec
def register_strategies(register: Callable[[str, Callable[..., Strategy]], None]) -> None:
    """Register routing strategies.

    Called once at startup. Call ``register(name, factory)``; the factory is
    called as ``factory(route=..., options=...)`` once per route that uses the
    strategy, so per-route state (a round-robin cursor) lives in the instance.
    """


@hookspec
def register_exporters(register: Callable[[Exporter], None], settings: Mapping[str, Any]) -> None:
    """Register exporters: the objects that receive every finished decision.

    Called once at startup with the validated config as a plain mapping.
    Call ``register(exporter)`` for each exporter the configuration enables;
    the app awaits ``exporter.start()`` before serving and ``exporter.close()``
    on shutdown, and calls ``exporter.record(decision)`` after every request.
    """


# --------------------------------------------------------------------------- #
# Per request: resolution and strategy. Synchronous, pure, no I/O.
# --------------------------------------------------------------------------- #


@hookspec(firstresult=True)
def resolve_model(model: str, provider_types: Sequence[str]) -> str | None:
    """Detect which provider type serves a bare model name (``gpt-4o`` -> ``openai``).

    Called for a model name that is neither a route nor ``instance/model``.
    ``provider_types`` are the registered type names. Return a type name, or
    ``None`` to let the next plugin try. The built-in pattern table answers
    last. Stops at first non-None result.
    """


@hookspec(firstresult=True)
def select_strategy(route: Route, request: RequestContext) -> str | None:
    """Choose the strategy that orders ``route``'s targets for this request.

    Return a registered strategy name, or ``None`` to keep the route's
    configured strategy (the built-in answer). Stops at first non-None result.
    """


@hookspec(firstresult=True)
def select_route(
    request: RequestContext, route: Route, routes: Mapping[str, Route], rules: Sequence[Any]
) -> str | RouteChoice | None:
    """Send a request to a different route than the one its model named.

    Content-based routing lives here. ``rules`` are the ``[[rules]]`` from the
    config, in order (the built-in rules plugin evaluates them; other plugins
    may ignore them). Return a route name in ``routes``, a
    :class:`~interlock.core.types.RouteChoice` (route plus the reason recorded
    in the decision), or ``None`` to keep ``route``. Stops at first non-None result.
    """


# --------------------------------------------------------------------------- #
# Per attempt: failure classification and cost.
# --------------------------------------------------------------------------- #


@hookspec(firstresult=True)
def classify_failure(error: UpstreamError, target: Target, provider_type: str) -> Classification | None:
    """Turn a failed upstream attempt into a failure class and an action.

    ``error`` carries the HTTP status, headers and body, or the connection /
    timeout / stream failure. Return a :class:`~interlock.core.types.Classification`
    (retry the same target, fall back to the next, or fail fast), or ``None``
    to defer.

    Order: the failed provider's own
    :meth:`~interlock.core.provider.Provider.classify` answers first (it knows its
    upstream's native statuses and error names); this hook is asked only when that
    returns ``None``. Third-party implementations then answer in pluggy's order
    (``tryfirst`` ones first), then the built-in classifier, which is ``trylast`` and
    always answers (so a third-party ``trylast`` implementation is never reached). A
    plugin thus refines the generic rules but cannot override, or observe, a failure
    the provider classified itself (subclass the provider for that).
    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def compute_cost(
    usage: Usage, provider: str, provider_type: str, model: str, prices: PriceBook | None
) -> Decimal | None:
    """Price one attempt's usage in US dollars (a ``Decimal``, never a float).

    ``provider`` is the instance name, ``provider_type`` its type, ``model`` the
    name sent upstream. ``prices`` is the gateway's price table, a
    :class:`~interlock.core.catalog.PriceBook` (the built-in table with the
    config's ``[prices]`` on top; ``None`` outside a gateway); the built-in
    implementation answers from it, last. Return ``None`` when the plugin has
    no price for this model; the next plugin is asked. Also asked, with the
    request's prompt estimate as ``usage``, for the most an attempt cut off before
    it reported usage may have cost (``unreported_cost_max_usd``). Stops at first non-None result.
    """


# --------------------------------------------------------------------------- #
# After the request: decision recording.
# --------------------------------------------------------------------------- #


@hookspec
def record_decision(decision: Decision) -> None:
    """Observe a finished routing decision (every attempt, usage, outcome).

    Called once per client request after the response is complete, for light
    observers. Must not block: buffer and flush elsewhere. Exporters with a
    lifecycle (batching, connections) should use ``register_exporters``.
    """


@hookspec
def alert(alert: Alert) -> None:
    """Deliver a budget or spend-anomaly alert.

    Called for every alert the gateway raises (a soft budget threshold crossed,
    a hard budget reached, spend departing from its baseline). Alert exporters
    (a log line, a webhook, an OpenTelemetry event) implement it; like
    ``record_decision`` it must not block: queue the work and deliver it in a
    background task.
    """
