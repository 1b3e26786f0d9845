"""Test helpers for interlock and its plugins: fake provider upstreams with fault injection.

Every fake is a :class:`FakeServer` with the same fault model (:class:`Fault`), so a test
can break any provider the same way.
"""

from interlock.testing._base import FakeServer, Fault, ReceivedRequest
from interlock.testing.fake_anthropic import FakeAnthropic
from interlock.testing.fake_bedrock import FakeBedrock
from interlock.testing.fake_cohere import FakeCohere
from interlock.testing.fake_gemini import FakeGemini
from interlock.testing.fake_openai import FakeOpenAI
from interlock.testing.fake_ollama import FakeOllama
from interlock.testing.fake_replicate import FakeReplicate
from interlock.testing.fake_vertex import FakeVertex

__all__ = ["FakeAnthropic", "FakeBedrock", "FakeCohere", "FakeGemini", "FakeOllama", "FakeOpenAI", "FakeReplicate", "FakeServer", "FakeVertex", "Fault", "ReceivedRequest"]
