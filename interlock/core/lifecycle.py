"""One request's life, whichever protocol it came in by.

A *front door* (:class:`FrontDoor`) turns its protocol's request into the internal
one (a :class:`~interlock.core.types.RequestContext` whose body is in Chat
Completions or Embeddings shape) and the internal answers back into its protocol:
a response, stream chunks, a stream error, an error body. The HTTP glue in
:mod:`interlock.core.app` authenticates and attributes the request (key, team,
tags) and hands the context to :meth:`Lifecycle.serve`, which owns everything
after that, in this order:

1. **plan**: the route (rules may pick another), the strategy and the target order,
   resolved once (:meth:`~interlock.core.router.Router.plan`);
   then **admit**: when a rate limit or a model allowlist applies, the :class:`Limiter`
   checks the allowlists and takes the request's rpm count, concurrency slots and tpm
   reservation (a 403 or 429 before any upstream call);
2. **reserve**: when a budget applies, the worst case the request may cost, priced at
   the plan's first pick, is reserved before any upstream call (a 429 when it does
   not fit);
3. **run**: the attempt loop (:meth:`~interlock.core.router.Router.run`): timeouts,
   retries, fallback, hedging, cooldowns;
4. **answer**: the door writes the result, or for a stream relays it: committed only
   once the first content arrived, continued on the next target after a mid-stream
   failure when the route allows it, and ended with the protocol's explicit error
   event when it cannot be, never a silent truncation;
5. **account**: every attempt priced, the fallback's cost delta;
6. **record**: the decision to telemetry, exporters and ``record_decision``; before the
   answer leaves (a non-stream response is built after it; a stream that succeeded is
   recorded before its last event is written), so the ledger's journal holds every
   request whose client got its whole answer;
7. **settle**: the reservation replaced by the actual cost, the anomaly detector fed; the
   rate limiter's token reservation replaced by the actual tokens, its slots freed.

Steps 5-7 run exactly once per request that succeeded or failed, and for a stream whose
client went away. A non-stream request cancelled while it is being routed (its client
went away, or a bug raised) is accounted and settled but not recorded. What the request costs and how budgets are kept is the accounting
layer's business: the lifecycle sees it only through :class:`Guard`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from interlock.core import jsonutil
from interlock.core.telemetry import request_trace
from interlock.core.errors import GatewayError
from interlock.core.estimate import worst_case_usage
from interlock.core.router import Op, Plan, Router, StreamStart, note_chunk
from interlock.core.routing_headers import cost_headers, header_safe, routing_headers
from interlock.core.types import Attempt, Chunk, Decision, RequestContext, UpstreamError

T = TypeVar("T")
H = TypeVar("H")
L = TypeVar("L")

#: the parameters a door dropped from the client's request (RequestContext.dropped), comma-separated
DROPPED_HEADER = "x-interlock-dropped"


class StreamWriter(Protocol):
    """How one stream is written in a client's protocol; one per streamed request."""

    #: the response's Content-Type
    content_type: str
    @property
    def extra_headers(self) -> Mapping[str, str]:
        """Headers this protocol's clients read besides the routing ones (the anthropic SDK's ``request-id``)."""
        ...

    def start(self) -> bytes:
        """What the client gets before the first chunk (may be empty)."""
        ...

    def chunk(self, chunk: Chunk) -> bytes:
        """One internal chunk in the client's protocol (empty: nothing to send for it)."""
        ...

    def end(self, decision: Decision) -> bytes:
        """What ends a stream that succeeded; the decision is accounted (its cost is known)."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """The protocol's explicit error event for a stream that failed after it started."""
        ...


class FrontDoor(Protocol):
    """A client protocol: how its requests are read and its answers written."""

    #: what the decision records as its endpoint ("chat", "embeddings")
    endpoint: str

    def parse(self, body: dict[str, Any]) -> RequestContext:
        """Validate the client's JSON body and build the internal request (400s as :class:`GatewayError`).

        The HTTP glue fills in the request id, headers and attribution afterwards.
        """
        ...

    def operation(self, ctx: RequestContext) -> Op:
        """The provider call each attempt makes (chat, stream or embeddings)."""
        ...

    def respond(self, ctx: RequestContext, result: Any, headers: dict[str, str]) -> web.StreamResponse:
        """The non-stream answer: ``result`` is the winning attempt's result, ``headers`` the routing headers."""
        ...

    def error_response(self, err: GatewayError) -> web.Response:
        """``err`` as this protocol's error body, with its status and headers."""
        ...

    def stream_writer(self, ctx: RequestContext) -> StreamWriter:
        """A writer for one streamed answer."""
        ...

    #: whether :meth:`prepare` has work to do (the HTTP glue skips the call otherwise)
    needs_prepare: bool

    async def prepare(self, ctx: RequestContext) -> None:
        """After attribution (``ctx.team`` is known), before planning: I/O the request needs.

        The Responses door loads the conversation a ``previous_response_id`` names here.
        Raises :class:`GatewayError` for the client.
        """
        ...


class Guard(Protocol, Generic[H]):
    """Spend guards around a request (budgets and the anomaly detector), supplied by the assembly.

    ``H`` is the guard's own record of a reservation, handed back to :meth:`settle`.
    """

    def output_allowance(self, ctx: RequestContext) -> int | None:
        """Output tokens to assume when the request sets no limit; None when no budget applies."""
        ...

    async def reserve(self, ctx: RequestContext, worst_case: Decimal | None, unpriced: str | None) -> H | None:
        """Reserve ``worst_case`` dollars (None: unknown, ``unpriced`` names the target without a price).

        Raises a 429 :class:`GatewayError` when a budget would be exceeded.
        """
        ...

    async def settle(self, decision: Decision, held: H | None) -> None:
        """After the request: the actual cost replaces ``held``. Must not raise."""
        ...


class Limiter(Protocol, Generic[L]):
    """Rate limits and model allowlists around a request, supplied by the assembly.

    ``L`` is the limiter's own record of what it took for a request, handed back to the other methods.
    """

    async def admit(self, ctx: RequestContext, route: str | None) -> L | None:
        """Before budgets and the upstream: 403 (model not allowed), 429 (limited) or 503 (store down).

        ``route`` is the configured route the plan chose (None for a model name). None: no limit applies.
        """
        ...

    def routed(self, held: L | None) -> None:
        """Every check passed: the request goes upstream."""
        ...

    async def release(self, held: L | None, decision: Decision) -> None:
        """After the request (or its rejection by a later check): reconcile and give back. Must not raise."""
        ...

    def headers(self, held: L | None) -> dict[str, str]:
        """Response headers about the limits (``x-ratelimit-*``); empty when none apply."""
        ...


class _Held:
    """What a request holds until it settles: the guard's reservation and the limiter's admission."""

    __slots__ = ("guard", "limits")

    def __init__(self, guard: Any, limits: Any) -> None:
        self.guard = guard
        self.limits = limits


class Lifecycle:
    """Runs requests on one configuration: its router and guards, rebuilt with them on reload.

    A request finishes on the lifecycle it started with, even across a reload.
    """

    def __init__(
        self, router: Router, guard: Guard[Any], record: Callable[[Decision], None], limiter: Limiter[Any] | None = None
    ) -> None:
        self.router = router
        self.guard = guard
        self.record = record
        self.limiter = limiter

    async def serve(self, request: web.Request, door: FrontDoor, ctx: RequestContext) -> web.StreamResponse:
        """Plan, reserve, run and answer one request; account, record and settle it once."""
        router = self.router
        decision = router.new_decision(ctx, ctx.body["model"])
        try:
            plan = await router.plan(ctx, decision.requested_model)
        except GatewayError as err:
            await self._failed(ctx, decision, err, None)
            raise
        _planned(decision, plan, ctx)
        limited = await self._admit(ctx, decision, plan)
        held = _Held(await self._reserve(ctx, decision, plan, limited), limited)
        if limited is not None and self.limiter is not None:
            self.limiter.routed(limited)
        if ctx.stream:
            return await self._stream(request, door, ctx, decision, plan, held)
        result, attempt, target = await self._routed(
            ctx, decision, router.run(ctx, decision, door.operation(ctx), plan), held
        )
        await self._finish(ctx, decision, attempt, held)
        headers = {**routing_headers(decision, attempt, target), **cost_headers(decision)}
        if limited is not None and self.limiter is not None:
            headers.update(self.limiter.headers(limited))  # after settling: the tokens actually used
        if ctx.dropped:
            headers[DROPPED_HEADER] = header_safe(", ".join(ctx.dropped))
        return door.respond(ctx, result, headers)

    # -- reserve, finish ------------------------------------------------------ #

    async def _admit(self, ctx: RequestContext, decision: Decision, plan: Plan) -> Any:
        """Rate limits and allowlists, when a limiter is configured; a rejection is recorded."""
        if self.limiter is None:
            return None
        try:
            return await self.limiter.admit(ctx, None if plan.route.implicit else plan.route.name)
        except GatewayError as err:
            await self._failed(ctx, decision, err, None)
            raise

    async def _reserve(self, ctx: RequestContext, decision: Decision, plan: Plan, limited: Any = None) -> Any:
        """Reserve the worst case at the plan's first pick when a budget applies; a 429 is recorded.

        A rejection gives back what the limiter took (``limited``).
        """
        guard = self.guard
        allowance = guard.output_allowance(ctx)
        if allowance is None:
            return None
        first = plan.order[0] if plan.order else None
        worst = None
        if first is not None:
            worst = self.router.price(worst_case_usage(ctx, allowance), first.provider, first.model)
        try:
            return await guard.reserve(ctx, worst, first.key if first is not None and worst is None else None)
        except GatewayError as err:
            await self._failed(ctx, decision, err, _Held(None, limited))
            raise

    async def _routed(self, ctx: RequestContext, decision: Decision, routing: Awaitable[T], held: _Held) -> T:
        """Await the router; when no target can answer, record the decision and let the error out."""
        try:
            return await routing
        except GatewayError as err:
            await self._failed(ctx, decision, err, held)
            raise
        except BaseException:  # cancelled (client gone) or a bug: still settle the budget reservation
            self.router.account(decision, ctx)
            await self._settle(decision, held)
            raise

    async def _failed(self, ctx: RequestContext, decision: Decision, err: GatewayError, held: _Held | None) -> None:
        """A request that gets ``err`` instead of an answer: the error is the decision's, recorded once."""
        decision.failed(err.status, err.code or err.type, err.message)
        err.headers.update(routing_headers(decision, None, None))
        await self._finish(ctx, decision, None, held)
        err.headers.update(cost_headers(decision))  # failed attempts that reported usage were billed
        if held is not None and held.limits is not None and self.limiter is not None:
            err.headers.update(self.limiter.headers(held.limits))

    async def _finish(self, ctx: RequestContext, decision: Decision, attempt: Attempt | None, held: _Held | None) -> None:
        self._account_and_record(ctx, decision, attempt)
        await self._settle(decision, held)

    def _account_and_record(self, ctx: RequestContext, decision: Decision, attempt: Attempt | None) -> None:
        """Account and record the decision: from here on it is in the ledger's journal."""
        decision.latency_ms = (time.perf_counter() - ctx.started) * 1000
        if attempt is not None:
            decision.provider, decision.model, decision.usage = attempt.provider, attempt.model, attempt.usage
        self.router.account(decision, ctx)
        self.record(decision)

    async def _settle(self, decision: Decision, held: _Held | None) -> None:
        # budgets: actual cost replaces the reservation; anomaly buckets
        await self.guard.settle(decision, held.guard if held is not None else None)
        if held is not None and held.limits is not None and self.limiter is not None:
            await self.limiter.release(held.limits, decision)  # tpm to the actual tokens; slots freed

    # -- streams ------------------------------------------------------------ #

    async def _stream(
        self, request: web.Request, door: FrontDoor, ctx: RequestContext, decision: Decision, plan: Plan, held: _Held
    ) -> web.StreamResponse:
        router = self.router
        start, _, _ = await self._routed(ctx, decision, router.run(ctx, decision, door.operation(ctx), plan), held)
        assert isinstance(start, StreamStart)  # a stream operation's result
        writer = door.stream_writer(ctx)
        headers = routing_headers(decision, start.attempt, start.target)
        if start.settings.continue_stream:
            headers["x-interlock-continuation"] = "enabled"
        if ctx.dropped:
            headers[DROPPED_HEADER] = header_safe(", ".join(ctx.dropped))
        if held.limits is not None and self.limiter is not None:
            headers.update(self.limiter.headers(held.limits))  # before the first chunk: the reservation
        resp = web.StreamResponse(
            headers={
                "Content-Type": writer.content_type,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "x-request-id": ctx.request_id,
                **writer.extra_headers,
                **headers,
            }
        )
        current = start
        recorded = False
        try:
            await resp.prepare(request)
            if head := writer.start():
                await resp.write(head)
            while True:
                failure = await self._relay(resp, writer, ctx, decision, current)
                if failure is None:
                    # recorded before the stream's last bytes leave: a client that has its whole
                    # answer has its row in the ledger's journal, even if the process dies now
                    await router.stream_ended(current)
                    self._account_and_record(ctx, decision, current.attempt)  # the trailer may carry the cost
                    recorded = True
                    await resp.write(writer.end(decision))
                    break
                err, partial = failure
                verdict = await router.stream_ended(current, err)
                if partial is not None and current.settings.continue_stream and current.remaining:
                    try:
                        current = await router.continue_stream(ctx, decision, current, partial)
                        current.buffered = [c for c in current.buffered if c.content or c.finish_reason or c.usage_only]
                        continue  # splice: the next target's content follows what the client has
                    except GatewayError as cont_err:
                        decision.events.append(f"continuation failed: {cont_err.message}")
                failure_class = verdict.failure_class.value if verdict else "stream_error"
                decision.failed(502, failure_class, err.message)
                error = GatewayError(
                    502, f"the upstream stream failed after it started: {err.message}", type="upstream_error",
                    code=failure_class,
                )
                await resp.write(writer.error(error))  # explicit, never a silent truncation
                break
        except (ConnectionError, asyncio.CancelledError):  # the client went away (reset, or lost during a write)
            decision.status, decision.error_type = 499, "client_disconnected"
            raise
        finally:
            if current.rest is not None:
                await current.rest.aclose()  # releases the upstream connection whatever happened
            await router.stream_ended(current)
            if not recorded:
                self._account_and_record(ctx, decision, current.attempt)
            await self._settle(decision, held)  # a stream reconciles its budget here
        return resp

    async def _relay(
        self, resp: web.StreamResponse, writer: StreamWriter, ctx: RequestContext, decision: Decision, start: StreamStart
    ) -> tuple[UpstreamError, str | None] | None:
        """Forward one target's stream; on a failure return it with the text sent so far.

        The partial text is only collected when the route may continue the stream
        elsewhere (it costs a parse per chunk), and is None once a tool call was
        streamed: a half-sent tool call cannot be continued.
        """
        partial: list[str] | None = [] if start.settings.continue_stream else None

        def keep(chunk: Chunk) -> None:
            nonlocal partial
            if partial is None or not chunk.content:
                return
            if chunk.native:  # a client-protocol event from a pass-through target: not continued elsewhere
                partial = None
                return
            for choice in jsonutil.loads(chunk.payload).get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("tool_calls"):
                    partial = None
                    return
                partial.append(delta.get("content") or "")

        write = resp.write
        encode = writer.chunk
        for chunk in start.buffered:
            keep(chunk)
            if data := encode(chunk):
                await write(data)
        if decision.ttft_ms is None:
            decision.ttft_ms = (time.perf_counter() - ctx.started) * 1000
        if start.rest is None:
            return None
        try:
            async for chunk in start.rest:
                note_chunk(start.attempt, chunk)
                if partial is not None:
                    keep(chunk)
                if data := encode(chunk):
                    await write(data)
        except UpstreamError as err:
            return err, ("".join(partial) if partial is not None else None)
        return None


def _planned(decision: Decision, plan: Plan, ctx: RequestContext) -> None:
    """Write the plan into the decision (route, rule, strategy, candidates, reasons) and open its span."""
    decision.route = None if plan.route.implicit else plan.route.name
    decision.rule, decision.strategy = ctx.rule, plan.strategy
    decision.candidates = [t.key for t in plan.order]
    decision.reasons, decision.skipped = list(plan.reasons), list(plan.skipped)
    request_trace.current().planned(decision)

