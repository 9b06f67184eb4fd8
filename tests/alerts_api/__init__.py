"""Alert rules end to end: Observations in through the FHIR API, Flags out."""
