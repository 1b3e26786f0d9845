"""Built-in failure classifier: the generic rules of :mod:`interlock.core.failures` as a plugin.

It answers ``classify_failure`` last (``trylast``) and always answers, so a
third-party plugin that implements the hook decides first, and a failure no one
else claims still gets a class and an action. A provider's own
:meth:`~interlock.core.provider.Provider.classify` is asked before any hook.
"""

from __future__ import annotations

from interlock import hookimpl
from interlock.core.failures import classify
from interlock.core.types import Classification, Target, UpstreamError


@hookimpl(trylast=True)
def classify_failure(error: UpstreamError, target: Target, provider_type: str) -> Classification:
    """Every failure no one else classified: the generic verdict."""
    return classify(error)
