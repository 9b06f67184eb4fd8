"""Telemonitoring alerts: rules as data, baselines, personalisation, episodes, FHIR Flags.

The core is pure: no module touches a database, HTTP or FastAPI, except :mod:`.ingest`, which
loads a patient's enrolment, measurements and episodes from storage, calls
:func:`service.alerts.engine.evaluate` (at every Observation write, in its transaction) and
:func:`service.alerts.engine.sweep_missing` (the periodic sweep), and stores the resulting Flags.
The rules are documented in docs/alerts/rules.md, their handling in docs/alerts/engine.md.
"""
