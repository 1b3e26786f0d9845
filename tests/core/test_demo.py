"""``interlock serve --demo``: the real gateway in front of simulated providers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import openai

from tests.conftest import ServeProcess


def test_demo_routes_and_falls_back_without_any_key(serve: Callable[..., ServeProcess]) -> None:
    sp = serve("--demo")
    assert "DEMO MODE" in sp.output()
    with openai.OpenAI(base_url=sp.base_url, api_key="unused", max_retries=0) as client:
        seen: Counter[str] = Counter()
        for _ in range(40):
            raw = client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.parse().choices[0].message.content.startswith("Fake reply")
            seen[raw.headers["x-interlock-provider"] + ":" + raw.headers["x-interlock-fallback"]] += 1
        # the flaky simulated provider fails now and then; the route hides it by falling back
        assert seen["openai:false"] > 0
        assert seen["backup:true"] > 0
        stream = client.chat.completions.create(
            model="balanced", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("Fake reply")
