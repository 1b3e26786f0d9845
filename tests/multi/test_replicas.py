"""Three ``interlock serve`` processes sharing one Redis and one PostgreSQL, behind client-side round-robin.

What a platform team runs behind a load balancer: every test here starts real
processes with the real stores and asserts what must hold across them: a budget,
a breaker, round-robin positions, rate limits, the ledger after a SIGKILL, a Redis
restart, and budgets re-seeded once when every replica restarts together.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from interlock.core.estimate import estimate_prompt_tokens
from interlock.testing import FakeOpenAI
from interlock.testing._base import Fault
from tests.servers import RedisServer, free_port, postgres_database, unique_prefix

SECRET = "sk-upstream-secret-0123456789"
TEAM_KEY = "ik_team_search_key_0123456789abcdef"
HELLO = [{"role": "user", "content": "hello there, how are you today"}]
REPLICAS = 3


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.root + "/v1", api_key=TEAM_KEY, max_retries=0, **kwargs)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.root + path, timeout=5) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(self.root + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def output(self) -> str:
        return self.log_path.read_text()


@dataclass
class Cluster:
    """N replicas of one config; they share ``redis`` and ``database``."""

    tmp: Path
    redis: RedisServer
    database: str
    upstream: FakeOpenAI
    extra: str = ""
    prefix: str = field(default_factory=unique_prefix)
    replicas: list[Replica] = field(default_factory=list)

    def config(self) -> Path:
        path = self.tmp / "interlock.toml"
        path.write_text(f"""
[database]
url = "{self.database}"

[store]
url = "{self.redis.url}"
prefix = "{self.prefix}"
refresh = 0.2

[exporters.ledger]
flush_interval = 0.2

[providers.a]
type = "openai"
base_url = "{self.upstream.base_url}"
api_key = "{SECRET}"

[providers.b]
type = "openai"
base_url = "{self.upstream.base_url}"
api_key = "{SECRET}"

[providers.c]
type = "openai"
base_url = "{self.upstream.base_url}"
api_key = "{SECRET}"

[routes.rr]
strategy = "round-robin"
targets = [{{ model = "a/gpt-4o" }}, {{ model = "b/gpt-4o" }}, {{ model = "c/gpt-4o" }}]

[routes.primary]
chain = "a/gpt-4o-mini > b/gpt-4o"

[breaker]
failures = 3
cooldown = 60

[prices."gpt-4o"]
input = 1000000
output = 1000000

[prices."gpt-4o-mini"]
input = 1000000
output = 1000000

[[keys]]
key = "{TEAM_KEY}"
name = "search"
team = "search"
{self.extra}
""")
        return path

    def start(self, n: int = REPLICAS) -> list[Replica]:
        """Start ``n`` replicas at once (not one after the other) and wait until all answer."""
        exe = Path(sys.executable).with_name("interlock")
        config = self.config()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        started = []
        for _ in range(n):
            port = free_port()
            log_path = self.tmp / f"replica-{len(self.replicas) + len(started)}.log"
            with open(log_path, "w") as log:
                proc = subprocess.Popen([str(exe), "serve", "--config", str(config), "--port", str(port)],
                                        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=self.tmp)
            started.append(Replica(proc, port, log_path))
        for replica in started:
            wait_until(lambda r=replica: _healthy(r), f"replica on {replica.port} to answer", replica)
        self.replicas.extend(started)
        return started

    def stop(self, replicas: list[Replica] | None = None) -> None:
        """SIGTERM (graceful: in-flight requests finish, the ledger is flushed), then wait."""
        targets = self.replicas if replicas is None else replicas
        for r in targets:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in targets:
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        self.replicas = [r for r in self.replicas if r not in targets]

    def round_robin(self) -> Iterator[Replica]:
        return itertools.cycle(self.replicas)

    def ledger(self, sql: str) -> list[tuple[Any, ...]]:
        return _ledger_async(self.database, sql)


def _ledger_async(url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> list[tuple[Any, ...]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return [tuple(row) for row in (await conn.execute(text(sql))).all()]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _healthy(replica: Replica) -> bool:
    if replica.proc.poll() is not None:
        raise AssertionError(f"replica exited with {replica.proc.returncode}:\n{replica.output()}")
    try:
        return bool(replica.get("/health")["status"] == "ok")
    except OSError:
        return False


def wait_until(check: Callable[[], bool], what: str, replica: Replica | None = None, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}" + (f":\n{replica.output()}" if replica else ""))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []
    redis = RedisServer().start()
    upstream_cm = FakeOpenAI(models=["gpt-4o", "gpt-4o-mini"]).run_in_thread()
    upstream = upstream_cm.__enter__()

    def make(extra: str = "") -> Cluster:
        c = Cluster(tmp_path, redis, postgres_database(), upstream, extra)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()
        upstream_cm.__exit__(None, None, None)
        redis.close()


def chat(replica: Replica, model: str = "rr", **kwargs: Any) -> Any:
    return replica.client().chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=10, **kwargs)


# --------------------------------------------------------------------------- #


def test_a_team_budget_holds_across_replicas(cluster: Callable[..., Cluster]) -> None:
    budget = Decimal(500)
    c = cluster(f'[[budgets]]\nscope = "team:search"\ndaily_usd = {budget}\n')
    c.start()
    # what one request may cost at most, as every replica reserves it: ($1 a token) prompt estimate + max_tokens
    reserved = Decimal(estimate_prompt_tokens({"messages": HELLO}) + 10)
    replicas = c.round_robin()
    targets = [next(replicas) for _ in range(100)]

    def one(replica: Replica) -> tuple[int, Decimal]:
        try:
            raw = chat(replica)
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            return 429, Decimal(0)
        return 200, Decimal(raw.headers["x-interlock-cost-usd"])

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, targets))
    answered = [cost for status, cost in results if status == 200]
    spent = sum(answered, Decimal(0))
    # the bound: what in-flight reservations under-estimated (0 when every actual cost <= its reservation)
    bound = sum((max(Decimal(0), cost - reserved) for cost in answered), Decimal(0))
    print(f"budget ${budget}: {len(answered)} answered, {len(results) - len(answered)} rejected, spent ${spent}, "
          f"overspend ${max(Decimal(0), spent - budget)} (bound ${bound})")
    assert answered and len(answered) < 100, "the budget must both admit and reject"
    assert spent <= budget + bound
    # every replica's counter comes to the spend (reconciled, nothing left reserved)
    for r in c.replicas:
        wait_until(lambda r=r: {b["scope"]: Decimal(b["counted_usd"]) for b in r.get("/-/budgets")["data"]}
                   == {"team:search": spent}, "the counters to settle", r)
    c.stop()
    (rows,) = c.ledger("SELECT count(*), coalesce(sum(cost_usd), 0) FROM requests WHERE status = 200")
    assert rows[0] == len(answered) and Decimal(rows[1]) == spent


def test_a_breaker_opened_through_one_replica_protects_the_others(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    first, second, _ = c.start()
    c.upstream.add_fault(Fault(status=500, model="gpt-4o-mini", times=None))
    for _ in range(3):  # failures seen through replica one open a/gpt-4o-mini's breaker; b/gpt-4o answers
        assert chat(first, "primary").headers["x-interlock-provider"] == "b"
    wait_until(lambda: second.get("/health/providers")["targets"].get("a/gpt-4o-mini", {}).get("state") == "open",
               "replica two to see the breaker open", second)
    seen = len(c.upstream.requests)
    raw = chat(second, "primary")
    assert raw.headers["x-interlock-provider"] == "b"
    # replica two never tried a: its breaker is open for every replica
    assert [r.json["model"] for r in c.upstream.requests[seen:]] == ["gpt-4o"]


def test_round_robin_is_even_across_replicas(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    c.start()
    replicas = c.round_robin()
    served = Counter(chat(next(replicas)).headers["x-interlock-provider"] for _ in range(30))
    assert served == {"a": 10, "b": 10, "c": 10}


def test_sigkill_of_one_replica_loses_no_row_another_answered(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    victim, *others = c.start()
    answered: dict[str, list[str]] = {"victim": [], "others": []}
    counter = itertools.count()

    def one(replica: Replica) -> None:
        rid = f"req-{next(counter)}"
        try:
            chat(replica, extra_headers={"x-request-id": rid})
        except (openai.APIConnectionError, openai.APIStatusError):
            return
        answered["victim" if replica is victim else "others"].append(rid)

    replicas = itertools.cycle([victim, *others])
    with ThreadPoolExecutor(30) as pool:
        futures = [pool.submit(one, next(replicas)) for _ in range(300)]
        while len(answered["victim"]) < 40:
            time.sleep(0.01)
        victim.proc.send_signal(signal.SIGKILL)
        for f in futures:
            f.result()
    victim.proc.wait()
    c.replicas.remove(victim)
    c.stop()
    stored = {row[0] for row in c.ledger("SELECT id FROM requests")}
    lost_others = [rid for rid in answered["others"] if rid not in stored]
    lost_victim = [rid for rid in answered["victim"] if rid not in stored]
    print(f"SIGKILL: {len(answered['victim'])} answered by the killed replica, {len(lost_victim)} of them lost "
          f"(its unflushed batch); {len(answered['others'])} answered by the others, {len(lost_others)} lost")
    assert lost_others == []
    # at most what the killed replica answered within its last flush interval (0.2 s): never more than it answered
    assert len(lost_victim) < len(answered["victim"])


def test_redis_restarted_under_load(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    c.start()
    replicas = c.round_robin()
    statuses: Counter[int] = Counter()
    stop = False

    def load() -> None:
        while not stop:
            try:
                chat(next(replicas))
                statuses[200] += 1
            except openai.APIStatusError as exc:
                statuses[exc.status_code] += 1

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        wait_until(lambda: statuses[200] > 20, "traffic")
        c.redis.stop()
        wait_until(lambda: all(r.get("/health/providers")["store"]["degraded"] for r in c.replicas), "degraded")
        served_down = statuses[200]
        wait_until(lambda: statuses[200] > served_down + 20, "requests served while Redis is down")
        c.redis.start()
        wait_until(lambda: not any(r.get("/health/providers")["store"]["degraded"] for r in c.replicas), "recovery")
        stop = True
        for w in workers:
            w.result()
    assert set(statuses) == {200}, statuses  # on_error = "local": nothing refused
    # shared state is used again: round-robin positions are global once more
    replicas = c.round_robin()
    served = Counter(chat(next(replicas)).headers["x-interlock-provider"] for _ in range(30))
    assert served == {"a": 10, "b": 10, "c": 10}


def test_all_replicas_restarted_at_once_seed_budgets_once(cluster: Callable[..., Cluster]) -> None:
    c = cluster('[[budgets]]\nscope = "team:search"\ndaily_usd = 100000\n')
    c.start(1)
    spent = sum((Decimal(chat(c.replicas[0]).headers["x-interlock-cost-usd"]) for _ in range(5)), Decimal(0))
    c.stop()
    # Redis forgets everything (a restart without persistence); all replicas start together
    c.redis.stop()
    c.redis.start()
    c.start()
    for r in c.replicas:
        counted = {b["scope"]: Decimal(b["counted_usd"]) for b in r.get("/-/budgets")["data"]}
        assert counted["team:search"] == spent  # once, not three times


def test_a_rate_limit_holds_across_replicas(cluster: Callable[..., Cluster]) -> None:
    c = cluster("rpm = 10\n")  # (continues the [[keys]] table: the team key may make 10 requests a minute)
    c.start()
    for _ in range(2):  # a run that straddles a minute boundary sees two windows: run it again
        minute = int(time.time() // 60)
        replicas = c.round_robin()
        outcomes: Counter[int] = Counter()
        for _ in range(30):
            try:
                raw = chat(next(replicas))
                outcomes[200] += 1
                assert int(raw.headers["x-ratelimit-limit-requests"]) == 10
            except openai.RateLimitError as exc:
                outcomes[429] += 1
                assert exc.code == "rate_limit_exceeded" and int(exc.response.headers["retry-after"]) <= 60
        if int(time.time() // 60) == minute:
            break
        time.sleep(max(0.0, 60 - time.time() % 60) + 0.1)  # start the second try in a fresh window
    assert outcomes == {200: 10, 429: 20}  # ten in the minute, whichever replicas served them


def test_a_key_created_on_one_replica_works_on_the_others(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    first, second, third = c.start()
    created = first.post("/-/keys", {"name": "new", "team": "research"})
    t0 = time.monotonic()

    def accepted(replica: Replica) -> bool:
        try:
            openai.OpenAI(base_url=replica.root + "/v1", api_key=created["key"], max_retries=0).models.list()
            return True
        except openai.AuthenticationError:
            return False

    wait_until(lambda: accepted(second) and accepted(third), "the new key on every replica")
    print(f"key creation reached every replica in {time.monotonic() - t0:.2f}s")
    req = urllib.request.Request(first.root + f"/-/keys/{created['id']}", method="DELETE")
    urllib.request.urlopen(req, timeout=5).close()
    wait_until(lambda: not accepted(second) and not accepted(third), "the revocation on every replica")


def test_a_responses_conversation_continues_on_another_replica(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    first, second, _ = c.start()
    one = first.client().responses.create(model="rr", input="my name is Ada")
    # at once, on another replica: the first turn is not in the database yet, the store has it
    two = second.client().responses.create(model="rr", input="what is my name?", previous_response_id=one.id)
    assert two.previous_response_id == one.id
    # the upstream got the whole conversation (passed through as Responses input items, or as messages)
    assert "my name is Ada" in json.dumps(c.upstream.requests[-1].json)
