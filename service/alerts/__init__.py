"""Pure alert core: rules as data, baselines, personalisation, episodes and FHIR Flag rendering.

Nothing in this package touches a database, HTTP or FastAPI; the ingest and sweep wiring calls
:func:`service.alerts.engine.evaluate` and :func:`service.alerts.engine.sweep_missing`.
"""
