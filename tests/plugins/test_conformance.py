"""The provider conformance suite over every built-in provider."""

from __future__ import annotations

import pytest

from interlock.testing.cases import builtin_cases
from interlock.testing.conformance import ProviderCase, ProviderConformance


class TestBuiltinProviders(ProviderConformance):
    @pytest.fixture(params=builtin_cases(), ids=lambda c: c.name)
    def case(self, request: pytest.FixtureRequest) -> ProviderCase:
        return request.param
