"""Built-in plugins. Each module is registered exactly like a third-party plugin."""
