"""HTTP: the FHIR REST API (wire format, content negotiation, routing)."""
