"""telemon: a FHIR R4 telemonitoring data-exchange service."""

__version__ = "0.1.0"
