"""Input validation: strict JSON (400), base FHIR structure (400), telemon profiles (422)."""

from service.validation.bsn import BSN_SYSTEM, is_valid_bsn
from service.validation.json_input import WrittenDecimal, dumps_resource, parse_json
from service.validation.profiles import ProfileValidator
from service.validation.structure import SUPPORTED_TYPES, validate_structure

__all__ = [
    "BSN_SYSTEM",
    "SUPPORTED_TYPES",
    "ProfileValidator",
    "WrittenDecimal",
    "dumps_resource",
    "is_valid_bsn",
    "parse_json",
    "validate_structure",
]
