"""The assembled gateway: plugins, providers, routes, router, exporters, and their lifecycle.

Building a :class:`Gateway` validates everything that can be validated without
the network (config, plugins, provider settings, routes), which is exactly what
``interlock check`` does; ``start``/``close`` own the connection pool and the
exporters' lifetimes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import pluggy

from interlock.core.config import Config
from interlock.core.health import HealthBoard
from interlock.core.plugins import collect, make_plugin_manager
from interlock.core.provider import HttpPool
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
        self.http = HttpPool()
        self.providers = build_providers(cfg, self.registry, self.http, environ)
        self.resolver = Resolver(self.pm, self.registry, self.providers, cfg)
        self.health = HealthBoard()
        self.router = Router(self.pm, self.registry, self.resolver, self.health)
        self.exporters = self.registry.exporters

    def secrets(self) -> list[str]:
        """Every credential value, so logs can be scrubbed of them."""
        return [p.settings.api_key.get() for p in self.providers.values() if p.settings.api_key]

    async def start(self) -> None:
        await self.http.start()
        for exporter in self.exporters:
            await exporter.start()

    async def close(self) -> None:
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
