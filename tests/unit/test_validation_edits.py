"""The payer-grade edits of pack 2026.11.2: for each, a claim that trips it and a near miss
that must not (Medicare Code Editor, Excludes1, NCCI PTP with its modifier indicators and
bypass modifiers, MUE by adjudication indicator, the stay, timely filing, duplicates)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from factories import (
    CMS_DIR,
    VALIDATED_AT,
    VISIT,
    coded,
    codesets_bare,
    encounter,
    line,
    patch,
    procedure,
)

from pipeline.models import CodedDiagnosis, CodedEncounter, Patient, ValidatedEncounter
from services.refdata.codesets import CodeSets
from services.refdata.ncci import MueTable, NcciEdits, PtpTable, load_ncci
from services.validation.duplicates import DuplicateStore, fingerprint
from services.validation.engine import REGISTRY, RulePack
from services.validation.packs import DEFAULT_PACK, PACK_2026_11_1, get_pack
from services.validation.rules import validate

NCCI_FILES = (CMS_DIR / "ccipra-v322r0-f1.excerpt.txt").is_file() and (
    CMS_DIR / "MCR_MUE_PractitionerServices_Eff_07-01-2026.excerpt.csv"
).is_file()
requires_ncci = pytest.mark.skipif(not NCCI_FILES, reason=f"NCCI excerpts not in {CMS_DIR}")

# A line-edit (MAI 1) table in the official MUE layout: the excerpt has only MAI 2 and 3.
MUE_LINE_EDITS = (
    '"CPT codes copyright American Medical Association.",,,\r\n'
    '"HCPCS/\nCPT Code",Practitioner Services MUE Values,MUE Adjudication Indicator,'
    "MUE Rationale\r\n"
    "83036,1,1 Line Edit,Nature of Service/Procedure\r\n"
    "0001U,1,2 Date of Service Edit: Policy,Code Descriptor / CPT Instruction\r\n"
    "0009U,2,3 Date of Service Edit: Clinical,Nature of Analyte\r\n"
)


@pytest.fixture(scope="module")
def bare() -> CodeSets:
    return codesets_bare()


@pytest.fixture(scope="module")
def ncci() -> CodeSets:
    """The packaged code sets plus the CMS NCCI excerpts and a MAI 1 table (no fee schedule,
    so that the excerpt's codes are checked by format only)."""
    if not NCCI_FILES:
        pytest.skip(f"NCCI excerpts not in {CMS_DIR}")
    edits = load_ncci(CMS_DIR)
    edits.mue["practitioner"] = MueTable.parse(MUE_LINE_EDITS)
    return CodeSets(ncci=NcciEdits(ptp=edits.ptp, mue=edits.mue, notes=edits.notes))


def _dx(*codes: str) -> list[CodedDiagnosis]:
    return [
        CodedDiagnosis(code=c, sequence=i, source="ehr", confidence=1.0, billable=True)
        for i, c in enumerate(codes, 1)
    ]


def _born(day: date, sex: str = "F") -> CodedEncounter:
    base = coded()
    patient: Patient = patch(base.encounter.patient, birth_date=day, sex=sex)
    return patch(base, encounter=patch(base.encounter, patient=patient))


def _payer(enc: CodedEncounter, payer_id: str) -> CodedEncounter:
    coverage = patch(enc.encounter.coverage, payer_id=payer_id)
    return patch(enc, encounter=patch(enc.encounter, coverage=coverage))


def _with(enc: CodedEncounter, *codes: str) -> CodedEncounter:
    return patch(enc, diagnoses=_dx(*codes))


def _on(day: date, *lines: object, **enc_changes: object) -> CodedEncounter:
    """A professional visit on ``day`` billing ``lines`` (all dated ``day``)."""
    enc = encounter(service_start=day, service_end=day, **enc_changes)
    dated = [patch(ln, service_date=day) for ln in lines]
    return coded(enc, lines=dated or [line(1, "99213", service_date=day)])


def _inpatient(**changes: object) -> CodedEncounter:
    start, end = date(2026, 2, 24), date(2026, 2, 27)
    fields: dict[str, object] = {
        "setting": "inpatient",
        "place_of_service": "21",
        "service_start": start,
        "service_end": end,
        "admission_date": start,
        "admission_type": "1",
        "discharge_status": "01",
    }
    enc = encounter(**(fields | changes))
    return coded(
        enc,
        diagnoses=_dx("J189", "E119"),
        lines=[line(1, "99223", "410.00", [1, 2], service_date=start)],
        pcs_procedures=[procedure("0BJ08ZZ", on=start)],
    )


def hits(verdict: ValidatedEncounter, rule_id: str) -> list:
    return [e for e in verdict.edits if e.rule_id == rule_id]


# (rule id, codesets fixture name, tripping claim, near miss, validated at, field, line)
Build = Callable[[], CodedEncounter]
CASES: list[tuple[str, str, Build, Build, datetime, str, int | None]] = [
    (
        "CF-MCE-001",  # routine child check-up for a 68-year-old; the same for a 5-year-old
        "bare",
        lambda: _with(coded(), "Z00129", "I10"),
        lambda: _with(_born(date(2020, 6, 1)), "Z00129", "I10"),
        VALIDATED_AT,
        "diagnoses[0].code",
        None,
    ),
    (
        "CF-MCE-002",  # prostate cancer for a woman in FY2024; the MCE dropped the edit FY2025
        "bare",
        lambda: _with(_on(date(2024, 3, 1)), "C61", "I10"),
        lambda: _with(_on(date(2025, 3, 3)), "C61", "I10"),
        datetime(2025, 3, 4, tzinfo=UTC),
        "diagnoses[0].code",
        None,
    ),
    (
        "CF-MCE-003",  # dependence on dialysis cannot be why a patient is admitted
        "bare",
        lambda: _with(_inpatient(), "Z992", "N186"),
        lambda: _with(_inpatient(), "N186", "Z992"),
        VALIDATED_AT,
        "diagnoses[0].code",
        None,
    ),
    (
        "CF-MCE-004",  # essential hypertension alone rarely justifies admission
        "bare",
        lambda: _with(_inpatient(), "I10", "E119"),
        lambda: _inpatient(),
        VALIDATED_AT,
        "diagnoses[0].code",
        None,
    ),
    (
        "CF-MCE-005",
        "bare",
        lambda: _inpatient(discharge_status="99"),
        lambda: _inpatient(discharge_status="03"),
        VALIDATED_AT,
        "encounter.discharge_status",
        None,
    ),
    (
        "CF-MCE-006",
        "bare",
        lambda: _with(coded(), "E119", "I10", "E119"),
        lambda: _with(coded(), "E119", "I10", "E785"),
        VALIDATED_AT,
        "diagnoses[2].code",
        None,
    ),
    (
        "CF-DX-003",  # diabetes with hyperglycemia NOS: R73 Excludes1 diabetes (E08-E13)
        "bare",
        lambda: _with(coded(), "E119", "R739"),
        lambda: _with(coded(), "E119", "I10"),
        VALIDATED_AT,
        "diagnoses[1].code",
        None,
    ),
    (
        "CF-DX-004",
        "bare",
        lambda: _with(coded(), *DIAGNOSES_13),
        lambda: _with(coded(), *DIAGNOSES_13[:12]),
        VALIDATED_AT,
        "diagnoses[12]",
        None,
    ),
    (
        "CF-DATE-005",
        "bare",
        lambda: _inpatient(admission_date=None),
        lambda: _inpatient(admission_date=date(2026, 2, 20)),  # interim bill: admitted earlier
        VALIDATED_AT,
        "encounter.admission_date",
        None,
    ),
    (
        "CF-DATE-005",
        "bare",
        lambda: patch(_inpatient(), pcs_procedures=[procedure("0BJ08ZZ", on=date(2026, 2, 28))]),
        lambda: patch(_inpatient(), pcs_procedures=[procedure("0BJ08ZZ", on=date(2026, 2, 27))]),
        VALIDATED_AT,
        "pcs_procedures[0].date",
        None,
    ),
    (
        "CF-DATE-006",  # 366 days after the visit for a payer with the default 365
        "bare",
        lambda: coded(),
        lambda: coded(),
        datetime.combine(VISIT + timedelta(days=366), datetime.min.time(), UTC),
        "encounter.service_end",
        None,
    ),
    (
        "CF-NCCI-000",
        "bare",
        lambda: coded(),
        lambda: _inpatient(),  # no NCCI for inpatient stays: nothing is off
        VALIDATED_AT,
        "lines",
        None,
    ),
    (
        "CF-MUE-000",
        "bare",
        lambda: coded(),
        lambda: _inpatient(),
        VALIDATED_AT,
        "lines",
        None,
    ),
    (
        "CF-NCCI-001",  # indicator 1, no modifier; near miss: XU on column 2
        "ncci",
        lambda: _on(VISIT, line(1, "0001U"), line(2, "81167")),
        lambda: _on(VISIT, line(1, "0001U"), line(2, "81167", modifiers=["XU"])),
        VALIDATED_AT,
        "lines[1].code",
        2,
    ),
    (
        "CF-MUE-001",  # MAI 1: units on one line; near miss: the same units on two lines
        "ncci",
        lambda: _on(VISIT, patch(line(1, "83036"), units=2.0)),
        lambda: _on(VISIT, line(1, "83036"), line(2, "83036", modifiers=["91"])),
        VALIDATED_AT,
        "lines[0].units",
        1,
    ),
    (
        "CF-MUE-002",  # MAI 2: units of the day add up across lines
        "ncci",
        lambda: _on(VISIT, line(1, "0001U"), line(2, "0001U", modifiers=["91"])),
        lambda: _on(VISIT, line(1, "0001U")),
        VALIDATED_AT,
        "lines[0].units",
        1,
    ),
    (
        "CF-PAYER-001",  # Synthea names the payer only: intake sends PRIVATE; a real payer id
        "bare",
        lambda: _payer(coded(), "PRIVATE"),
        lambda: _payer(coded(), "60054"),
        VALIDATED_AT,
        "encounter.coverage.payer_id",
        None,
    ),
]

DIAGNOSES_13 = (
    *("E119", "I10", "E785", "J449", "K219", "F329", "G4733", "M1990", "N400"),
    *("H5213", "L409", "B351", "Z7984"),
)


@pytest.mark.parametrize(
    ("rule_id", "sets", "trips", "near", "at", "field", "line_no"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_edit_trips_and_its_near_miss_does_not(
    request: pytest.FixtureRequest,
    rule_id: str,
    sets: str,
    trips: Build,
    near: Build,
    at: datetime,
    field: str,
    line_no: int | None,
) -> None:
    cs: CodeSets = request.getfixturevalue(sets)
    verdict = validate(trips(), cs, validated_at=at)
    found = hits(verdict, rule_id)
    assert found, f"{rule_id} did not fire: {verdict.edits}"
    rule = REGISTRY[rule_id]
    assert (found[0].field, found[0].line) == (field, line_no)
    assert (found[0].severity, found[0].category) == (rule.severity, rule.category)
    assert len(found[0].message) > 30 and found[0].fix_hint
    if rule.severity == "error":
        assert verdict.outcome == "rejected"
    if rule.severity == "warning":
        assert verdict.outcome in ("warnings", "rejected")
    near_at = at - timedelta(days=1) if rule_id == "CF-DATE-006" else at  # the last day
    assert hits(validate(near(), cs, validated_at=near_at), rule_id) == []


def test_every_rule_of_the_new_pack_has_a_trip_and_a_near_miss() -> None:
    new = set(get_pack("2026.12.1").rule_ids) - set(PACK_2026_11_1.rule_ids)
    # CF-DUP-001: tests below; CF-PAYER-002 needs a payer registry (test_masterdata_use.py)
    assert new - {"CF-DUP-001", "CF-PAYER-002"} == {c[0] for c in CASES}


def test_every_registered_rule_is_in_the_default_pack_with_a_fix_hint() -> None:
    assert set(REGISTRY) == set(DEFAULT_PACK.rule_ids)
    for rule in REGISTRY.values():
        assert rule.fix_hint or rule.id in ("CF-NCCI-001", "CF-MUE-002"), rule.id
        assert rule.explanation.endswith((".", ")")) and len(rule.explanation) > 30


# --- the Medicare Code Editor in detail ---------------------------------------------------


def test_age_conflict_names_the_secondary_code_that_conflicts(bare: CodeSets) -> None:
    verdict = validate(_with(coded(), "E119", "Z3800"), bare, validated_at=VALIDATED_AT)
    [hit] = hits(verdict, "CF-MCE-001")
    assert hit.field == "diagnoses[1].code" and "Z38.00" in hit.message and "68" in hit.message


def test_sex_conflict_for_a_man_with_a_delivery_code(bare: CodeSets) -> None:
    claim = _with(_on(date(2024, 3, 1)), "O80", "Z370")
    man = patch(claim, encounter=patch(claim.encounter, patient=patch(_patient(), sex="M")))
    verdict = validate(man, bare, validated_at=datetime(2024, 3, 2, tzinfo=UTC))
    # Both the delivery and its outcome (Z37.0) are maternity codes.
    fields = [h.field for h in hits(verdict, "CF-MCE-002")]
    assert fields == ["diagnoses[0].code", "diagnoses[1].code"]
    woman = patch(claim, encounter=patch(claim.encounter, patient=patch(_patient(), sex="F")))
    verdict = validate(woman, bare, validated_at=datetime(2024, 3, 2, tzinfo=UTC))
    assert hits(verdict, "CF-MCE-002") == []


def _patient() -> Patient:
    return coded().encounter.patient


def test_inpatient_only_edits_leave_office_visits_alone(bare: CodeSets) -> None:
    office = _with(coded(), "Z992", "N186")  # status code first: fine in an office
    verdict = validate(office, bare, validated_at=VALIDATED_AT)
    assert hits(verdict, "CF-MCE-003") == [] and hits(verdict, "CF-MCE-005") == []


def test_missing_discharge_status_is_named(bare: CodeSets) -> None:
    verdict = validate(_inpatient(discharge_status=None), bare, validated_at=VALIDATED_AT)
    [hit] = hits(verdict, "CF-MCE-005")
    assert "missing" in hit.message


# --- Excludes1 -----------------------------------------------------------------------------


def test_excludes1_reports_each_pair_once_with_the_note(bare: CodeSets) -> None:
    verdict = validate(_with(coded(), "E119", "E109"), bare, validated_at=VALIDATED_AT)
    [hit] = hits(verdict, "CF-DX-003")
    assert "E11.9 and E10.9" in hit.message and "type" in hit.message


# --- NCCI PTP: modifier indicators and bypass modifiers ----------------------------------

DOS_2023 = date(2023, 5, 1)
AT_2023 = datetime(2023, 5, 2, tzinfo=UTC)


@requires_ncci
@pytest.mark.parametrize(
    ("mods1", "mods2", "fires"),
    [
        ([], [], True),
        ([], ["59"], False),
        ([], ["XE"], False),
        ([], ["XS"], False),
        ([], ["XP"], False),
        (["XU"], [], False),  # on either code
        ([], ["25"], True),  # 25 is for an E/M code; neither code of this pair is one
        ([], ["76"], True),  # not a PTP-associated modifier
    ],
)
def test_indicator_1_is_bypassed_by_an_associated_modifier(
    ncci: CodeSets, mods1: list[str], mods2: list[str], fires: bool
) -> None:
    claim = _on(VISIT, line(1, "0001U", modifiers=mods1), line(2, "81167", modifiers=mods2))
    found = hits(validate(claim, ncci, validated_at=VALIDATED_AT), "CF-NCCI-001")
    assert bool(found) is fires
    if fires:
        assert found[0].line == 2 and "0001U on line 1" in found[0].message
        assert "XE, XS, XP, XU or 59 to line 2" in (found[0].fix_hint or "")


@requires_ncci
@pytest.mark.parametrize("mods", [[], ["59"], ["XU"], ["25"]])
def test_indicator_0_is_never_bypassed(ncci: CodeSets, mods: list[str]) -> None:
    claim = _on(DOS_2023, line(1, "0001A"), line(2, "36591", modifiers=mods))
    [hit] = hits(validate(claim, ncci, validated_at=AT_2023), "CF-NCCI-001")
    assert hit.line == 2 and "indicator 0" in hit.message
    assert (hit.fix_hint or "").startswith("Remove line 2")


@requires_ncci
def test_indicator_9_never_applies(ncci: CodeSets) -> None:
    claim = _on(date(2022, 1, 1), line(1, "0001A"), line(2, "90473"))
    verdict = validate(claim, ncci, validated_at=datetime(2022, 1, 2, tzinfo=UTC))
    assert hits(verdict, "CF-NCCI-001") == []


@requires_ncci
def test_modifier_25_bypasses_only_on_the_em_code(ncci: CodeSets) -> None:
    on_em = _on(DOS_2023, line(1, "0001A"), line(2, "99213", modifiers=["25"]))
    assert hits(validate(on_em, ncci, validated_at=AT_2023), "CF-NCCI-001") == []
    on_other = _on(DOS_2023, line(1, "0001A", modifiers=["25"]), line(2, "99213"))
    [hit] = hits(validate(on_other, ncci, validated_at=AT_2023), "CF-NCCI-001")
    assert hit.line == 2 and "25 on the E/M line" in (hit.fix_hint or "")


@requires_ncci
def test_modifier_25_judges_the_em_code_as_the_edit_matched_it(ncci: CodeSets) -> None:
    """The edit is looked up by the normalized codes: the E/M code that 25 bypasses on is
    told by them too, not by the code as billed (a stray space made it a denial)."""
    spaced = _on(DOS_2023, line(1, "0001A"), line(2, " 99213", modifiers=["25"]))
    assert hits(validate(spaced, ncci, validated_at=AT_2023), "CF-NCCI-001") == []


@requires_ncci
def test_ptp_applies_on_the_same_day_and_within_the_edit_dates(ncci: CodeSets) -> None:
    two_days = _on(DOS_2023, line(1, "0001A"), line(2, "36591"))
    split = patch(
        two_days,
        encounter=patch(two_days.encounter, service_end=DOS_2023 + timedelta(days=1)),
        lines=[two_days.lines[0], patch(two_days.lines[1], service_date=DOS_2023 + timedelta(1))],
    )
    assert hits(validate(split, ncci, validated_at=AT_2023), "CF-NCCI-001") == []
    after_deletion = _on(date(2024, 1, 2), line(1, "0001A"), line(2, "36591"))
    at = datetime(2024, 1, 3, tzinfo=UTC)
    assert hits(validate(after_deletion, ncci, validated_at=at), "CF-NCCI-001") == []


@requires_ncci
def test_the_clean_visit_passes_with_ncci_loaded(ncci: CodeSets) -> None:
    verdict = validate(coded(), ncci, validated_at=VALIDATED_AT)
    assert verdict.outcome == "clean" and verdict.edits == []


def test_hospital_tables_check_outpatient_claims() -> None:
    ptp = PtpTable.parse(
        ["27447\t20610\t\t20130101\t*\t0\tStandards of medical/surgical practice\r\n"],
        provider="hospital",
    )
    cs = CodeSets(ncci=NcciEdits(ptp={"hospital": ptp}))
    visit = _on(VISIT, line(1, "27447", "3000.00"), line(2, "20610", "120.00"))
    outpatient = patch(visit, encounter=patch(visit.encounter, setting="outpatient"))
    assert [
        h.line for h in hits(validate(outpatient, cs, validated_at=VALIDATED_AT), "CF-NCCI-001")
    ] == [2]
    professional = validate(visit, cs, validated_at=VALIDATED_AT)
    assert hits(professional, "CF-NCCI-001") == [] and hits(professional, "CF-NCCI-000")


# --- MUE by adjudication indicator -------------------------------------------------------


@requires_ncci
def test_mai_3_counts_the_day_and_says_it_may_be_appealed(ncci: CodeSets) -> None:
    ok = _on(VISIT, patch(line(1, "0009U"), units=2.0))
    assert hits(validate(ok, ncci, validated_at=VALIDATED_AT), "CF-MUE-002") == []
    over = _on(VISIT, line(1, "0009U"), patch(line(2, "0009U", modifiers=["91"]), units=2.0))
    [hit] = hits(validate(over, ncci, validated_at=VALIDATED_AT), "CF-MUE-002")
    assert "3 units of 0009U" in hit.message and "lines 1, 2" in hit.message
    assert "MAI 3" in hit.message and "appeal" in (hit.fix_hint or "")


@requires_ncci
def test_mai_2_policy_denial_is_final(ncci: CodeSets) -> None:
    over = _on(VISIT, patch(line(1, "0001U"), units=2.0))
    [hit] = hits(validate(over, ncci, validated_at=VALIDATED_AT), "CF-MUE-002")
    assert "MAI 2" in hit.message and "cannot be appealed" in (hit.fix_hint or "")
    assert hits(validate(over, ncci, validated_at=VALIDATED_AT), "CF-MUE-001") == []


@requires_ncci
def test_mai_1_is_not_a_day_edit(ncci: CodeSets) -> None:
    over = _on(VISIT, patch(line(1, "83036"), units=2.0))
    verdict = validate(over, ncci, validated_at=VALIDATED_AT)
    assert hits(verdict, "CF-MUE-002") == [] and [h.line for h in hits(verdict, "CF-MUE-001")] == [
        1
    ]


@requires_ncci
def test_mue_uses_the_real_excerpt_values() -> None:
    cs = CodeSets(ncci=load_ncci(CMS_DIR))
    over = _on(VISIT, line(1, "0009U"), patch(line(2, "0009U"), units=2.0))
    assert hits(validate(over, cs, validated_at=VALIDATED_AT), "CF-MUE-002")


# --- timely filing per payer -------------------------------------------------------------


def test_timely_filing_days_come_from_the_pack_per_payer(bare: CodeSets) -> None:
    strict: RulePack = DEFAULT_PACK.derive("test-tf", timely_filing_days={"00510": 90})
    at = datetime.combine(VISIT + timedelta(days=91), datetime.min.time(), UTC)
    [hit] = hits(validate(coded(), bare, validated_at=at, pack=strict), "CF-DATE-006")
    assert "payer 00510 accepts claims for 90 days" in hit.message
    assert hits(validate(coded(), bare, validated_at=at), "CF-DATE-006") == []
    other = patch(
        coded(),
        encounter=patch(
            coded().encounter, coverage=patch(coded().encounter.coverage, payer_id="60054")
        ),
    )
    assert hits(validate(other, bare, validated_at=at, pack=strict), "CF-DATE-006") == []


# --- duplicate claims across the stream --------------------------------------------------


def _second(first: CodedEncounter, encounter_id: str, minutes: int = 5, **line_changes: object):
    enc = patch(
        first.encounter,
        encounter_id=encounter_id,
        received_at=first.encounter.received_at + timedelta(minutes=minutes),
    )
    lines = [patch(ln, **line_changes) for ln in first.lines] if line_changes else first.lines
    return patch(
        first, encounter_id=encounter_id, encounter=enc, event_id="e-" + encounter_id, lines=lines
    )


def test_duplicate_claim_trips_and_near_misses_do_not(bare: CodeSets) -> None:
    store = DuplicateStore(":memory:")
    first = coded()
    verdict = validate(first, bare, validated_at=VALIDATED_AT, history=store)
    assert hits(verdict, "CF-DUP-001") == []
    store.record(first, verdict.outcome)

    dup = _second(first, "ENC-2026-000999")
    [hit] = hits(validate(dup, bare, validated_at=VALIDATED_AT, history=store), "CF-DUP-001")
    assert hit.field == "encounter_id" and first.encounter_id in hit.message
    assert hit.severity == "error" and hit.category == "duplicate"

    # The same encounter again (a replayed or re-read event) is not a duplicate of itself.
    assert hits(validate(first, bare, validated_at=VALIDATED_AT, history=store), "CF-DUP-001") == []
    # A second visit marked as a repeat is not a duplicate.
    repeat = _second(first, "ENC-2026-000998", modifiers=["76"])
    assert (
        hits(validate(repeat, bare, validated_at=VALIDATED_AT, history=store), "CF-DUP-001") == []
    )
    # The earlier encounter is never a duplicate of a later one.
    earlier = _second(first, "ENC-2026-000997", minutes=-60)
    assert (
        hits(validate(earlier, bare, validated_at=VALIDATED_AT, history=store), "CF-DUP-001") == []
    )


def test_a_rejected_encounter_is_no_original(bare: CodeSets) -> None:
    store = DuplicateStore(":memory:")
    first = coded()
    store.record(first, "rejected")
    fixed = _second(first, "ENC-2026-000999")
    assert hits(validate(fixed, bare, validated_at=VALIDATED_AT, history=store), "CF-DUP-001") == []
    store.record(first, "clean")  # the first one was corrected and billed after all
    assert hits(validate(fixed, bare, validated_at=VALIDATED_AT, history=store), "CF-DUP-001")


def test_duplicate_store_survives_reopen_and_writes_idempotently(tmp_path) -> None:
    store = DuplicateStore.in_state_dir(tmp_path)
    first = coded()
    store.record(first, "clean")
    store.record(first, "clean")
    store.commit()
    store.close()
    again = DuplicateStore.in_state_dir(tmp_path)
    assert again.db.execute("SELECT count(*) FROM seen").fetchone()[0] == 1
    assert again.earlier_duplicate(_second(first, "ENC-X")) == first.encounter_id
    assert fingerprint(first) == fingerprint(_second(first, "ENC-X"))


# --- packs ---------------------------------------------------------------------------------


def test_pack_severity_override_changes_the_outcome(bare: CodeSets) -> None:
    strict = DEFAULT_PACK.derive("test-strict", severities={"CF-REV-001": "error"})
    claim = patch(coded(), review_reasons=["confirm the principal diagnosis"])
    assert validate(claim, bare, validated_at=VALIDATED_AT).outcome == "warnings"
    verdict = validate(claim, bare, validated_at=VALIDATED_AT, pack=strict)
    assert verdict.outcome == "rejected" and verdict.rule_pack_version == "test-strict"
    assert hits(verdict, "CF-REV-001")[0].severity == "error"


def test_shipped_packs_are_selectable_and_immutable() -> None:
    assert get_pack("2026.11.1") is PACK_2026_11_1 and get_pack(None) is DEFAULT_PACK
    assert set(PACK_2026_11_1.rule_ids) < set(DEFAULT_PACK.rule_ids)
    with pytest.raises(ValueError, match="already registered"):
        from services.validation.engine import register_pack

        register_pack(PACK_2026_11_1.derive("2026.11.1"))


def test_charges_and_units_are_checked_per_line(bare: CodeSets) -> None:
    claim = _on(VISIT, line(1, "99213"), patch(line(2, "83036"), charge=Decimal("-1.00")))
    verdict = validate(claim, bare, validated_at=VALIDATED_AT)
    assert [h.line for h in hits(verdict, "CF-LINE-001")] == [2]
