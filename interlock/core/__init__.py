"""The minimal core: hook specs, plugin manager, config, resolution, router and HTTP app."""
