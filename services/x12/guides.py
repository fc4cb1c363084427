"""The X12 5010 implementation guides claimflow speaks: their versions (GS08/ST03) and the
limits they set on a claim.

Coding, the scrubber and the 837 writers read the same numbers here, so an encounter the
scrubber passes is one the writer can carry: a limit changed in one place changes in all.
"""

from __future__ import annotations

VERSION_837P = "005010X222A1"
"""Health care claim: professional."""
VERSION_837I = "005010X223A2"
"""Health care claim: institutional."""
VERSION_835 = "005010X221A1"
"""Health care claim payment/advice."""
VERSION_999 = "005010X231A1"
"""Implementation acknowledgment."""
VERSION_277CA = "005010X214"
"""Health care claim acknowledgment."""

MAX_DX_POINTERS = 4
"""An 837P service line points at no more than four diagnoses (SV107-1..SV107-4)."""
MAX_MODIFIERS = 4
"""A service line carries no more than four procedure modifiers (SV101-3..SV101-6)."""
MAX_PROFESSIONAL_DIAGNOSES = 12
"""An 837P HI segment (and the CMS-1500 box 21) holds 12 diagnoses, A to L."""
MAX_PROFESSIONAL_LINES = 50
"""The 2400 loop repeats at most 50 times in 005010X222A1."""
MAX_INSTITUTIONAL_LINES = 999
"""The 2400 loop repeats at most 999 times in 005010X223A2."""
MAX_CLAIMS_PER_TRANSACTION = 5000
"""The guides' recommended ceiling of claims per ST/SE."""
MAX_INSTITUTIONAL_OTHER_DIAGNOSES = 24
"""837I other diagnoses (ABF): two HI segments of 12."""
MAX_INSTITUTIONAL_OTHER_PROCEDURES = 24
"""837I other procedures (BBQ): two HI segments of 12."""
MAX_REASONS_FOR_VISIT = 3
"""837I patient's reasons for visit (APR): one HI, three composites."""
MAX_EXTERNAL_CAUSES = 12
"""837I external cause of injury codes (ABN): one HI."""
MAX_UB04_CODES = 24
"""837I occurrence spans (BI), occurrences (BH), values (BE), conditions (BG): two HI of 12
each."""
CLAIM_FILING_CODES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "16",
        "17",
        "AM",
        "BL",
        "CH",
        "CI",
        "DS",
        "FI",
        "HM",
        "LM",
        "MA",
        "MB",
        "MC",
        "OF",
        "TV",
        "VA",
        "WC",
        "ZZ",
    ]
)
"""SBR09 claim filing indicator codes 005010X222A1 and 005010X223A2 allow (09 self-pay is
not one: a self-pay encounter is billed to the patient, not to a payer)."""
