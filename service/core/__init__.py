"""The value types every layer shares, below storage: FHIR outcomes and errors, the registry of
resource types and search parameters, search criteria, index values and their extraction, FHIR
dates, the concept table of measurements, the message catalogue, the clock and the SSRF guard.

Nothing here touches a database or HTTP; ``storage`` and ``validation`` build on it.
"""
