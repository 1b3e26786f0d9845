"""``POST /v1/messages/count_tokens``: the prompt's size, counted upstream or estimated.

The model is resolved as a request for it would be (:meth:`Router.plan`: routes,
rules, strategy, cooldowns). When the first target speaks Messages and can count
(a :class:`TokenCounter`: the ``anthropic`` provider), its own count endpoint
answers: the exact number the model will be billed for. Otherwise, or when that
upstream cannot answer (overloaded, unreachable), the answer is the gateway's own
estimate (:mod:`interlock.core.estimate`, characters / 4 plus a charge per image;
tool definitions not counted), marked with ``x-interlock-estimate: true``. A request
the upstream rejects (400, 404, 413) is the client's error. Nothing is accounted or
recorded: counting costs nothing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from interlock.core.errors import GatewayError
from interlock.core.estimate import estimate_prompt_tokens
from interlock.core.router import Router
from interlock.core.types import RequestContext, UpstreamError

#: the response header that marks a count as the gateway's estimate
ESTIMATE_HEADER = "x-interlock-estimate"
# upstream statuses that are about the request itself: passed on instead of estimated over
_CLIENT_STATUSES = frozenset({400, 404, 413, 422})


@runtime_checkable
class TokenCounter(Protocol):
    """A provider that counts a Messages request's input tokens (``ctx.native``) on one of its models."""

    async def count_tokens(self, ctx: RequestContext, model: str) -> int:
        """The input tokens of ``ctx.native`` on ``model``; raises ``UpstreamError`` like any call."""
        ...


async def count_tokens(router: Router, ctx: RequestContext) -> tuple[int, bool]:
    """``(input_tokens, estimated)`` for a Messages request (a :class:`GatewayError` for the client's faults)."""
    plan = await router.plan(ctx, ctx.body["model"])
    first = plan.order[0] if plan.order else None
    if first is not None:
        provider = router.providers[first.provider]
        if provider.speaks(ctx.protocol, first.model) and isinstance(provider, TokenCounter):
            try:
                return await provider.count_tokens(ctx, first.model), False
            except UpstreamError as err:
                if err.kind == "http" and err.status in _CLIENT_STATUSES:
                    raise GatewayError(err.status if err.status != 422 else 400, err.message) from None
                # the upstream could not count right now: the estimate is still an answer
    return estimate_prompt_tokens(ctx.body), True
