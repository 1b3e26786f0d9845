"""Token estimates (core.estimate): the worst case a request may use, as budgets reserve it."""

from __future__ import annotations

from typing import Any

from interlock.core.estimate import IMAGE_TOKENS_LOW, estimate_input_tokens, worst_case_usage
from interlock.core.types import RequestContext


def chat(**body: Any) -> RequestContext:
    return RequestContext(request_id="r", endpoint="chat", body={"model": "m", **body})


def test_the_worst_case_takes_the_requests_own_output_limit_first() -> None:
    messages = [{"role": "user", "content": "x" * 40}]  # 10 tokens
    assert worst_case_usage(chat(messages=messages), 4096).prompt_tokens == 10
    assert worst_case_usage(chat(messages=messages), 4096).completion_tokens == 4096  # no limit: the allowance
    assert worst_case_usage(chat(messages=messages, max_tokens=50), 4096).completion_tokens == 50
    both = chat(messages=messages, max_tokens=50, max_completion_tokens=70)
    assert worst_case_usage(both, 4096).completion_tokens == 70  # the newer name wins
    assert worst_case_usage(chat(messages=messages, max_tokens=True), 9).completion_tokens == 9  # not a number


def test_every_choice_may_use_the_whole_limit() -> None:
    assert worst_case_usage(chat(messages=[], max_tokens=10, n=3), 4096).completion_tokens == 30
    assert worst_case_usage(chat(messages=[], max_tokens=10, n=0), 4096).completion_tokens == 10


def test_images_count_at_their_fixed_price() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000, "detail": "low"}}
    usage = worst_case_usage(chat(messages=[{"role": "user", "content": [image]}], max_tokens=1), 0)
    assert usage.prompt_tokens == IMAGE_TOKENS_LOW  # the base64 data is not text


def test_embeddings_use_no_output_tokens() -> None:
    ctx = RequestContext(request_id="r", endpoint="embeddings", body={"model": "m", "input": ["abcd", "abcdefgh"]})
    usage = worst_case_usage(ctx, 4096)
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 0)
    assert estimate_input_tokens([[1, 2, 3]]) == 3  # a token array counts its tokens
    assert estimate_input_tokens("abcde") == 2 and estimate_input_tokens(None) == 0
