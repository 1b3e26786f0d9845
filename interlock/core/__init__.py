"""The engine (hook specs, plugins, types, resolution, router, request lifecycle, front doors, telemetry)
and the assembly modules (config, gateway, app, admin) that put it together with the accounting layer."""
