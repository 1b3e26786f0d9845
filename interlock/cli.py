"""The ``interlock`` command line: serve, check, plugins, explain, costs, prices."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from interlock.core import config as config_mod
from interlock.core.config import Config, ConfigError
from interlock.core.plugins import PluginError, plugin_info

SWITCH_INTERVAL = 0.0001  # seconds; see cmd_serve
# the cyclic GC's young-generation threshold in `serve` (CPython's default: 700); see _freeze_startup_objects
GC_YOUNG_THRESHOLD = 10_000


def _gateway(cfg: Config) -> Any:
    from interlock.core.gateway import Gateway

    return Gateway(cfg)


def _load(path: str | None) -> Config:
    return config_mod.load(path or os.environ.get("INTERLOCK_CONFIG"))


def cmd_serve(args: argparse.Namespace) -> int:
    from interlock.core import http_server, logs
    from interlock.core.app import create_app

    from interlock import workers as workers_mod

    try:
        workers = workers_mod.parse_workers(args.workers)
    except ValueError as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 2
    if workers > 1 and args.worker_fd is None:
        return _serve_workers(args, workers)
    link = workers_mod.WorkerLink(args.worker_fd) if args.worker_fd is not None else None
    if link is not None:
        # a SIGHUP forwarded while this worker starts must not kill it (the default action);
        # _reload_on_sighup takes the signal over once the loop runs
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        from interlock.core import threads

        threads.no_idle_threads()  # the workers share the SQLite ledger's write lock (see no_idle_threads)
    cfg = _load(args.config)
    fakes: list[Any] = []  # (fake server, port) pairs for --demo
    if args.demo:
        from interlock.testing import demo

        cfg, fakes = demo.demo_config(cfg)
        print(f"interlock: {demo.BANNER}", flush=True)
        if cfg.telemetry.get("tree"):
            print(f"interlock: {demo.TRACES_HINT}", flush=True)
    if args.host:
        cfg.host = args.host
    if args.port is not None:
        cfg.port = args.port
    gateway = _gateway(cfg)
    if link is not None:
        gateway.reload_peers = link.reload_all
    redactor = logs.setup(cfg.log_level, gateway.secrets())
    gateway.on_reload.append(lambda gw: redactor.update(gw.secrets()))
    if link is None:  # a worker's supervisor printed these once for all workers
        _print_banner(cfg, gateway)
        print(f"interlock: listening on http://{cfg.host}:{cfg.port}", flush=True)
    app = create_app(gateway)
    if fakes:
        from interlock.testing import demo

        app.cleanup_ctx.insert(0, demo.fakes_context(fakes))  # fakes up before the gateway, down after
        print('interlock: try: curl -s localhost:%d/v1/chat/completions -H "content-type: application/json" '
              '-d \'{"model": "smart", "messages": [{"role": "user", "content": "hi"}]}\' -i' % cfg.port, flush=True)
    app.on_startup.append(_reload_on_sighup)
    if link is not None:
        app.on_startup.append(link.watch)  # the supervisor gone (even killed): this worker stops
    app.on_startup.append(_freeze_startup_objects)
    # span export and ledger writes run on threads; when one of them holds the GIL the event loop
    # waits up to the switch interval for it (5 ms by default), which is what a request's p99 sees
    sys.setswitchinterval(SWITCH_INTERVAL)
    # a worker shares host:port with the others (SO_REUSEPORT: the kernel spreads connections); `ready`
    # is called once the socket listens, which is when the worker reports itself ready. The server bounds
    # slow, idle and excess client connections ([server] header_timeout, keepalive_timeout, max_connections).
    http_server.run(
        app, host=cfg.host, port=cfg.port, limits=cfg.limits, loop=_event_loop(),
        ready=None if link is None else link.ready, reuse_port=True if link is not None else None,
    )
    return 0


def _print_banner(cfg: Config, gateway: Any) -> None:
    """What serve prints before it listens: the config, its providers and routes."""
    providers = ", ".join(f"{n} ({p.type_name})" for n, p in gateway.providers.items()) or "none"
    routes = ", ".join(gateway.resolver.routes) or "none"
    print(f"interlock: config {cfg.source or 'embedded defaults'}", flush=True)
    print(f"interlock: providers {providers}", flush=True)
    print(f"interlock: routes {routes}", flush=True)
    if not gateway.providers:
        print("interlock: no provider is configured; set e.g. OPENAI_API_KEY or pass --config FILE", flush=True)


def _serve_workers(args: argparse.Namespace, workers: int) -> int:
    """``serve --workers N`` (N > 1): validate once, then supervise N worker processes (interlock.workers)."""
    from interlock import workers as workers_mod
    from interlock.core import logs

    cfg = _load(args.config)
    if args.host:
        cfg.host = args.host
    if args.port is not None:
        cfg.port = args.port
    if problem := workers_mod.workers_problem(cfg, workers, demo=args.demo):
        print(f"interlock: {problem}", file=sys.stderr)
        return 2
    gateway = _gateway(cfg)  # validates providers, routes and plugins as a single process would
    logs.setup(cfg.log_level, gateway.secrets())
    _print_banner(cfg, gateway)
    del gateway
    supervisor = workers_mod.Supervisor(
        workers_mod.worker_argv(args, cfg), workers,
        listening=f"interlock: listening on http://{cfg.host}:{cfg.port}",
    )
    return asyncio.run(supervisor.run())


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (the ``speed`` extra; a default dependency on Linux and macOS):
    its transports cut the per-request socket cost that dominates a gateway's profile."""
    if os.environ.get("INTERLOCK_NO_UVLOOP"):
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _freeze_startup_objects(app: Any) -> None:
    """Move everything alive after start-up (modules, config, plugins) out of the cyclic GC's view.

    Those objects live as long as the process; without this every full collection
    walks all of them (hundreds of thousands) and stalls the event loop for
    milliseconds, which is what a request's p99 latency sees.

    The young-generation threshold goes from 700 to ``GC_YOUNG_THRESHOLD``. The
    count it is compared with is container objects allocated minus those freed,
    so 700 is crossed many times within a request's own short-lived work (50
    requests in flight hold more than that), and each young collection walks
    everything the in-flight requests hold: measured, ~2,800 young collections
    in 22k requests, ~30 µs of CPU per request. With 10,000 the count is only
    crossed by garbage that outlives reference counting (cycles), which is
    still collected, in bigger but much rarer passes.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _reload_on_sighup(app: Any) -> None:
    """``kill -HUP <pid>`` reloads routes, rules, targets and providers without a restart."""
    import logging
    import signal

    from interlock.core.app import GATEWAY

    gateway = app[GATEWAY]
    log = logging.getLogger("interlock")

    def reload() -> None:
        try:
            for note in gateway.reload_from_source():
                log.warning("reload: %s", note)
        except (ConfigError, PluginError) as exc:
            log.error("reload rejected, the running configuration stays in force:\n%s", exc)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    gateway = _gateway(cfg)
    print(f"config: {cfg.source or 'embedded defaults'} is valid")
    from interlock.accounting.ledger import safe_url

    print(f"database: {safe_url(cfg.database_url)}")  # a PostgreSQL URL may carry a password
    print("providers:")
    for name, provider in gateway.providers.items():
        d = provider.describe()
        print(f"  {name}: type={d['type']} base_url={d['base_url']} key={d['key']}")
    if not gateway.providers:
        print("  (none)")
    print("routes:")
    for name, route in gateway.resolver.routes.items():
        order = " > ".join(f"{t.key}" + (f" (weight {t.weight:g})" if route.strategy != "ordered" else "") for t in route.targets)
        print(f"  {name} [{route.strategy}]: {order}")
    if not gateway.resolver.routes:
        print("  (none; bare model names are auto-detected)")
    if gateway.resolver.rules:
        print("rules (first match wins):")
        for i, rule in enumerate(gateway.resolver.rules, 1):
            print(f"  {i}. {rule.name}: {rule.describe()} -> {rule.route}")
    if cfg.keys:  # ids, names, teams and tags only: never a key or its hash
        print("gateway API keys (plus any created with POST /-/keys):")
        for spec in cfg.keys:
            k = spec.record
            print(f"  {k.id}: name={k.name or '-'} team={k.team or '-'} tags={','.join(k.tags) or '-'}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    gateway = _gateway(cfg)
    info = plugin_info(gateway.pm, gateway.registry)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for p in info:
        registered = ", ".join(
            f"{kind} {', '.join(p[kind])}" for kind in ("providers", "strategies", "exporters") if p[kind]
        )
        origin = "built-in" if p["builtin"] else p["distribution"] or "?"
        print(f"{p['name']} {p['version']} ({origin}): {registered or 'hooks ' + ', '.join(p['hooks'])}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from interlock.core.errors import GatewayError
    from interlock.core.types import RequestContext

    cfg = _load(args.config)
    gateway = _gateway(cfg)
    body: dict[str, Any] = {"model": args.model, "messages": [{"role": "user", "content": ""}]}
    if args.request:
        with open(args.request, encoding="utf-8") as fh:
            body = json.load(fh)
        body["model"] = args.model
    headers: dict[str, str] = {}
    for h in args.header or ():
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            print(f"--header {h!r}: expected 'NAME: VALUE'", file=sys.stderr)
            return 2
        headers[name.strip().lower()] = value.strip()
    tags = [t.strip() for t in headers.get("x-interlock-tags", "").split(",") if t.strip()]
    ctx = RequestContext(
        request_id="explain", endpoint="chat", body=body, stream=bool(body.get("stream")), headers=headers, tags=tags,
        user=body.get("user") if isinstance(body.get("user"), str) else None,
    )
    try:
        plan = asyncio.run(gateway.router.plan(ctx, args.model))
    except GatewayError as err:
        print(f"{args.model}: {err.message}", file=sys.stderr)
        return 1
    route, strategy, order = plan.route, plan.strategy, plan.order
    if route.implicit:
        t = route.targets[0]
        how = "explicit instance/model" if args.model.startswith(f"{t.provider}/") else "auto-detected from the model name"
        print(f"{args.model}: no route; {how} -> provider {t.provider} ({gateway.providers[t.provider].type_name})")
    else:
        print(f"{args.model}: route {route.name!r}, strategy {strategy!r}")
    rules = gateway.resolver.rules
    if ctx.rule:  # set by plan() when a select_route answer (a rule, or a plugin) changed the route
        shown = ctx.rule
        for rule in rules:
            prefix = f"rule {rule.name!r}: "
            if shown.startswith(prefix):
                shown = f"{rule.name} ({shown[len(prefix):]})"
                break
        print(f"  rule: {shown}")
    elif rules:
        print(f"  rule: none changed the route ({len(rules)} configured)")
    for i, t in enumerate(order, 1):
        extras = [f"provider type {gateway.providers[t.provider].type_name}", f"weight {t.weight:g}"]
        extras += [f"{k} {v:g}" for k, v in (("timeout", t.timeout), ("latency_threshold", t.latency_threshold)) if v]
        if t.context_window:
            extras.append(f"context window {t.context_window}")
        print(f"  {i}. {t.provider}/{t.model}  ({', '.join(extras)})")
    for note in plan.reasons:
        if not note[:1].isdigit():  # the numbered reasons are the list above
            print(f"  note: {note}")
    for skipped in plan.skipped:
        print(f"  skipped: {skipped}")
    s = plan.settings
    knobs = {k: getattr(s, k) for k in ("retries", "timeout", "latency_threshold", "total_timeout", "hedge_delay",
                                         "hedge_percentile", "continue_stream") if getattr(s, k)}
    if knobs:
        print("  settings: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    """Spend (or recent alerts) straight from the ledger database, read-only."""
    from interlock.accounting import spend
    from interlock.accounting.ledger import safe_url

    try:
        by = spend.parse_by(args.by)
        since = spend.parse_duration(args.since or ("7d" if args.anomalies else "24h"))
    except ValueError as exc:
        print(f"interlock costs: {exc}", file=sys.stderr)
        return 2
    url = _load(args.config).database_url
    path = spend.sqlite_path(url)
    if path is not None and not os.path.isfile(path):
        print(f"interlock costs: no ledger database at {os.path.abspath(path)} ({safe_url(url)}); the gateway "
              "creates it when it starts (or pass --config with the [database] url it uses)", file=sys.stderr)
        return 1

    async def read() -> Any:
        engine = spend.open_read_only(url)
        try:
            return await (spend.anomalies(engine, since) if args.anomalies else spend.spend(engine, by, since))
        finally:
            await engine.dispose()

    try:
        result = asyncio.run(read())
    except Exception as exc:  # unreachable server, unusable URL, not a ledger
        print(f"interlock costs: cannot read the ledger at {safe_url(url)}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if args.anomalies:
        print(json.dumps(spend.alerts_json(result), indent=2) if args.json else spend.format_alerts(result, since))
    else:
        print(json.dumps(result.to_json(), indent=2) if args.json else spend.format_report(result))
    return 0


def cmd_prices(args: argparse.Namespace) -> int:
    """What models cost and where the price comes from; unpriced models; refresh the data set."""
    from interlock.accounting import price_data, price_report, spend
    from interlock.accounting.ledger import safe_url

    cfg = _load(args.config)
    if args.update:
        try:
            fresh = price_data.update(cfg.price_data)
        except (OSError, ValueError) as exc:
            print(f"interlock prices: {exc}; the prices in use are unchanged", file=sys.stderr)
            return 1
        print(f"prices: wrote {cfg.price_data.file}: {fresh.describe()}")
        return 0
    gateway = _gateway(cfg)
    table = gateway.prices
    if args.missing:
        targets = price_report.configured(gateway)
        path = spend.sqlite_path(cfg.database_url)
        if path is None or os.path.isfile(path):  # a ledger that exists: what was routed lately

            async def read() -> list[price_report.Target]:
                engine = spend.open_read_only(cfg.database_url)
                try:
                    return await price_report.routed(engine, spend.parse_duration(args.since))
                finally:
                    await engine.dispose()

            try:
                targets += asyncio.run(read())
            except Exception as exc:  # no ledger tables yet, an unreachable server: say so, list the config's
                print(f"interlock prices: cannot read the ledger at {safe_url(cfg.database_url)} ({type(exc).__name__}); "
                      "listing configured models only", file=sys.stderr)
        unpriced = price_report.missing(table, targets)
        if args.json:
            print(json.dumps([{"provider": t.provider, "provider_type": t.provider_type, "model": t.model,
                               "why": t.why} for t in unpriced], indent=2))
        for t in unpriced if not args.json else ():
            print(f"{t.provider}/{t.model} ({t.provider_type}): no price ({t.why}); add [prices.\"{t.model}\"]")
        return 1 if unpriced else 0
    if not args.model:
        for line in price_report.data_summary(table, cfg.price_data.stale_after, table.overrides()):
            print(line)
        return 0
    if args.provider:
        provider = gateway.providers.get(args.provider)
        ptype = provider.type_name if provider is not None else args.provider
        targets = [price_report.Target(args.provider, ptype, args.model, "--provider")]
    else:
        from interlock.core.resolve import Unresolved

        try:
            route = gateway.resolver.resolve(args.model)
        except Unresolved as exc:
            print(f"interlock prices: {args.model}: {exc}; name a provider with --provider TYPE", file=sys.stderr)
            return 1
        targets = [price_report.Target(t.provider, gateway.providers[t.provider].type_name, t.model,
                                       f"route {route.name!r}") for t in route.targets]
    priced = [(t, table.lookup(t.provider_type, t.model, t.provider)) for t in targets]
    if args.json:
        print(json.dumps([{"provider": t.provider, "provider_type": t.provider_type, "model": t.model,
                           "price": None if price is None else price_report.price_json(price)}
                          for t, price in priced], indent=2))
    else:
        print("\n".join(price_report.format_price(t, price, table) for t, price in priced))
    return 0 if all(price is not None for _, price in priced) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description="An observability-first LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML config file (default: embedded defaults)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 4000)")
    serve.add_argument("--demo", action="store_true", help="simulated local providers (one flaky), no keys needed")
    serve.add_argument("--workers", default="1", metavar="N|auto",
                       help="worker processes sharing the port (default 1; auto = one per CPU; more than one "
                            "needs [store] url)")
    serve.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # internal: a worker of --workers
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config and print the resolved routes")
    check.add_argument("--config", help="TOML config file (default: embedded defaults)")
    check.set_defaults(func=cmd_check)

    plugins = sub.add_parser("plugins", help="list plugins and what they registered")
    plugins.add_argument("--config", help="TOML config file")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=cmd_plugins)

    explain = sub.add_parser("explain", help="dry run: which route and targets a model name gets")
    explain.add_argument("model")
    explain.add_argument("--config", help="TOML config file")
    explain.add_argument("--request", help="a JSON chat request to evaluate routing rules against")
    explain.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'", help="a request header for header and tag rules (repeatable)"
    )
    explain.set_defaults(func=cmd_explain)

    costs = sub.add_parser("costs", help="spend from the ledger, grouped (or recent cost alerts)")
    costs.add_argument("--by", default="model", help="comma-separated: model, provider, team, tag, route, user, "
                       "api_key, protocol (default model)")
    costs.add_argument("--since", help="window: 30m, 24h, 7d, 2w (default 24h; 7d with --anomalies)")
    costs.add_argument("--json", action="store_true", help="machine-readable output (costs as exact decimal strings)")
    costs.add_argument("--anomalies", action="store_true", help="list recent budget and anomaly alerts instead")
    costs.add_argument("--config", help="TOML config file (its [database] url is read)")
    costs.set_defaults(func=cmd_costs)

    prices = sub.add_parser("prices", help="what a model costs per billing dimension, unpriced models, refresh prices")
    prices.add_argument("model", nargs="?", help="a model name or route (its targets are priced)")
    prices.add_argument("--provider", help="price MODEL on this provider instance or type")
    prices.add_argument("--missing", action="store_true",
                        help="list configured and recently routed models without a price (exit 1 if any)")
    prices.add_argument("--since", default="7d", help="with --missing: how far back the ledger is read (default 7d)")
    prices.add_argument("--update", action="store_true", help="download the current price data ([price_data] file)")
    prices.add_argument("--json", action="store_true", help="machine-readable output (exact decimal strings)")
    prices.add_argument("--config", help="TOML config file")
    prices.set_defaults(func=cmd_prices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, PluginError) as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
