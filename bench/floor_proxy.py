"""The floor: a bare aiohttp + uvloop proxy that does nothing but forward one chat request.

No routing, no validation, no telemetry, no ledger: it parses the body, posts it
to the upstream through one shared session and returns the answer. Whatever it
adds over the direct upstream is the cost of the framework (two HTTP hops in
Python) on this machine, which no gateway built on aiohttp can go below.
bench/run.py measures it beside the gateways (latency at c=1 and throughput with
the instant upstream) and bench/instructions.py counts its instructions; by hand,
next to bench/upstream.py:

    taskset -c 1 .venv/bin/python bench/upstream.py --port 19100:0 &
    taskset -c 0 .venv/bin/python bench/floor_proxy.py --port 19201 --upstream http://127.0.0.1:19100 &
    # then wrk at -c50 and -c1 against http://127.0.0.1:19201/v1/chat/completions (see bench/wrk_post.lua)
"""

from __future__ import annotations

import argparse

import orjson
import uvloop
from aiohttp import ClientSession, TCPConnector, web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=19201)
    parser.add_argument("--upstream", default="http://127.0.0.1:19100")
    args = parser.parse_args()
    url = f"{args.upstream}/v1/chat/completions"
    session: dict[str, ClientSession] = {}

    async def chat(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        body["model"] = "gpt-4o-mini"
        async with session["s"].post(url, data=orjson.dumps(body),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}) as r:
            data = await r.read()
        return web.Response(body=data, content_type="application/json")

    async def startup(app: web.Application) -> None:
        session["s"] = ClientSession(connector=TCPConnector(limit=0))

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.on_startup.append(startup)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
