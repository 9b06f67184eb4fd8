"""FHIR domain services: resource definitions, CRUD, search, bundles (no HTTP here)."""
