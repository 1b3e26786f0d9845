"""What the Responses door needs from wherever stored responses are kept.

The OpenAI Responses API stores each response by default (``store``), so a client
can continue a conversation by naming the last response (``previous_response_id``)
and read or delete it later (``GET``/``DELETE /v1/responses/{id}``). The door
depends only on :class:`ResponseStore`; the assembly supplies the implementation
(the SQL one shares the ledger's database) or none when storing is switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class StoredResponse:
    """One stored response and the conversation that led to it."""

    id: str  # the response's id ("resp_..."), what the client chains with
    created_at: float  # unix time
    team: str | None  # the gateway key's team that created it: only that team may use it
    api_key_id: str | None
    request_id: str  # the ledger's requests.id
    model: str  # the model the client asked for
    #: every input item of the conversation up to this turn, previous turns' inputs and
    #: outputs included, in Responses item shape: a chain is rebuilt from this one record
    input: list[dict[str, Any]]
    response: dict[str, Any]  # the response object the client received (its ``output`` included)


class ResponseStore(Protocol):
    """Stored responses, scoped by team."""

    def put(self, stored: StoredResponse) -> None:
        """Keep ``stored``: visible to :meth:`get` at once, written to the database off the request path."""
        ...

    async def get(self, response_id: str, team: str | None) -> StoredResponse | None:
        """The stored response ``response_id`` if it exists, has not expired and belongs to ``team``."""
        ...

    async def delete(self, response_id: str, team: str | None) -> bool:
        """Delete it (True) if it exists and belongs to ``team`` (False otherwise)."""
        ...
