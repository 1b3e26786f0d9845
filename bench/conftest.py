"""pytest settings for bench/ only: pytest-benchmark keeps saved runs under .cache/ (git-ignored)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    storage = getattr(config.option, "benchmark_storage", None)
    if storage in ("file://./.benchmarks", "./.benchmarks", ".benchmarks"):
        config.option.benchmark_storage = "file://./.cache/bench/hot-path"
