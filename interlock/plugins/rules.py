"""Built-in content-based routing: the ``[[rules]]`` from config, first match wins.

Each rule (see :mod:`interlock.core.rules`) names a route and conditions on the
request; the first rule whose conditions all hold sends the request to its route,
and the decision records why (``rule 'long-context': prompt_tokens 41230 >= 32000``).
A third-party ``select_route`` implementation answers first (this one is
``trylast``); returning ``None`` from it leaves the decision to these rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from interlock import hookimpl
from interlock.core.rules import match_first
from interlock.core.types import RequestContext, Route, RouteChoice


@hookimpl(trylast=True)
def select_route(
    request: RequestContext, route: Route, routes: Mapping[str, Route], rules: Sequence[Any]
) -> RouteChoice | None:
    if not rules:
        return None
    found = match_first(rules, request)
    if found is None:
        return None
    rule, reason = found
    return RouteChoice(rule.route, f"rule {rule.name!r}: {reason}")
