"""The NEN 7513 audit trail: an append-only AuditEvent for every access to patient data."""
