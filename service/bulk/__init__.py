"""Bulk access: ``Patient/$everything``, programme cohort Groups and Bulk Data ``$export``.

- :mod:`.everything` pages through one patient's compartment.
- :mod:`.groups` serves the programme cohorts (``Group/heart-failure``, ``Group/copd``),
  computed from the enrolment CarePlans on every read.
- :mod:`.request` checks a ``$export`` kick-off (parameters, the caller's scopes).
- :mod:`.jobs` queues export jobs and answers status, cancel and file requests.
- :mod:`.worker` writes the NDJSON files (``telemon worker``, or inside ``serve`` on SQLite)
  and sweeps expired exports.
"""
