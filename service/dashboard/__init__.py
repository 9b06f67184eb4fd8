"""The clinician dashboard (``/dashboard``): the open-alerts worklist and per-patient trend
charts, server-rendered, behind a clinician login (docs/dashboard.md)."""
