"""Test helpers for interlock and its plugins: fake provider upstreams with fault injection.

Every fake is a :class:`FakeServer` with the same fault model (:class:`Fault`), so a test
can break any provider the same way.
"""

from interlock.testing._base import FakeServer, Fault, ReceivedRequest
from interlock.testing.fake_openai import FakeOpenAI

__all__ = ["FakeOpenAI", "FakeServer", "Fault", "ReceivedRequest"]
