"""New stored responses are visible to another gateway process before they reach the database."""

from __future__ import annotations

from interlock.accounting.shared_responses import SharedResponses
from interlock.core.doors.stored_responses import StoredResponse
from interlock.core.store import MemoryStore
from interlock.testing.response_store import MemoryResponseStore


def response(rid: str, team: str | None) -> StoredResponse:
    return StoredResponse(rid, 1.0, team, "key_1", "req_1", "gpt-4o", [{"role": "user", "content": "hi"}],
                          {"id": rid, "object": "response", "output": []})


async def test_a_response_put_by_one_process_is_found_by_another() -> None:
    shared = MemoryStore()  # one Redis, in production
    first, second = SharedResponses(MemoryResponseStore(), shared), SharedResponses(MemoryResponseStore(), shared)
    first.put(response("resp_1", "search"))
    await first.close()  # (its write to the shared store is off the request path)
    found = await second.get("resp_1", "search")
    assert found is not None and found.input == [{"role": "user", "content": "hi"}] and found.model == "gpt-4o"
    assert await second.get("resp_1", "other-team") is None  # team-scoped, as in the database
    assert await second.delete("resp_1", "other-team") is False  # and another team cannot delete it
    assert await second.get("resp_2", "search") is None
    assert await second.delete("resp_1", "search") is True
    assert await second.get("resp_1", "search") is None


async def test_the_process_that_put_it_finds_it_at_once() -> None:
    own = SharedResponses(MemoryResponseStore(), MemoryStore())
    own.put(response("resp_9", None))
    assert (await own.get("resp_9", None)) is not None  # no wait for the shared write
