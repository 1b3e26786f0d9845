"""What ``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items`` answer.

The HTTP glue (:mod:`interlock.core.app`) authenticates the caller and hands these
functions the gateway's :class:`~interlock.core.doors.stored_responses.ResponseStore`
(None when ``[responses] store = false``) and the caller's team. Wire facts are from the
official ``openai`` SDK (``resources/responses/responses.py``, ``input_items.py``,
``types/responses/response_item_list.py``):

* ``responses.retrieve(id)`` is ``GET /responses/{id}`` and parses a ``Response``: the
  stored response object is returned as it was sent;
* ``responses.delete(id)`` is ``DELETE /responses/{id}`` and reads no body (``cast_to=NoneType``);
* ``responses.input_items.list(id, after=, limit=, order=)`` is ``GET
  /responses/{id}/input_items`` and pages a list object (``data``, ``first_id``, ``last_id``,
  ``has_more``) by the last item's ``id``: 1 to 100 items, 20 by default, newest first
  (``order=desc``) unless ``asc`` is asked.

A response that does not exist, has expired or belongs to another team is the same 404
(``response_not_found``): a caller never learns that another team's id exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interlock.core.doors.stored_responses import ResponseStore, StoredResponse
from interlock.core.errors import GatewayError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def not_found(response_id: str) -> GatewayError:
    """The 404 OpenAI answers for an unknown response id."""
    return GatewayError(404, f"No response found with id '{response_id}'", code="response_not_found")


def storage_off(response_id: str) -> GatewayError:
    """The error for a stored-response request on a gateway that stores none (``[responses] store = false``)."""
    return GatewayError(
        400, f"this gateway does not store responses ([responses] store = false), so response '{response_id}' "
        "cannot be read, deleted or continued; send the whole conversation as input instead",
        code="response_storage_disabled",
    )


async def _find(store: ResponseStore | None, response_id: str, team: str | None) -> StoredResponse:
    if store is None:
        raise storage_off(response_id)
    stored = await store.get(response_id, team)
    if stored is None:
        raise not_found(response_id)
    return stored


async def retrieve(store: ResponseStore | None, response_id: str, team: str | None,
                   query: Mapping[str, str]) -> dict[str, Any]:
    """The stored response object (``GET /v1/responses/{id}``)."""
    if query.get("stream", "false").lower() == "true":
        # replaying a finished response as events is not implemented: say so rather than send JSON to an SSE reader
        raise GatewayError(400, "this gateway cannot stream a stored response; retrieve it without stream=true",
                           code="unsupported_parameter", param="stream")
    return (await _find(store, response_id, team)).response


async def delete(store: ResponseStore | None, response_id: str, team: str | None) -> dict[str, Any]:
    """Delete it (``DELETE /v1/responses/{id}``); the body is the SDK's deleted-resource shape, which it does not read."""
    if store is None:
        raise storage_off(response_id)
    if not await store.delete(response_id, team):
        raise not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


async def input_items(store: ResponseStore | None, response_id: str, team: str | None,
                      query: Mapping[str, str]) -> dict[str, Any]:
    """One page of the response's input items (``GET /v1/responses/{id}/input_items``)."""
    limit, order, after = _page_params(query)
    stored = await _find(store, response_id, team)
    items = [item_with_id(item, response_id, i) for i, item in enumerate(stored.input)]
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise GatewayError(400, f"no input item with id '{after}' in response '{response_id}'",
                               code="invalid_value", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}


def _page_params(query: Mapping[str, str]) -> tuple[int, str, str | None]:
    raw = query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise GatewayError(400, f"limit must be an integer from 1 to {MAX_LIMIT}, not {raw!r}",
                           code="invalid_value", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(400, f"order must be 'asc' or 'desc', not {order!r}", code="invalid_value", param="order")
    return limit, order, query.get("after") or None


def item_with_id(item: Any, response_id: str, index: int) -> dict[str, Any]:
    """``item`` as the list returns it: with an ``id`` (the SDK pages by it) and messages in item form.

    A client's input may be shorthand (``{"role": "user", "content": "hi"}``, no id);
    the list answers message items (``type: message``, content parts), and an item
    without an id gets one derived from the response id and its position, the same on
    every read.
    """
    out: dict[str, Any] = dict(item) if isinstance(item, Mapping) else {"type": "message", "role": "user", "content": item}
    if "role" in out and "type" not in out:
        out["type"] = "message"
    if out.get("type") == "message" and isinstance(out.get("content"), str):
        part = "output_text" if out.get("role") == "assistant" else "input_text"
        out["content"] = [{"type": part, "text": out["content"]}]
    if not isinstance(out.get("id"), str) or not out["id"]:
        out["id"] = f"item_{response_id.removeprefix('resp_')}_{index}"
    return out
