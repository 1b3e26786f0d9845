"""Test helpers for interlock and its plugins: a fake OpenAI-compatible upstream."""

from interlock.testing.fake_openai import FakeOpenAI, Fault, ReceivedRequest

__all__ = ["FakeOpenAI", "Fault", "ReceivedRequest"]
