"""The fakes' ``usage`` knob: what merge_usage does to a fake's own usage object."""

from __future__ import annotations

from typing import Any

from interlock.testing._base import merge_usage


def test_nested_objects_merge_and_everything_else_replaces() -> None:
    native: dict[str, Any] = {
        "prompt_tokens": 3, "completion_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "details": [{"modality": "TEXT", "tokenCount": 3}],
    }  # fmt: skip
    override = {
        "prompt_tokens": 9000, "prompt_tokens_details": {"cached_tokens": 4000},
        "details": [{"modality": "AUDIO", "tokenCount": 9000}], "num_search_queries": 2,
    }  # fmt: skip
    merged = merge_usage(native, override)
    assert merged == {
        "prompt_tokens": 9000, "completion_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 4000, "audio_tokens": 0},
        "details": [{"modality": "AUDIO", "tokenCount": 9000}], "num_search_queries": 2,
    }  # fmt: skip
    # neither input is changed, and the answer shares no mutable part with the knob
    assert native["prompt_tokens"] == 3 and native["prompt_tokens_details"]["cached_tokens"] == 0
    merged["details"][0]["tokenCount"] = 1
    assert override["details"] == [{"modality": "AUDIO", "tokenCount": 9000}]


def test_no_knob_leaves_the_fakes_usage_as_it_was() -> None:
    native = {"input_tokens": 5, "output_tokens": 7}
    assert merge_usage(native, None) is native
    assert merge_usage(native, {}) is native
