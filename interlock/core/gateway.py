"""The assembled gateway: plugins, providers, routes, router, exporters, and their lifecycle.

Building a :class:`Gateway` validates everything that can be validated without
the network (config, plugins, provider settings, routes), which is exactly what
``interlock check`` does; ``start``/``close`` own the connection pool and the
exporters' lifetimes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping

import pluggy

from interlock.core.breaker import Breaker
from interlock.core import config as config_mod
from interlock.core.config import Config, ConfigError
from interlock.core.health import HealthBoard
from interlock.core.plugins import collect, make_plugin_manager
from interlock.core.pricing import PriceTable, bind
from interlock.core.provider import HttpPool, Provider
from interlock.core.store import MemoryStore, Store
from interlock.core.resolve import Resolver, build_providers
from interlock.core.router import Router
from interlock.core.types import Decision

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
    ) -> None:
        self.cfg = cfg
        self.pm = pm or make_plugin_manager(
            load_entrypoints=load_entrypoints, extra_plugins=extra_plugins, disabled=cfg.disabled_plugins, environ=environ
        )
        self.registry = collect(self.pm, cfg.settings_view())
        self.environ = environ
        self.http = HttpPool()
        self.health = HealthBoard()
        # shared routing state outlives reloads: breakers and latencies are about targets, not configs
        self.store: Store = MemoryStore()
        self.providers, self.resolver, self.router = self._build(cfg)
        self.prices = self._prices(cfg)
        self.exporters = self.registry.exporters
        self.reloads = 0
        self.on_reload: list[Callable[[Gateway], None]] = []  # e.g. the log redactor learning new keys

    def _build(self, cfg: Config) -> tuple[dict[str, Provider], Resolver, Router]:
        providers = build_providers(cfg, self.registry, self.http, self.environ)
        resolver = Resolver(self.pm, self.registry, providers, cfg)
        router = Router(self.pm, self.registry, resolver, self.health, self.store, Breaker(self.store, cfg.breaker))
        return providers, resolver, router

    def _prices(self, cfg: Config) -> PriceTable:
        """The price table for ``cfg`` (built-in data plus ``[prices]``), bound to the store.

        Strategies hold only the store, so ``lowest-cost`` finds this table through it
        (:func:`interlock.core.pricing.table_for`); ``compute_cost`` receives it as ``prices``.
        """
        table = PriceTable.for_config(cfg.prices, {name: p.type_name for name, p in self.providers.items()})
        bind(self.store, table)
        return table

    def reload(self, cfg: Config) -> list[str]:
        """Swap in a new routing config (providers, routes, rules, breaker settings).

        Raises :class:`ConfigError` and keeps the current config when the new one
        is invalid. Requests already in flight finish on the router they started
        with. Returns notes on what a reload cannot change (those need a restart).
        """
        providers, resolver, router = self._build(cfg)
        notes = []
        if cfg.database_url != self.cfg.database_url:
            notes.append("database.url changed: takes effect after a restart")
        if cfg.disabled_plugins != self.cfg.disabled_plugins:
            notes.append("plugins.disabled changed: takes effect after a restart")
        if (cfg.host, cfg.port) != (self.cfg.host, self.cfg.port):
            notes.append("server host/port changed: takes effect after a restart")
        cfg.host, cfg.port, cfg.database_url = self.cfg.host, self.cfg.port, self.cfg.database_url
        self.cfg, self.providers, self.resolver, self.router = cfg, providers, resolver, router
        self.prices = self._prices(cfg)
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
        return [p.settings.api_key.get() for p in self.providers.values() if p.settings.api_key]

    async def start(self) -> None:
        await self.http.start()
        for exporter in self.exporters:
            await exporter.start()

    async def close(self) -> None:
        await self.store.close()
        for exporter in self.exporters:
            try:
                await exporter.close()
            except Exception:  # one exporter failing must not lose the others' buffers
                log.exception("exporter %s failed to close", getattr(exporter, "name", exporter))
        await self.http.close()

    def record(self, decision: Decision) -> None:
        """Hand a finished decision to every exporter and ``record_decision`` observer."""
        for exporter in self.exporters:
            try:
                exporter.record(decision)
            except Exception:
                log.exception("exporter %s failed to record a decision", getattr(exporter, "name", exporter))
        try:
            self.pm.hook.record_decision(decision=decision)
        except Exception:
            log.exception("a record_decision plugin failed")
