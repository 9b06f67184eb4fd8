"""The authorization server (SMART on FHIR / MedMij-style) and the access policy."""
