"""The rule packs claimflow ships, selectable by id (CLAIMFLOW_VALIDATION__RULE_PACK, or
``claimflow replay --rule-pack``). A pack never changes once released: a change to what
the rules decide is a new pack id, so verdicts stay reproducible and replays comparable.
"""

from __future__ import annotations

from services.validation.engine import PACKS, RulePack, register_pack

PACK_2026_11_1 = register_pack(
    RulePack(
        id="2026.11.1",
        description="The walking skeleton's edits: required fields, identifiers, dates, "
        "lines, pointers, code validity, manifestation and external cause first, review.",
        rule_ids=(
            *("CF-REQ-001", "CF-REQ-002", "CF-REQ-003", "CF-REQ-004", "CF-REQ-005"),
            *("CF-REQ-006", "CF-REQ-007", "CF-NPI-001", "CF-NPI-002", "CF-NPI-003"),
            *("CF-EIN-001", "CF-ADDR-001", "CF-DATE-001", "CF-DATE-002", "CF-DATE-003"),
            *("CF-DATE-004", "CF-LINE-001", "CF-LINE-002", "CF-LINE-003", "CF-LINE-004"),
            *("CF-CODE-000", "CF-CODE-001", "CF-CODE-002", "CF-CODE-003", "CF-CODE-004"),
            *("CF-CODE-005", "CF-DX-001", "CF-DX-002", "CF-REV-001"),
        ),
    )
)

PACK_2026_11_2 = register_pack(
    PACK_2026_11_1.derive(
        "2026.11.2",
        description="Payer-grade: 2026.11.1 plus the Medicare Code Editor (age, sex, "
        "principal, admission, discharge status, duplicates), Excludes1, 12 diagnoses, the "
        "stay, timely filing, NCCI PTP and MUE (off, and saying so, without the CMS files) "
        "and duplicate claims across the stream.",
        add=(
            *("CF-DX-003", "CF-DX-004", "CF-MCE-001", "CF-MCE-002", "CF-MCE-003"),
            *("CF-MCE-004", "CF-MCE-005", "CF-MCE-006", "CF-DATE-005", "CF-DATE-006"),
            *("CF-NCCI-000", "CF-NCCI-001", "CF-MUE-000", "CF-MUE-001", "CF-MUE-002"),
            "CF-DUP-001",
        ),
        timely_filing_days={"*": 365},
    )
)

PACK_2026_12_1 = register_pack(
    PACK_2026_11_2.derive(
        "2026.12.1",
        description="2026.11.2 plus the payer: placeholder payer ids (UNKNOWN, PRIVATE) and, "
        "with a payer registry, payers it does not know or that take no such claims; timely "
        "filing per payer from the registry.",
        add=("CF-PAYER-001", "CF-PAYER-002"),
    )
)

PACK_2026_12_2 = register_pack(
    PACK_2026_12_1.derive(
        "2026.12.2",
        description="Facility claims: 2026.12.1 plus the UB-04/837I edits (revenue codes, "
        "HCPCS on outpatient lines by payer rule, type of bill, admission data, attending "
        "and operating physicians, room-and-board days, 837I capacity, NUBC codes, "
        "discharge hour), present on admission against the CMS exempt list, hospital-"
        "acquired conditions, what intake could not carry, and what the 837 writer refuses "
        "(claim filing code, X12 delimiters in identifiers).",
        add=(
            *("CF-UB-001", "CF-UB-002", "CF-UB-003", "CF-UB-004", "CF-UB-005"),
            *("CF-UB-006", "CF-UB-007", "CF-UB-008", "CF-UB-009", "CF-UB-010"),
            *("CF-POA-000", "CF-POA-001", "CF-HAC-001", "CF-NOTE-001", "CF-NOTE-002"),
            *("CF-NOTE-003", "CF-X12-001", "CF-X12-002", "CF-UB-011"),
        ),
    )
)

DEFAULT_PACK = PACK_2026_12_2
RULE_PACK_VERSION = DEFAULT_PACK.id


def get_pack(pack_id: str | None = None) -> RulePack:
    """A registered pack by id (the default when None); a clear error for an unknown id."""
    import services.validation.rules  # noqa: F401 - every rule module registers on import

    if pack_id is None:
        return DEFAULT_PACK
    try:
        return PACKS[pack_id]
    except KeyError:
        known = ", ".join(sorted(PACKS))
        raise ValueError(f"unknown rule pack {pack_id!r}; known packs: {known}") from None
