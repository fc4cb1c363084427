"""Validation rule pack: each rule fires on a crafted encounter and stays quiet on a clean one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from factories import (
    RECEIVED_AT,
    VALIDATED_AT,
    address,
    coded,
    codesets_bare,
    codesets_with_cms,
    encounter,
    facility,
    line,
    patch,
    procedure,
    requires_cms,
)

from pipeline.models import (
    CodedDiagnosis,
    CodedEncounter,
    EditHit,
    Subscriber,
    ValidatedEncounter,
    event_id,
)
from services.coding.domain import code_encounter
from services.refdata.codesets import CodeSets
from services.validation.engine import REGISTRY
from services.validation.packs import get_pack
from services.validation.rules import RULE_PACK_VERSION, RULES, npi_is_valid, validate


@pytest.fixture(scope="module")
def cs() -> CodeSets:
    return codesets_bare()


def decisive(verdict: ValidatedEncounter) -> list[EditHit]:
    """The hits that decide the outcome (errors and warnings), without the info notes."""
    return [e for e in verdict.edits if e.severity != "info"]


def _dx(code: str, seq: int = 1, billable: bool = True) -> CodedDiagnosis:
    return CodedDiagnosis(code=code, sequence=seq, source="ehr", confidence=1.0, billable=billable)


def _enc(**changes: object) -> CodedEncounter:
    """The clean coded visit with encounter fields replaced (unvalidated)."""
    base = coded()
    return patch(base, encounter=patch(base.encounter, **changes))


def _coverage(**changes: object) -> CodedEncounter:
    base = coded()
    return patch(
        base, encounter=patch(base.encounter, coverage=patch(base.encounter.coverage, **changes))
    )


def _billing(**changes: object) -> CodedEncounter:
    enc = coded().encounter
    return _enc(billing_provider=patch(enc.billing_provider, **changes))


def _patient(**changes: object) -> CodedEncounter:
    enc = coded().encounter
    return _enc(patient=patch(enc.patient, **changes))


def _lines(*lines: object) -> CodedEncounter:
    return patch(coded(), lines=list(lines))


# The policy holder of a child's coverage: the clean visit's patient is then the dependent.
SUBSCRIBER = Subscriber(
    last_name="Whitfield",
    first_name="Marcus",
    birth_date=date(1955, 2, 9),
    sex="M",
    address=address(line1="412 Cahaba Rd", postal_code="35213"),
)


def _visit_on(day: date) -> CodedEncounter:
    enc = encounter(service_start=day, service_end=day)
    return coded(enc, lines=[line(1, "99213", "145.00", [1, 2], service_date=day)])


# (rule id, crafted encounter, field the hit names, line number or None)
CASES: list[tuple[str, Callable[[], CodedEncounter], str, int | None]] = [
    ("CF-REQ-001", lambda: _coverage(payer_id="  "), "encounter.coverage.payer_id", None),
    ("CF-REQ-002", lambda: _coverage(member_id=""), "encounter.coverage.member_id", None),
    ("CF-REQ-003", lambda: _billing(npi=""), "encounter.billing_provider.npi", None),
    ("CF-REQ-004", lambda: _patient(birth_date=None), "encounter.patient.birth_date", None),
    ("CF-REQ-005", lambda: patch(coded(), diagnoses=[]), "diagnoses", None),
    ("CF-REQ-006", lambda: _lines(), "lines", None),
    ("CF-REQ-007", lambda: _coverage(relationship="19"), "encounter.coverage.subscriber", None),
    (
        # 32 (mother) is a 4010 code that 5010 dropped; EHRs still send it.
        "CF-REQ-007",
        lambda: _coverage(relationship="32", subscriber=SUBSCRIBER),
        "encounter.coverage.relationship",
        None,
    ),
    ("CF-NPI-001", lambda: _billing(npi="1847520397"), "encounter.billing_provider.npi", None),
    (
        "CF-NPI-002",
        lambda: _enc(
            rendering_provider=patch(coded().encounter.rendering_provider, npi="1234567890")
        ),
        "encounter.rendering_provider.npi",
        None,
    ),
    (
        "CF-NPI-003",
        lambda: _enc(facility=patch(facility(), npi="1508624371")),
        "encounter.facility.npi",
        None,
    ),
    ("CF-EIN-001", lambda: _billing(tax_id=None), "encounter.billing_provider.tax_id", None),
    ("CF-ADDR-001", lambda: _billing(address=None), "encounter.billing_provider.address", None),
    (
        "CF-ADDR-001",
        lambda: _billing(address=address(postal_code="27401")),
        "encounter.billing_provider.address.postal_code",
        None,
    ),
    (
        "CF-ADDR-001",
        lambda: _billing(address=address(line1="PO Box 1200")),
        "encounter.billing_provider.address.line1",
        None,
    ),
    ("CF-DATE-001", lambda: _enc(service_end=date(2026, 3, 1)), "encounter.service_end", None),
    (
        "CF-DATE-002",
        lambda: _visit_on(date(2026, 3, 4)),
        "encounter.service_start",
        None,
    ),
    (
        "CF-DATE-003",
        lambda: _lines(line(1, "99213", "145.00", [1], service_date=date(2026, 3, 1))),
        "lines[0].service_date",
        1,
    ),
    (
        "CF-DATE-004",
        lambda: _patient(birth_date=date(2026, 3, 3)),
        "encounter.patient.birth_date",
        None,
    ),
    (
        "CF-LINE-001",
        lambda: _lines(line(1, "99213"), patch(line(2, "83036"), charge=Decimal("0.00"))),
        "lines[1].charge",
        2,
    ),
    ("CF-LINE-002", lambda: _lines(patch(line(1, "99213"), units=0.0)), "lines[0].units", 1),
    ("CF-LINE-003", lambda: _lines(line(1, "99213", pointers=[1, 3])), "lines[0].dx_pointers", 1),
    (
        "CF-LINE-004",
        lambda: _lines(line(1, "99213", modifiers=["25", "5"])),
        "lines[0].modifiers[1]",
        1,
    ),
    ("CF-CODE-000", lambda: _visit_on(date(2022, 9, 30)), "encounter.service_start", None),
    (
        "CF-CODE-001",
        lambda: patch(coded(), diagnoses=[_dx("E119"), _dx("Z99999", 2)]),
        "diagnoses[1].code",
        None,
    ),
    (
        "CF-CODE-002",
        lambda: patch(coded(), diagnoses=[_dx("E11", billable=False), _dx("I10", 2)]),
        "diagnoses[0].code",
        None,
    ),
    ("CF-CODE-003", lambda: _lines(line(1, "99213"), line(2, "9921X")), "lines[1].code", 2),
    (
        "CF-CODE-004",
        lambda: patch(coded(), pcs_procedures=[procedure("0DTJ4ZZ"), procedure("XW033C6")]),
        "pcs_procedures[1].code",
        None,
    ),
    (
        "CF-DX-001",
        lambda: patch(coded(), diagnoses=[_dx("G63"), _dx("E1142", 2)]),
        "diagnoses[0].code",
        None,
    ),
    (
        "CF-DX-002",
        lambda: patch(coded(), diagnoses=[_dx("V0001XA"), _dx("S82101A", 2)]),
        "diagnoses[0].code",
        None,
    ),
    (
        "CF-REV-001",
        lambda: patch(coded(), review_reasons=["diagnoses[0]: confirm the principal diagnosis"]),
        "review_reasons[0]",
        None,
    ),
]


def test_clean_encounter_passes_every_rule(cs: CodeSets) -> None:
    verdict = validate(coded(), cs, validated_at=VALIDATED_AT)
    assert verdict.outcome == "clean" and decisive(verdict) == []
    assert verdict.rule_pack_version == RULE_PACK_VERSION == "2026.12.2"
    assert verdict.coded == coded() and verdict.validated_at == VALIDATED_AT


def test_edits_without_their_data_files_say_they_are_off(cs: CodeSets) -> None:
    verdict = validate(coded(), cs, validated_at=VALIDATED_AT)
    notes = {e.rule_id: e for e in verdict.edits}
    assert set(notes) == {"CF-NCCI-000", "CF-MUE-000"}
    for hit in notes.values():
        assert (hit.severity, hit.category, hit.field) == ("info", "config", "lines")
        assert "OFF" in hit.message and "CLAIMFLOW_REFDATA_DIR" in hit.message
        assert hit.fix_hint and "CLAIMFLOW_REFDATA_DIR" in hit.fix_hint


def test_the_previous_pack_still_runs_by_id(cs: CodeSets) -> None:
    verdict = validate(coded(), cs, validated_at=VALIDATED_AT, pack="2026.11.1")
    assert verdict.outcome == "clean" and verdict.edits == []
    assert verdict.rule_pack_version == "2026.11.1"
    with pytest.raises(ValueError, match="unknown rule pack 'nope'; known packs: 2026.11.1"):
        validate(coded(), cs, validated_at=VALIDATED_AT, pack="nope")


@requires_cms
def test_clean_encounter_passes_with_the_cms_files_loaded() -> None:
    verdict = validate(coded(), codesets_with_cms(), validated_at=VALIDATED_AT)
    assert verdict.outcome == "clean" and verdict.edits == []


def test_clean_encounter_with_facility_passes(cs: CodeSets) -> None:
    verdict = validate(_enc(facility=facility()), cs, validated_at=VALIDATED_AT)
    assert verdict.outcome == "clean"


@pytest.mark.parametrize("relationship", ["01", "19", "G8"])
def test_dependent_with_a_subscriber_passes(cs: CodeSets, relationship: str) -> None:
    dependent = _coverage(relationship=relationship, subscriber=SUBSCRIBER)
    assert validate(dependent, cs, validated_at=VALIDATED_AT).outcome == "clean"


def test_dependent_without_a_subscriber_is_explained(cs: CodeSets) -> None:
    verdict = validate(_coverage(relationship="01"), cs, validated_at=VALIDATED_AT)
    assert verdict.outcome == "rejected"
    [hit] = decisive(verdict)
    assert (hit.rule_id, hit.field) == ("CF-REQ-007", "encounter.coverage.subscriber")
    assert "relationship 01" in hit.message


def test_coding_output_validates_clean(cs: CodeSets) -> None:
    result = code_encounter(encounter(), cs, coded_at=RECEIVED_AT)
    assert validate(result, cs, validated_at=VALIDATED_AT).outcome == "clean"


@pytest.mark.parametrize(("rule_id", "build", "field", "line_no"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires(
    cs: CodeSets,
    rule_id: str,
    build: Callable[[], CodedEncounter],
    field: str,
    line_no: int | None,
) -> None:
    verdict = validate(build(), cs, validated_at=VALIDATED_AT)
    hits = [e for e in verdict.edits if e.rule_id == rule_id]
    assert hits, f"{rule_id} did not fire; edits: {verdict.edits}"
    assert hits[0].field == field and hits[0].line == line_no
    assert len(hits[0].message) > 20
    rule = REGISTRY[rule_id]
    assert hits[0].severity == rule.severity and hits[0].category == rule.category
    assert hits[0].fix_hint
    expected = {"error": "rejected", "warning": "warnings", "info": "clean"}[rule.severity]
    if all(e.rule_id == rule_id for e in decisive(verdict)):
        assert verdict.outcome == expected
    if rule.severity == "error":
        assert verdict.outcome == "rejected"


def test_every_rule_of_the_skeleton_has_a_firing_test_and_an_explanation() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    tested = {c[0] for c in CASES} | {"CF-CODE-005"}
    assert set(get_pack("2026.11.1").rule_ids) == tested
    assert all(r.explanation.endswith(".") and len(r.explanation) > 20 for r in RULES)


def test_only_warnings_give_outcome_warnings(cs: CodeSets) -> None:
    verdict = validate(patch(coded(), review_reasons=["check"]), cs, validated_at=VALIDATED_AT)
    assert verdict.outcome == "warnings"
    assert [(e.rule_id, e.severity) for e in decisive(verdict)] == [("CF-REV-001", "warning")]


def test_manifestation_message_quotes_code_first(cs: CodeSets) -> None:
    bad = patch(coded(), diagnoses=[_dx("G63"), _dx("E1142", 2)])
    hit = next(
        e for e in validate(bad, cs, validated_at=VALIDATED_AT).edits if e.rule_id == "CF-DX-001"
    )
    assert "G63 is a manifestation code" in hit.message and "code first" in hit.message


@pytest.mark.parametrize("tin", ["63-123456", "07123456", "071234567", "961234567"])
def test_ein_format_and_prefix(cs: CodeSets, tin: str) -> None:
    verdict = validate(_billing(tax_id=tin), cs, validated_at=VALIDATED_AT)
    assert [e.rule_id for e in decisive(verdict)] == ["CF-EIN-001"]


def test_ein_prefix_is_not_checked_for_a_person(cs: CodeSets) -> None:
    verdict = validate(_billing(tax_id="071234567", entity="person"), cs, validated_at=VALIDATED_AT)
    assert verdict.outcome == "clean"


@pytest.mark.parametrize("npi", ["1234567893", "1847520396", "1663019283", "1508624370"])
def test_npi_luhn_accepts_valid_numbers(npi: str) -> None:
    # Independent check: Luhn over the 9 digits, plus 24 for the 80840 prefix.
    total = 24
    for k, ch in enumerate(reversed(npi[:9])):
        d = int(ch) * (2 if k % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    assert (10 - total % 10) % 10 == int(npi[9])
    assert npi_is_valid(npi)


@pytest.mark.parametrize("npi", ["1234567890", "123456789", "12345678931", "abcdefghij", ""])
def test_npi_luhn_rejects_bad_numbers(npi: str) -> None:
    assert not npi_is_valid(npi)


def test_dx_pointer_limits(cs: CodeSets) -> None:
    many = _lines(line(1, "99213", pointers=[1, 2, 1, 2, 1]))
    msgs = [e.message for e in validate(many, cs, validated_at=VALIDATED_AT).edits]
    assert any("points at 5 diagnoses" in m for m in msgs)
    empty = _lines(patch(line(1, "99213"), dx_pointers=[]))
    msgs = [e.message for e in validate(empty, cs, validated_at=VALIDATED_AT).edits]
    assert any("points at no diagnosis" in m for m in msgs)


def test_future_relative_to_validation_time_only(cs: CodeSets) -> None:
    later = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # same day as the visit: not in the future
    assert validate(coded(), cs, validated_at=later).outcome == "clean"


@requires_cms
def test_cpt_absent_from_fee_schedule_of_its_year_is_an_error() -> None:
    day = date(2025, 6, 2)
    enc = encounter(service_start=day, service_end=day)
    bad = coded(enc, lines=[line(1, "99999", service_date=day)])
    verdict = validate(bad, codesets_with_cms(), validated_at=VALIDATED_AT)
    assert [(e.rule_id, e.line) for e in verdict.edits] == [("CF-CODE-003", 1)]
    assert verdict.outcome == "rejected"


@requires_cms
def test_cpt_the_fee_schedule_cannot_vouch_for_is_info_only() -> None:
    unchecked = _lines(line(1, "99999"))  # 2026 date, 2025 fee schedule
    verdict = validate(unchecked, codesets_with_cms(), validated_at=VALIDATED_AT)
    assert [(e.rule_id, e.severity) for e in verdict.edits] == [("CF-CODE-005", "info")]
    assert verdict.outcome == "clean"


def test_event_id_depends_on_rule_pack_version(cs: CodeSets) -> None:
    c = coded()
    verdict = validate(c, cs, validated_at=VALIDATED_AT)
    again = validate(c, cs, validated_at=VALIDATED_AT.replace(hour=18))
    assert verdict.event_id == again.event_id == event_id(c.event_id, "validation", "2026.12.2")
    older = validate(c, cs, validated_at=VALIDATED_AT, pack="2026.11.1")
    assert older.event_id == event_id(c.event_id, "validation", "2026.11.1") != verdict.event_id
