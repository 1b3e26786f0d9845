"""interlock: an observability-first, plugin-based LLM gateway.

Plugin authors need only this module::

    from interlock import hookimpl
"""

from interlock.core.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl", "hookspec"]
