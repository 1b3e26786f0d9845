"""The price data set: refreshed from a URL, reported when stale or unreadable (never fatal), and
`interlock prices` showing what a model costs and which models have no price."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from interlock import cli
from interlock.accounting import price_data, price_report
from interlock.accounting.pricing import PriceTable
from interlock.core import config as config_mod
from interlock.core.config import ConfigError
from interlock.core.gateway import Gateway
from interlock.plugins.detection import detect
from interlock.testing import FakeOpenAI
from interlock.testing.gateway import running_gateway
from tests.conftest import SECRET, GatewayFactory

ROOT = Path(__file__).resolve().parents[2]

#: a small data set in the published JSON shape: gpt-4o at a made-up $1 / $4 (the snapshot says $2.5 / $10)
PUBLISHED = [
    {
        "id": "openai", "name": "OpenAI", "api_pattern": r"https://api\.openai\.com",
        "models": [
            {"id": "gpt-4o", "match": {"equals": "gpt-4o"}, "context_window": 128000,
             "prices": {"input_mtok": 1, "output_mtok": 4, "cache_read_mtok": 0.075}},
        ],
    },
]


def publish(tmp_path: Path, payload: Any = PUBLISHED) -> str:
    path = tmp_path / "published.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return f"file://{path}"


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "interlock.toml"
    path.write_text(body)
    return path


def price_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    return write_config(tmp_path, f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"

[providers.openai]
api_key = "{SECRET}"

[price_data]
file = "{tmp_path / 'prices.json'}"
update_url = "{url}"
{extra}
""")


# --------------------------------------------------------------------------- #
# refreshing
# --------------------------------------------------------------------------- #


def test_update_writes_the_data_file_and_later_tables_price_from_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = price_config(tmp_path, publish(tmp_path))
    assert cli.main(["prices", "--update", "--config", str(config)]) == 0
    assert "prices: wrote" in capsys.readouterr().out
    document = json.loads((tmp_path / "prices.json").read_text())
    assert document["providers"] == PUBLISHED and document["fetched_at"].startswith(str(datetime.date.today().year))

    cfg = config_mod.load(str(config))
    data = price_data.load(cfg.price_data)
    assert data.source == "refreshed" and data.path is not None
    table = PriceTable.for_config({}, None, data)
    price = table.lookup("openai", "gpt-4o")
    assert price is not None and price.source == "refreshed"
    assert (price.input, price.output, price.cached_input) == (Decimal("1"), Decimal("4"), Decimal("0.075"))  # exact

    assert cli.main(["prices", "gpt-4o", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "from refreshed data file" in out and "$1 per 1M tokens" in out and "$0.075 per 1M tokens" in out


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("not json at all", "did not return JSON"),
        ([{"id": "openai"}], "does not hold valid price data"),
        ([], "holds no providers"),
    ],
)
def test_a_failed_update_keeps_the_file_in_use_and_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: Any, says: str
) -> None:
    config = price_config(tmp_path, publish(tmp_path))
    assert cli.main(["prices", "--update", "--config", str(config)]) == 0
    before = (tmp_path / "prices.json").read_text()
    publish(tmp_path, payload)
    capsys.readouterr()
    assert cli.main(["prices", "--update", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert says in err and "unchanged" in err and "Traceback" not in err and err.count("\n") == 1
    assert (tmp_path / "prices.json").read_text() == before


def test_an_unreachable_update_url_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = price_config(tmp_path, "http://127.0.0.1:9/data.json")
    assert cli.main(["prices", "--update", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "cannot download http://127.0.0.1:9/data.json" in err and "Traceback" not in err


def test_an_unreadable_data_file_is_reported_and_the_snapshot_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = price_config(tmp_path, publish(tmp_path))
    (tmp_path / "prices.json").write_text('{"providers": "no"}')
    cfg = config_mod.load(str(config))
    with caplog.at_level(logging.WARNING, "interlock.prices"):
        data = price_data.load(cfg.price_data)
    assert data.source == "built-in" and data.problem is not None and "no 'providers' list" in data.problem
    assert "using the built-in snapshot" in caplog.text
    gateway = Gateway(cfg)  # never fatal: the gateway builds on the snapshot
    price = gateway.prices.lookup("openai", "gpt-4o")
    assert price is not None and price.input == Decimal("2.5")
    assert cli.main(["prices", "--config", str(config)]) == 0
    assert "the built-in snapshot is used" in capsys.readouterr().out


def test_a_stale_snapshot_is_reported_never_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = price_config(tmp_path, publish(tmp_path), 'stale_after = "1d"')
    assert cli.main(["prices", "--update", "--config", str(config)]) == 0
    document = json.loads((tmp_path / "prices.json").read_text())
    document["fetched_at"] = "2025-01-01T00:00:00+00:00"
    (tmp_path / "prices.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert cli.main(["prices", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "fetched 2025-01-01" in out and "stale: older than 1 days" in out
    gateway = Gateway(config_mod.load(str(config)))
    with caplog.at_level(logging.WARNING, "interlock.core.gateway"):
        gateway._report_price_data()
    assert "run `interlock prices --update`" in caplog.text


async def test_the_scheduled_updater_moves_a_running_gateway_onto_fresh_prices(
    tmp_path: Path, make_gateway: GatewayFactory
) -> None:
    async with FakeOpenAI() as fake:
        url = publish(tmp_path)
        gw = await make_gateway(f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"

[price_data]
file = "{tmp_path / 'prices.json'}"
update_url = "{url}"
refresh = "24h"
""")
        for _ in range(200):  # the first refresh runs at startup, in a thread
            if gw.gateway.prices.data is not None and gw.gateway.prices.data.source == "refreshed":
                break
            await asyncio.sleep(0.05)
        assert gw.gateway.prices.data is not None and gw.gateway.prices.data.source == "refreshed"
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        usage = raw.parse().usage
        assert usage is not None
        expected = (Decimal(usage.prompt_tokens) * 1 + Decimal(usage.completion_tokens) * 4) / 1_000_000
        assert Decimal(raw.headers["x-interlock-cost-usd"]) == expected


def test_price_data_settings_are_validated_with_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(tomllib.loads("""
[price_data]
refresh = "sometimes"
stale_after = 3
update_url = "ftp://x"
colour = "red"
"""), environ={})
    problems = dict(info.value.problems)
    assert "is not a duration" in problems["price_data.refresh"]
    assert "is not a duration" in problems["price_data.stale_after"]
    assert "http(s)" in problems["price_data.update_url"]
    assert "unknown key" in problems["price_data.colour"]
    cfg = config_mod.parse(tomllib.loads('[price_data]\nrefresh = "off"\n'), environ={})
    assert cfg.price_data.refresh is None and cfg.price_data.file == price_data.DEFAULT_FILE


# --------------------------------------------------------------------------- #
# interlock prices --missing
# --------------------------------------------------------------------------- #


async def test_missing_lists_configured_and_recently_routed_models_without_a_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeOpenAI(models=("gpt-4o", "house-model", "our-finetune")) as fake:
        body = f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"

[providers.openai]
base_url = "{fake.base_url}"
api_key = "{SECRET}"

[routes.house]
chain = "openai/house-model > openai/gpt-4o"
"""
        async with running_gateway(body, workdir=tmp_path) as gw:  # closing it writes the ledger
            await gw.client.chat.completions.create(
                model="openai/our-finetune", messages=[{"role": "user", "content": "x"}]
            )
        config = write_config(tmp_path, body)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["prices", "--missing", "--config", str(config)])
        out = capsys.readouterr().out.splitlines()
        assert code == 1
        assert out == [
            "openai/house-model (openai): no price (route 'house'); add [prices.\"house-model\"]",
            "openai/our-finetune (openai): no price (routed 1 times); add [prices.\"our-finetune\"]",
        ]
        # priced by an override: nothing missing, nothing printed
        write_config(tmp_path, body + '\n[prices."house-model"]\ninput = 1\noutput = 2\n'
                     '\n[prices."openai/our-finetune"]\ninput = 1\noutput = 2\n')
        code = await asyncio.to_thread(cli.main, ["prices", "--missing", "--config", str(config)])
        assert code == 0 and capsys.readouterr().out == ""


def _documented_configs() -> list[tuple[str, str]]:
    """Every TOML block of the README and docs/, with where it is."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)):
            out.append((f"{path.name}#{i}", block))
    return out


class _AnyEnv(dict[str, str]):
    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return "x" * 32


@pytest.mark.parametrize(("where", "block"), _documented_configs(), ids=[w for w, _ in _documented_configs()])
def test_every_model_a_documented_config_routes_to_has_a_price(where: str, block: str) -> None:
    registry = Gateway(config_mod.Config(), environ={}).registry
    keys = {cls.env_key: "x" * 32 for cls in registry.providers.values() if getattr(cls, "env_key", None)}
    try:
        cfg = config_mod.parse(tomllib.loads(block), environ=_AnyEnv())
        cfg.auto_providers = True  # as on a machine with every provider's key set
        gateway = Gateway(cfg, environ=keys)
    except ConfigError:
        pytest.skip(f"{where} is a fragment of a config, not a whole one")
    unpriced = price_report.missing(gateway.prices, price_report.configured(gateway))
    assert unpriced == [], where


def test_every_model_named_in_the_readme_docs_and_demo_has_a_price() -> None:
    from interlock.testing import demo

    table = PriceTable.builtin()
    texts = [(ROOT / "README.md").read_text(), *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]
    named = set()
    for text in texts:  # whole quoted or chained names: `gpt-4o`, "claude-...", a > b > c
        for word in re.findall(r"(?<=[`\"'> ])([a-z][a-z0-9.@:-]*[0-9a-z])(?=[`\"' <,])", text):
            if detect(word) is not None and any(c.isdigit() for c in word):
                named.add(word)
    assert {"gpt-4o", "claude-sonnet-4-20250514", "gemini-2.0-flash"} <= named
    unpriced = sorted(m for m in named if table.lookup(str(detect(m)), m) is None)
    assert unpriced == []
    cfg, _ = demo.demo_config()
    gateway = Gateway(cfg, environ={})
    assert price_report.missing(gateway.prices, price_report.configured(gateway)) == []
