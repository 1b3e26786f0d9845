"""Data files shipped with interlock (the built-in price table, ``prices.toml``)."""
