"""interlock: an observability-first, plugin-based LLM gateway.

Plugin authors need only this module::

    from interlock import hookimpl
"""

from interlock.core.hookspecs import hookimpl, hookspec
from interlock.version import __version__

__all__ = ["__version__", "hookimpl", "hookspec"]
