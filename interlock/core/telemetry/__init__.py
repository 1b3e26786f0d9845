"""OpenTelemetry traces and metrics for the gateway, one concept per module.

* :mod:`~interlock.core.telemetry.names`: every attribute, span event and metric name emitted;
* :mod:`~interlock.core.telemetry.settings`: the ``[telemetry]`` table and ``OTEL_*`` variables;
* :mod:`~interlock.core.telemetry.spans`: the gateway's own spans, their pipeline and the sampler;
* :mod:`~interlock.core.telemetry.request_trace`: the trace of the request being served;
* :mod:`~interlock.core.telemetry.exporter`: what exporter plugins supply to the pipeline;
* :mod:`~interlock.core.telemetry.runtime`: the gateway's :class:`Telemetry` (providers,
  instruments, the request path).

This package module imports none of them and defines nothing: Python runs it
before any submodule, and loading a config (which needs only ``settings``) must
not pay for the OpenTelemetry SDK that ``spans`` and ``runtime`` import. Names
are imported from the module that defines them.
"""
