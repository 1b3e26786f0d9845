"""The assembled gateway: plugins, providers, routes, router, exporters, and their lifecycle.

Building a :class:`Gateway` validates everything that can be validated without
the network (config, plugins, provider settings, routes), which is exactly what
``interlock check`` does; ``start``/``close`` own the connection pool and the
exporters' lifetimes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import pluggy
from aiohttp import web

from interlock.accounting.anomaly import AnomalyDetector
from interlock.accounting.budgets import Budgets
from interlock.accounting.guard import SpendGuard
from interlock.accounting.keys import KeyStore
from interlock.accounting import price_data
from interlock.accounting.pricing import PriceTable
from interlock.accounting.rate_limits import RateLimiter
from interlock.accounting.shared_responses import SharedResponses
from interlock.accounting.spend import LedgerHistory
from interlock.accounting.stored_responses import SqlResponseStore
from interlock.core import config as config_mod
from interlock.core.breaker import Breaker
from interlock.core.config import Config, ConfigError
from interlock.core.doors.openai_responses import ResponsesDoor
from interlock.core.doors.stored_responses import ResponseStore
from interlock.core.health import HealthBoard
from interlock.core.lifecycle import Lifecycle
from interlock.core.plugins import collect, make_plugin_manager, notify
from interlock.core.provider import HttpPool, Provider
from interlock.core.resolve import Resolver, build_providers
from interlock.core.router import Router
from interlock.core.store import Store, open_store
from interlock.core.telemetry.runtime import Telemetry
from interlock.core.telemetry.settings import TelemetrySettings
from interlock.core.types import Alert, Decision

log = logging.getLogger("interlock")


class Gateway:
    def __init__(
        self,
        cfg: Config,
        *,
        pm: pluggy.PluginManager | None = None,
        extra_plugins: Iterable[tuple[str, object]] = (),
        load_entrypoints: bool = True,
        environ: Mapping[str, str] = os.environ,
        store: Store | None = None,
        clock: Callable[[], float] | None = None,
        telemetry: Telemetry | None = None,
        response_store: ResponseStore | None = None,
    ) -> None:
        self.cfg = cfg
        # traces and metrics (core.telemetry); tests pass Telemetry.for_tests(...)
        self.telemetry = telemetry or Telemetry(TelemetrySettings.resolve(cfg.telemetry, environ))
        self.pm = pm or make_plugin_manager(
            load_entrypoints=load_entrypoints, extra_plugins=extra_plugins, disabled=cfg.disabled_plugins, environ=environ
        )
        self.registry = collect(self.pm, {**cfg.settings_view(), "telemetry": self.telemetry.settings})
        self.environ = environ
        self.http = HttpPool(cfg.pool)  # [server] upstream_connections_per_host, upstream_keepalive_timeout
        self.health = HealthBoard()
        # shared routing state outlives reloads: breakers and latencies are about targets, not configs
        # [store]: in-memory for one process, Redis when several processes share state; tests may pass one
        self.store: Store = store if store is not None else open_store(cfg.store)
        self.telemetry.store_status = self.store.status  # the interlock.store.* metrics
        self.clock = clock or time.time  # budgets' periods and anomaly buckets (tests inject one)
        self.providers, self.prices, self.resolver, self.router = self._build(cfg)
        # budget counters a store forgot (restart, emptied Redis) are re-seeded from the ledger
        self.spend_history = LedgerHistory(cfg.database_url)
        self.exporters = self.registry.exporters
        for exporter in self.exporters:  # an exporter may also implement hooks (alert exporters)
            if any(hasattr(getattr(exporter, h, None), "interlock_impl") for h in ("alert", "record_decision")):
                self.pm.register(exporter, name=f"exporter:{exporter.name or type(exporter).__name__}:{id(exporter):x}")
        self.budgets, self.anomaly, self.guard = self._spend_guards(cfg)
        # gateway API keys: config + stored (api_keys); admin changes are announced on the store
        self.keys = KeyStore(cfg.keys, cfg.database_url, store=self.store, clock=self.clock)
        # rate limits per key, team and model (counters in the store); kept across reloads, reconfigured
        self.limits = RateLimiter(self.store, self.keys.limits_of, cfg.teams, cfg.rate_limits, self.clock)
        #: runs every request on this configuration (rebuilt with the router on reload)
        self.lifecycle = Lifecycle(self.router, self.guard, self.record, self.limits)
        self._ticker: asyncio.Task[None] | None = None
        self._price_updater: asyncio.Task[None] | None = None
        # stored Responses API responses: one store per process, in the ledger's database, kept across
        # reloads (its pending records must not be lost); None when [responses] store = false. Tests
        # may pass their own store (started and closed by them).
        self._sql_responses = (
            SqlResponseStore(cfg.database_url, cfg.responses.retention)
            if response_store is None and cfg.responses.store else None
        )
        self.response_store: ResponseStore | None = response_store if response_store is not None else self._sql_responses
        self._shared_responses: SharedResponses | None = None
        if self.store.shared and self.response_store is not None:  # the next turn may reach another process
            self.response_store = self._shared_responses = SharedResponses(self.response_store, self.store)
        self.responses_door = ResponsesDoor(self.response_store)  # rebuilt on reload, like the lifecycle
        self.reloads = 0
        self.on_reload: list[Callable[[Gateway], None]] = []  # e.g. the log redactor learning new keys
        #: ``serve --workers``: asks the supervisor to reload every worker (POST /-/reload reaches one)
        self.reload_peers: Callable[[], None] | None = None

    def _build(self, cfg: Config) -> tuple[dict[str, Provider], PriceTable, Resolver, Router]:
        """Providers, prices, resolver and router for ``cfg`` (raises :class:`ConfigError`).

        The price table is the shipped data with ``[prices]`` on top; the router hands it
        to ``compute_cost`` and to strategies as their ``prices``, and asks it for the
        context windows the config does not set.
        """
        providers = build_providers(
            cfg.providers, self.registry, self.http, self.environ, auto_providers=cfg.auto_providers, source=cfg.source
        )
        data = price_data.load(cfg.price_data)
        prices = PriceTable.for_config(cfg.prices, {name: p.type_name for name, p in providers.items()}, data)
        resolver = Resolver(self.pm, self.registry, providers, cfg.routes, cfg.rules, cfg.source)
        router = Router(
            self.pm, self.registry, resolver, self.health, self.store, Breaker(self.store, cfg.breaker),
            prices=prices, metadata=prices,
        )
        return providers, prices, resolver, router

    def _spend_guards(self, cfg: Config) -> tuple[Budgets, AnomalyDetector, SpendGuard]:
        """Budgets and the anomaly detector for ``cfg`` (counters in the shared store), and their guard."""
        budgets = Budgets(cfg.budgets, self.store, self.raise_alert, self.clock, history=self.spend_history)
        anomaly = AnomalyDetector(cfg.anomaly, self.store, self.raise_alert, self.clock)
        return budgets, anomaly, SpendGuard(budgets, anomaly)

    def raise_alert(self, alert: Alert) -> None:
        """Deliver an alert to every ``alert`` hook (log line, webhook, OTel event, ledger)."""
        try:
            self.pm.hook.alert(alert=alert)
        except Exception:
            log.exception("an alert plugin failed")

    async def _tick(self) -> None:
        """Judge anomaly buckets as they close (a second after each boundary), whether or not requests arrive."""
        while True:
            # at most a minute asleep: a reload may shorten the buckets, and a clock may jump
            await asyncio.sleep(min(60.0, max(0.05, self.anomaly.next_check())))
            try:
                await self.anomaly.tick()
            except Exception:
                log.exception("anomaly check failed")

    def reload(self, cfg: Config) -> list[str]:
        """Swap in a new routing config (providers, routes, rules, breaker settings).

        Raises :class:`ConfigError` and keeps the current config when the new one
        is invalid. Requests already in flight finish on the router they started
        with. Returns notes on what a reload cannot change (those need a restart).
        """
        providers, prices, resolver, router = self._build(cfg)
        notes = []
        if cfg.database_url != self.cfg.database_url:
            notes.append("database.url changed: takes effect after a restart")
        if cfg.disabled_plugins != self.cfg.disabled_plugins:
            notes.append("plugins.disabled changed: takes effect after a restart")
        if cfg.telemetry != self.cfg.telemetry:
            notes.append("telemetry changed: takes effect after a restart")
        if (cfg.host, cfg.port) != (self.cfg.host, self.cfg.port):
            notes.append("server host/port changed: takes effect after a restart")
        if cfg.store != self.cfg.store:
            notes.append("store changed: takes effect after a restart")
        if cfg.limits != self.cfg.limits or cfg.pool != self.cfg.pool:
            notes.append("server connection limits changed: take effect after a restart")
        cfg.limits, cfg.pool = self.cfg.limits, self.cfg.pool  # the listening server and the pool keep theirs
        cfg.store = self.cfg.store
        if cfg.responses.store != self.cfg.responses.store:
            notes.append("responses.store changed: takes effect after a restart")
        cfg.responses = replace(cfg.responses, store=self.cfg.responses.store)
        if self._sql_responses is not None:  # a new retention applies to responses stored from now on
            self._sql_responses.retention = cfg.responses.retention
        cfg.host, cfg.port, cfg.database_url = self.cfg.host, self.cfg.port, self.cfg.database_url
        self.cfg, self.providers, self.prices, self.resolver, self.router = cfg, providers, prices, resolver, router
        self.keys.configure(cfg.keys)
        self.budgets, self.anomaly, self.guard = self._spend_guards(cfg)  # in-flight reservations settle on their own keys
        self.limits.configure(cfg.teams, cfg.rate_limits)
        self.lifecycle = Lifecycle(self.router, self.guard, self.record, self.limits)
        self.responses_door = ResponsesDoor(self.response_store)
        self.reloads += 1
        log.info("configuration reloaded from %s (%d routes, %d providers)", cfg.source, len(resolver.routes), len(providers))
        return notes

    def reload_from_source(self) -> list[str]:
        """Re-read the config this gateway was started with and :meth:`reload` it."""
        if self.cfg.source == "demo":
            raise ConfigError([("", "the --demo configuration is built in and cannot be reloaded")], "demo")
        notes = self.reload(config_mod.load(self.cfg.source, environ=self.environ))
        for callback in self.on_reload:
            callback(self)
        return notes

    def secrets(self) -> list[str]:
        """Every credential value, so logs can be scrubbed of them."""
        admin = [k.get() for k in (self.cfg.admin_key, self.cfg.read_key) if k is not None]
        return [p.settings.api_key.get() for p in self.providers.values() if p.settings.api_key] + [
            k.secret.get() for k in self.cfg.keys if k.secret
        ] + admin

    async def start(self) -> None:
        await self.store.start()  # a shared store connects in the background: never blocks startup
        self.store.on_reconnect(self._store_back)
        await self.http.start()
        for exporter in self.exporters:
            await exporter.start()
        await self.telemetry.start(self.exporters)
        try:  # baselines a restart (or an emptied shared store) forgot come back from the ledger
            await self.anomaly.restore(self.spend_history)
        except Exception as exc:
            log.warning("anomaly: cannot rebuild baselines from the ledger (%s: %s); they start afresh",
                        type(exc).__name__, exc)
        self._ticker = asyncio.create_task(self._tick(), name="interlock-anomaly-tick")
        self._report_price_data()
        if self.cfg.price_data.refresh is not None and self.cfg.source != "demo":
            self._price_updater = asyncio.create_task(self._refresh_prices(), name="interlock-price-updater")
        self.limits.start()
        await self.keys.start()  # after the ledger exporter, which creates the database
        if self._sql_responses is not None:
            await self._sql_responses.start()

    async def _store_back(self) -> None:
        """The shared store answers again (maybe emptied): budgets re-seed their counters before next use."""
        self.budgets.forget_seeds()

    def _report_price_data(self) -> None:
        """Say which price data is in use, and warn (never fail) when it is stale or a file did not read."""
        data = self.prices.data
        if data is None:
            return
        if data.problem is not None:
            log.warning("prices: %s %s; using the %s", data.path, data.problem, data.describe())
        if data.stale(self.cfg.price_data.stale_after):
            log.warning("prices: the %s is older than %s; run `interlock prices --update` to refresh it",
                        data.describe(), self.cfg.price_data.stale_after)
        else:
            log.info("prices: %s", data.describe())

    async def _refresh_prices(self) -> None:
        """``[price_data] refresh``: fetch the data set now and then, and reload onto it when it changed."""
        interval = self.cfg.price_data.refresh
        assert interval is not None
        while True:
            try:
                fresh = await asyncio.to_thread(price_data.update, self.cfg.price_data)
            except Exception as exc:  # a refresh that fails keeps the prices in use
                log.warning("prices: refresh failed, keeping the %s (%s)", self.prices.data.describe()
                            if self.prices.data else "current prices", exc)
            else:
                if fresh is not self.prices.data:
                    self.reload(self.cfg)
                    log.info("prices: now using the %s", fresh.describe())
            await asyncio.sleep(interval.total_seconds())

    async def close(self) -> None:
        for name in ("_ticker", "_price_updater"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        await self.limits.close()
        await self.keys.close()
        if self._shared_responses is not None:
            await self._shared_responses.close()
        if self._sql_responses is not None:
            try:
                await self._sql_responses.close()  # writes the responses still pending
            except Exception:  # must not keep the exporters from flushing theirs
                log.exception("the response store failed to close")
        await self.store.close()
        await self.spend_history.close()
        for exporter in self.exporters:
            try:
                await exporter.close()
            except Exception:  # one exporter failing must not lose the others' buffers
                log.exception("exporter %s failed to close", getattr(exporter, "name", exporter))
        await self.telemetry.close()  # flushes the last spans and metrics
        await self.http.close()

    def record(self, decision: Decision) -> None:
        """Hand a finished decision to every exporter and ``record_decision`` observer."""
        try:
            self.telemetry.record(decision)  # closes the routing span, records the metrics
        except Exception:
            log.exception("telemetry failed to record a decision")
        for exporter in self.exporters:
            try:
                exporter.record(decision)
            except Exception:
                log.exception("exporter %s failed to record a decision", getattr(exporter, "name", exporter))
        try:
            notify(self.pm, "record_decision", decision=decision)
        except Exception:
            log.exception("a record_decision plugin failed")


#: the aiohttp application's key for its gateway (``request.app[GATEWAY]``)
GATEWAY = web.AppKey("gateway", Gateway)
