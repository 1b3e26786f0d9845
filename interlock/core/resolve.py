"""From names to targets: provider instances, routes, and model-name resolution.

A model name a client sends (or a chain element in config) is, in this order:

1. a route name (``[routes.smart]``);
2. ``instance/model`` where ``instance`` is a configured provider instance, or
   ``type/model`` where ``type`` is a registered provider type (``openrouter/openai/gpt-4o``);
3. a bare model name, auto-detected through the ``resolve_model`` hook
   (``gpt-4o`` -> openai, ``claude-...`` -> anthropic).

Anything else is an unknown model, reported with what was tried.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pluggy

from interlock.core.errors import ConfigError, GatewayError
from interlock.core.plugins import Registry
from interlock.core.provider import HttpPool, Provider, ProviderSettings, Secret
from interlock.core.route_settings import RouteSettings, RouteSpec
from interlock.core.rules import Rule
from interlock.core.types import Route, Target

#: alternative spellings of provider types accepted as ``type/model`` prefixes
TYPE_ALIASES: dict[str, str] = {
    "google": "gemini",
    "vertex_ai": "vertex",
    "azure_openai": "azure",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "mistralai": "mistral",
    "x-ai": "xai",
}

_IMPLICIT_CACHE_MAX = 4096


class Unresolved(Exception):
    """A name did not resolve; the message says why and what was tried."""

    def __init__(self, message: str, code: str = "model_not_found") -> None:
        super().__init__(message)
        self.code = code


def build_providers(
    configured: Mapping[str, ProviderSettings],
    registry: Registry,
    http: HttpPool,
    environ: Mapping[str, str] = os.environ,
    *,
    auto_providers: bool = False,
    source: str | None = None,
) -> dict[str, Provider]:
    """Instantiate every configured provider (and with ``auto_providers``, every one its env enables).

    ``configured`` are the config's ``[providers.*]`` tables; problems are raised as
    one :class:`ConfigError` naming ``source``.
    """
    problems: list[tuple[str, str]] = []
    out: dict[str, Provider] = {}
    for name, settings in configured.items():
        cls = registry.providers.get(settings.type)
        if cls is None:
            known = ", ".join(sorted(registry.providers)) or "none"
            problems.append((f"providers.{name}.type", f"unknown provider type {settings.type!r} (registered: {known})"))
            continue
        # a provider table without api_key/base_url falls back to the standard env vars
        if settings.api_key is None and (key := cls.key_from_env(environ)):
            settings.api_key = Secret(key)
        if settings.base_url is None and cls.env_base_url and environ.get(cls.env_base_url):
            settings.base_url = environ[cls.env_base_url]
        for option, value in cls.options_from_env(environ).items():
            settings.options.setdefault(option, value)  # the table's own value wins
        settings.environ = environ
        for key, msg in cls.validate(settings):
            problems.append((f"providers.{name}.{key}", msg))
        out[name] = cls(settings, http)
    if auto_providers:
        for type_name, cls in registry.providers.items():
            if type_name in out or type_name in configured:
                continue
            if not cls.enabled_by_env(environ):
                continue
            key = cls.key_from_env(environ)
            base_url = environ.get(cls.env_base_url) if cls.env_base_url else None
            if cls.requires_base_url and not (base_url or cls.default_base_url):
                continue
            settings = ProviderSettings(
                name=type_name, type=type_name, base_url=base_url, api_key=Secret(key) if key else None,
                options=cls.options_from_env(environ), environ=environ,
            )
            if not cls.validate(settings):
                out[type_name] = cls(settings, http)
    if problems:
        raise ConfigError(problems, source)
    return out


class Resolver:
    """Resolves model names to routes; built once per configuration from its routes, rules and plugins."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        registry: Registry,
        providers: dict[str, Provider],
        routes: Mapping[str, RouteSpec],
        rules: Sequence[Rule] = (),
        source: str | None = None,
    ) -> None:
        self.pm = pm
        self.registry = registry
        self.providers = providers
        self._implicit: dict[str, Route] = {}
        self.routes: dict[str, Route] = {}
        self.default_settings = RouteSettings()
        self.rules: list[Rule] = list(rules)  # [[rules]], for the select_route hook
        problems: list[tuple[str, str]] = []
        for name, spec in routes.items():
            if spec.strategy not in registry.strategies:
                known = ", ".join(sorted(registry.strategies))
                problems.append((f"routes.{name}.strategy", f"unknown strategy {spec.strategy!r} (registered: {known})"))
            targets = self._expand(spec, routes, [name], problems)
            self.routes[name] = Route(name, targets, spec.strategy, spec.settings)
        for i, rule in enumerate(self.rules):
            if rule.route not in routes:
                known = ", ".join(sorted(routes)) or "none"
                msg = f"rule {rule.name!r} sends requests to {rule.route!r}, which is not a route (routes: {known})"
                problems.append((f"rules[{i}].route", msg))
        if problems:
            raise ConfigError(problems, source)

    # -- config time ------------------------------------------------------ #

    def _expand(
        self, spec: RouteSpec, specs: Mapping[str, RouteSpec], stack: list[str], problems: list[tuple[str, str]]
    ) -> list[Target]:
        targets: list[Target] = []
        for i, (ref, weight, ts) in enumerate(spec.elements):
            path = f"routes.{spec.name}.{spec.key}[{i}]"
            if not ref:
                continue
            if ref in specs:
                if ref in stack:
                    problems.append((path, f"route cycle: {' > '.join([*stack, ref])}"))
                    continue
                for t in self._expand(specs[ref], specs, [*stack, ref], problems):
                    targets.append(replace(t, weight=t.weight * weight))
                continue
            try:
                t = self.resolve_target(ref)
            except Unresolved as exc:
                problems.append((path, str(exc)))
                continue
            targets.append(Target(t.provider, t.model, weight, ts.timeout, ts.latency_threshold, ts.context_window))
        return targets

    # -- request time ----------------------------------------------------- #

    def resolve(self, model: str) -> Route:
        """The route for a client's ``model``; raises a 404 :class:`GatewayError` if none."""
        route = self.routes.get(model) or self._implicit.get(model)
        if route is not None:
            return route
        try:
            target = self.resolve_target(model)
        except Unresolved as exc:
            raise GatewayError(404, str(exc), code=exc.code, param="model") from None
        route = Route(model, [target], "ordered", self.default_settings, implicit=True)
        if len(self._implicit) < _IMPLICIT_CACHE_MAX:  # bounded: clients choose these names
            self._implicit[model] = route
        return route

    def resolve_target(self, ref: str) -> Target:
        """Resolve a non-route name to one target, or raise :class:`Unresolved`."""
        if "/" in ref:
            prefix, rest = ref.split("/", 1)
            if prefix in self.providers:
                if not rest:
                    raise Unresolved(f"{ref!r} names provider instance {prefix!r} but no model")
                return Target(prefix, rest)
            ptype = TYPE_ALIASES.get(prefix, prefix)
            if ptype in self.registry.providers and rest:
                return Target(self._instance_of(ptype, ref), rest)
        ptype = self.pm.hook.resolve_model(model=ref, provider_types=list(self.registry.providers))
        if ptype:
            return Target(self._instance_of(ptype, ref), ref)
        routes = ", ".join(sorted(self.routes)) or "none"
        instances = ", ".join(sorted(self.providers)) or "none"
        raise Unresolved(
            f"unknown model {ref!r}: it is not a route (routes: {routes}), not instance/model "
            f"(instances: {instances}), and no provider's model patterns match it. "
            f"Use 'instance/model' to name a provider explicitly."
        )

    def _instance_of(self, ptype: str, ref: str) -> str:
        if ptype in self.providers and self.providers[ptype].type_name == ptype:
            return ptype
        for name, provider in self.providers.items():
            if provider.type_name == ptype:
                return name
        cls = self.registry.providers.get(ptype)
        if cls is None:
            raise Unresolved(f"model {ref!r} was detected as provider type {ptype!r}, which no plugin registers")
        # keyless providers (local servers such as Ollama) are enabled by their base-URL variable
        var = cls.env_key if cls.requires_key else (cls.env_base_url or cls.env_key)
        how = f"set {var} or add a [providers.{ptype}] table" if var else f"add a [providers.{ptype}] table"
        raise Unresolved(
            f"model {ref!r} is served by provider {ptype!r}, which is not configured: {how}",
            code="provider_not_configured",
        )
