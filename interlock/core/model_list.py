"""What ``GET /v1/models`` lists, and how it is written for OpenAI and Anthropic clients.

Everything a client can name, worked out from the configuration alone (never an upstream
call on the request path):

1. every route (``[routes.smart]``), owned by ``interlock``;
2. every model a provider instance lists in its ``models`` setting;
3. for a provider instance without a ``models`` setting (one enabled by an environment key
   alone, typically), the models the gateway knows for its type: the names the price table
   lists for that type, handed in by the assembly as ``(provider type, model)`` pairs.

A provider's model is listed under its bare name when auto-detection sends that name to this
very instance (``gpt-4o`` with an ``openai`` instance), and as ``instance/model`` otherwise
(a second instance of the same type, a name a route shadows, a type auto-detection does not
cover). Either spelling finds it in :meth:`ModelList.find`, which is what
``GET /v1/models/{id}`` answers from.

A request that carries an ``anthropic-version`` header (what the Anthropic SDKs send) gets
Anthropic's shapes: ``ModelInfo`` objects in a page with ``has_more``, ``first_id`` and
``last_id``, paged by ``limit``, ``after_id`` and ``before_id``, and Anthropic's error
body. Everyone else gets OpenAI's ``{"object": "list", "data": [Model, ...]}``.

A list is built once per configuration (:func:`model_list` keeps one per resolver) and is
then only read.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.core.errors import GatewayError
from interlock.core.resolve import Resolver, Unresolved

#: the release date the lists give: unknown, which Anthropic's ModelInfo spells as the epoch
UNKNOWN_CREATED = 0
UNKNOWN_CREATED_AT = "1970-01-01T00:00:00Z"

#: Anthropic's page size: 20 by default, 1 to 1000
_ANTHROPIC_DEFAULT_LIMIT = 20
_ANTHROPIC_MAX_LIMIT = 1000

@dataclass(frozen=True, slots=True)
class ListedModel:
    """One entry: the id a client sends, who serves it, and (for routes) the targets."""

    id: str
    owned_by: str
    targets: tuple[str, ...] = ()
    strategy: str | None = None

    def openai(self) -> dict[str, Any]:
        """OpenAI's ``Model`` (``id``, ``object``, ``created``, ``owned_by``); routes add their targets."""
        out: dict[str, Any] = {"id": self.id, "object": "model", "created": UNKNOWN_CREATED,
                               "owned_by": self.owned_by}
        if self.strategy is not None:
            out["targets"] = list(self.targets)
            out["strategy"] = self.strategy
        return out

    def anthropic(self) -> dict[str, Any]:
        """Anthropic's ``ModelInfo`` (``type``, ``id``, ``display_name``, ``created_at``, ``lifecycle``)."""
        return {"type": "model", "id": self.id, "display_name": self.id, "created_at": UNKNOWN_CREATED_AT,
                "lifecycle": "active"}


@dataclass
class ModelList:
    """The listed models of one configuration, in order, and every spelling that finds one."""

    entries: list[ListedModel] = field(default_factory=list)
    _by_name: dict[str, ListedModel] = field(default_factory=dict)

    def add(self, entry: ListedModel, *aliases: str) -> None:
        if entry.id in self._by_name:
            return
        self.entries.append(entry)
        self._by_name[entry.id] = entry
        for alias in aliases:
            self._by_name.setdefault(alias, entry)

    def find(self, name: str) -> ListedModel | None:
        """The entry listed as ``name``, or whose other spelling (``instance/model``) ``name`` is."""
        return self._by_name.get(name)


def build(resolver: Resolver, known: Iterable[tuple[str, str]]) -> ModelList:
    """The list for a configuration: its routes, configured models, and ``known`` models by provider type."""
    out = ModelList()
    for name, route in resolver.routes.items():
        out.add(ListedModel(name, "interlock", tuple(t.key for t in route.targets), route.strategy))
    by_type: dict[str, list[str]] = {}
    for ptype, model in known:
        by_type.setdefault(ptype, []).append(model)
    for instance, provider in resolver.providers.items():
        models = provider.settings.models or by_type.get(provider.type_name, [])
        for model in models:
            qualified = f"{instance}/{model}"
            if _bare_name_reaches(resolver, model, instance):
                out.add(ListedModel(model, instance), qualified)
            else:
                out.add(ListedModel(qualified, instance))
    return out


def _bare_name_reaches(resolver: Resolver, model: str, instance: str) -> bool:
    """Whether a client sending just ``model`` is routed to ``model`` on ``instance``."""
    if model in resolver.routes or "/" in model:
        return False
    try:
        target = resolver.resolve_target(model)
    except Unresolved:
        return False
    return target.provider == instance and target.model == model


_LISTS: weakref.WeakKeyDictionary[Resolver, ModelList] = weakref.WeakKeyDictionary()


def model_list(resolver: Resolver, known: Callable[[], Iterable[tuple[str, str]]]) -> ModelList:
    """The list for ``resolver``'s configuration, built on first use (a reload brings a new resolver)."""
    found = _LISTS.get(resolver)
    if found is None:
        found = _LISTS[resolver] = build(resolver, known())
    return found


# --------------------------------------------------------------------------- #
# the two protocols' shapes
# --------------------------------------------------------------------------- #


def wants_anthropic(headers: Mapping[str, str]) -> bool:
    """An Anthropic client: its SDKs send ``anthropic-version`` on every request."""
    return "anthropic-version" in headers


def list_body(
    models: ModelList, query: Mapping[str, str], anthropic: bool, lifecycle: Sequence[str] = ()
) -> dict[str, Any]:
    """The body of ``GET /v1/models``: OpenAI's list, or one page of Anthropic's.

    ``query`` holds Anthropic's ``limit``, ``after_id`` and ``before_id``; ``lifecycle`` the
    stages it asks for (every listed model is ``active``).
    """
    if not anthropic:
        return {"object": "list", "data": [m.openai() for m in models.entries]}
    entries = models.entries if not lifecycle or "active" in lifecycle else []
    page, has_more = _anthropic_page(entries, query)
    data = [m.anthropic() for m in page]
    return {"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def _anthropic_page(entries: list[ListedModel], query: Mapping[str, str]) -> tuple[list[ListedModel], bool]:
    """``limit`` entries after ``after_id`` (or the ``limit`` just before ``before_id``), and whether more lie
    beyond them in that direction."""
    raw = query.get("limit")
    try:
        limit = _ANTHROPIC_DEFAULT_LIMIT if raw is None else int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _ANTHROPIC_MAX_LIMIT:
        raise GatewayError(400, f"limit must be a whole number from 1 to {_ANTHROPIC_MAX_LIMIT}",
                           param="limit")
    ids = [m.id for m in entries]
    before, after = query.get("before_id"), query.get("after_id")
    if before is not None:
        end = _position(ids, before, "before_id")
        start = max(0, end - limit)
        return entries[start:end], start > 0
    start = _position(ids, after, "after_id") + 1 if after is not None else 0
    return entries[start:start + limit], start + limit < len(entries)


def _position(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise GatewayError(400, f"{param} {cursor!r} is not a listed model", param=param) from None


def model_body(models: ModelList, name: str, anthropic: bool) -> dict[str, Any]:
    """The body of ``GET /v1/models/{name}``; a 404 :class:`GatewayError` when nothing is listed as ``name``."""
    entry = models.find(name)
    if entry is None:
        message = f"model {name!r} is not listed by this gateway (GET /v1/models lists what is)"
        raise GatewayError(404, message, code="model_not_found", param="model")
    body = entry.anthropic() if anthropic else entry.openai()
    body["id"] = name  # the spelling asked for (instance/model of a model listed by its bare name)
    if anthropic:
        body["display_name"] = name
    return body
