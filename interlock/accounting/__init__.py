"""Cost accounting and identity, beside the core engine.

Prices (:mod:`.pricing`), budgets (:mod:`.budgets`), spend anomalies
(:mod:`.anomaly`), spend reports (:mod:`.spend`), gateway API keys
(:mod:`.keys`) and the SQL ledger's schema (:mod:`.ledger`, with its default
URL in :mod:`.database`). This layer imports the core engine; the engine never
imports it: the assembly (config, gateway, app, cli) hands accounting objects to
the engine through the small protocols in :mod:`interlock.core.catalog` and
:mod:`interlock.core.lifecycle`.
"""
