"""Building the plugin manager and collecting what plugins register.

The manager belongs to the app (no module global), so every test and every
``interlock`` command gets a fresh one. Built-ins are registered first and
their ``firstresult`` answers are ``trylast``, so a third-party plugin loaded
from the ``interlock`` entry-point group always gets the first say.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from interlock.core import hookspecs
from interlock.core.exporter import Exporter
from interlock.core.provider import Provider
from interlock.core.strategy import Strategy

log = logging.getLogger("interlock.plugins")

ENTRYPOINT_GROUP = "interlock"

#: every built-in plugin, registered under its module path (block one with
#: ``[plugins] disabled = ["interlock.plugins.providers.groq"]``)
BUILTIN_PLUGINS: tuple[str, ...] = (
    "interlock.plugins.detection",
    "interlock.plugins.classifier",
    "interlock.plugins.rules",
    "interlock.plugins.providers.openai",
    "interlock.plugins.providers.azure",
    "interlock.plugins.providers.mistral",
    "interlock.plugins.providers.deepseek",
    "interlock.plugins.providers.xai",
    "interlock.plugins.providers.perplexity",
    "interlock.plugins.providers.openrouter",
    "interlock.plugins.providers.gpustack",
    "interlock.plugins.providers.groq",
    "interlock.plugins.providers.together",
    "interlock.plugins.providers.fireworks",
    "interlock.plugins.providers.bedrock",
    "interlock.plugins.providers.replicate",
    "interlock.plugins.providers.vertex",
    "interlock.plugins.providers.cohere",
    "interlock.plugins.providers.gemini",
    "interlock.plugins.providers.ollama",
    "interlock.plugins.providers.anthropic",
    "interlock.plugins.strategies.ordered",
    "interlock.plugins.strategies.weighted",
    "interlock.plugins.strategies.round_robin",
    "interlock.plugins.strategies.least_latency",
    "interlock.plugins.strategies.least_busy",
    "interlock.plugins.strategies.lowest_cost",
    "interlock.plugins.pricing",
    "interlock.plugins.exporters.log",
    "interlock.plugins.exporters.ledger",
    "interlock.plugins.exporters.span_tree",
    "interlock.plugins.exporters.alert_log",
    "interlock.plugins.exporters.alert_otel",
    "interlock.plugins.exporters.webhook",
    "interlock.plugins.exporters.otlp",
    "interlock.plugins.exporters.console",
    "interlock.plugins.exporters.prometheus",
)


class PluginError(Exception):
    """A plugin could not be loaded or registered; the message names it."""


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    disabled: Iterable[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> pluggy.PluginManager:
    """A fresh manager with the built-ins, entry-point plugins and ``extra_plugins``.

    ``INTERLOCK_LOAD_PLUGINS`` (comma-separated distribution names; empty means
    none) limits which installed distributions are loaded, for reproducible
    deployments. ``INTERLOCK_TRACE_PLUGINS=1`` prints every hook call to stderr.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    for modname in BUILTIN_PLUGINS:
        if pm.is_blocked(modname):
            continue
        _register(pm, importlib.import_module(modname), modname, source="built-in")
    if load_entrypoints:
        _load_entrypoints(pm, environ)
    for name, plugin in extra_plugins:
        _register(pm, plugin, name, source="test")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)!r} implements an unknown hook: {exc}") from None
    if environ.get("INTERLOCK_TRACE_PLUGINS"):
        _enable_tracing(pm)
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str, *, source: str) -> None:
    if pm.has_plugin(name) or pm.get_plugin(name) is not None:
        raise PluginError(f"plugin name {name!r} ({source}) is already registered; plugin names must be unique")
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} ({source}) is invalid: {exc}") from None


def _load_entrypoints(pm: pluggy.PluginManager, environ: Mapping[str, str]) -> None:
    only: set[str] | None = None
    if "INTERLOCK_LOAD_PLUGINS" in environ:
        only = {d.strip() for d in environ["INTERLOCK_LOAD_PLUGINS"].split(",") if d.strip()}
    seen: set[tuple[str, str]] = set()  # (distribution, entry point): one distribution listed twice on sys.path
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        if only is not None and dist_name not in only:
            continue
        for ep in dist.entry_points:
            if ep.group != ENTRYPOINT_GROUP or (dist_name, ep.name) in seen:
                continue
            seen.add((dist_name, ep.name))
            if pm.is_blocked(ep.name):
                continue
            where = f"entry point {ep.name!r} = {ep.value!r} of {dist_name} {dist.version}"
            try:
                plugin = ep.load()
            except Exception as exc:  # any import-time failure must name the plugin
                raise PluginError(f"plugin {where} failed to import: {type(exc).__name__}: {exc}") from exc
            _register(pm, plugin, ep.name, source=where)
            _DIST_INFO[id(plugin)] = (dist_name, dist.version)


# plugin object id -> (distribution, version), filled while loading entry points
_DIST_INFO: dict[int, tuple[str, str]] = {}


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        print(f"[interlock hook] {hook_name} -> {[i.plugin_name for i in impls]}", file=sys.stderr)

    def after(
        outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        print(f"[interlock hook] {hook_name} returned {outcome.get_result()!r}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)
    setattr(pm, _TRACED, True)  # first_result and notify: every call through pluggy, to be printed


_TRACED = "_interlock_traced"


@dataclass
class Registry:
    """What the plugins registered at startup, and which plugin registered it."""

    providers: dict[str, type[Provider]] = field(default_factory=dict)
    strategies: dict[str, Callable[..., Strategy]] = field(default_factory=dict)
    exporters: list[Exporter] = field(default_factory=list)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> plugin name

    def registered_by(self, plugin_name: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"providers": [], "strategies": [], "exporters": []}
        for (kind, name), owner in self.owner.items():
            if owner == plugin_name:
                out[kind].append(name)
        return out


def collect(pm: pluggy.PluginManager, settings: Mapping[str, Any] | None = None) -> Registry:
    """Run the startup registration hooks and return what they registered."""
    reg = Registry()
    current = [""]

    def claim(kind: str, name: str) -> None:
        prev = reg.owner.get((kind, name))
        if prev is not None:
            raise PluginError(f"{kind[:-1]} {name!r} is registered by both {prev!r} and {current[0]!r}")
        reg.owner[(kind, name)] = current[0]

    def register_provider(cls: type[Provider]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Provider)) or not cls.type_name:
            raise PluginError(f"plugin {current[0]!r} registered {cls!r}, which is not a Provider subclass with a type_name")
        claim("providers", cls.type_name)
        reg.providers[cls.type_name] = cls

    def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
        if not callable(factory):
            raise PluginError(f"plugin {current[0]!r} registered strategy {name!r} with a non-callable factory")
        claim("strategies", name)
        reg.strategies[name] = factory

    def register_exporter(exporter: Exporter) -> None:
        name = getattr(exporter, "name", "") or type(exporter).__name__
        claim("exporters", name)
        reg.exporters.append(exporter)

    for hook, cb, extra in (
        (pm.hook.register_providers, register_provider, {}),
        (pm.hook.register_strategies, register_strategy, {}),
        (pm.hook.register_exporters, register_exporter, {"settings": settings or {}}),
    ):
        _call_each(hook, current, register=cb, **extra)
    return reg


def _call_each(hook: pluggy.HookCaller, current: list[str], **kwargs: Any) -> None:
    """Call every implementation separately, publishing the caller's name in ``current``.

    The startup ``register_*`` hooks go through here rather than ``hook(...)``
    so the core knows which plugin registered what (``interlock plugins``
    shows it); the order is pluggy's own call order.
    """
    for impl in reversed(hook.get_hookimpls()):
        current[0] = impl.plugin_name
        args = [kwargs[name] for name in impl.argnames]
        try:
            impl.function(*args)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook.name}: {type(exc).__name__}: {exc}") from exc


def plugin_info(pm: pluggy.PluginManager, registry: Registry) -> list[dict[str, Any]]:
    """Name, version, source, hooks and registrations of every plugin, for ``/-/plugins``."""
    from interlock.version import __version__

    out = []
    # exporters implementing hooks themselves (alert exporters) are registered by the gateway as
    # "exporter:<name>:<id>"; they are shown as part of the plugin that registered them
    exporter_hooks: dict[str, set[str]] = {}
    for name, plugin in pm.list_name_plugin():
        if name.startswith("exporter:") and plugin is not None:
            owner = registry.owner.get(("exporters", name.split(":")[1]), "")
            exporter_hooks.setdefault(owner, set()).update(h.name for h in pm.get_hookcallers(plugin) or [])
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: np[0]):
        if plugin is None or name.startswith("exporter:"):
            continue
        dist = _DIST_INFO.get(id(plugin))
        builtin = name in BUILTIN_PLUGINS
        out.append(
            {
                "name": name,
                "version": __version__ if builtin else (dist[1] if dist else getattr(plugin, "__version__", None)),
                "distribution": "interlock" if builtin else (dist[0] if dist else None),
                "builtin": builtin,
                "hooks": sorted({h.name for h in pm.get_hookcallers(plugin) or []} | exporter_hooks.get(name, set())),
                **registry.registered_by(name),
            }
        )
    return out


# --------------------------------------------------------------------------- #
# hot-path hook calls
# --------------------------------------------------------------------------- #


def first_result(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> Any:
    """``pm.hook.<name>(**kwargs)`` for a ``firstresult`` hook, without pluggy's call machinery when it is not needed.

    A pluggy call costs about a microsecond even when no plugin implements the
    hook; the request path calls several per request. With no implementation
    the answer is None; with exactly one plain implementation (not a wrapper)
    it is that function's return value, called with the arguments it names.
    Anything else, and every call while ``INTERLOCK_TRACE_PLUGINS`` traces the
    hooks, goes through pluggy. Implementations are looked up on every call, so
    a plugin registered at any time is honoured.
    """
    hook = getattr(pm.hook, name)
    if getattr(pm, _TRACED, False):
        return hook(**kwargs)
    impls = hook.get_hookimpls()
    if not impls:
        return None
    if len(impls) == 1:
        impl = impls[0]
        if not (impl.hookwrapper or impl.wrapper):
            return impl.function(*[kwargs[arg] for arg in impl.argnames])
    return hook(**kwargs)


def notify(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> None:
    """``pm.hook.<name>(**kwargs)`` for a hook whose results are not used; skipped when nothing implements it."""
    hook = getattr(pm.hook, name)
    if hook.get_hookimpls() or getattr(pm, _TRACED, False):
        hook(**kwargs)
