"""Rules rewritten to do less per encounter give the hits their first versions gave.

The judges below are the rules as they were (CF-LINE-003 named every line before it
checked it, CF-X12-002 tested identifiers character by character, CF-DX-003 built a pair
for every two codes and went through every code's ranges on claims with no pair, the
duplicate store worked out the fingerprint on every call). They run on the simulators'
coded encounters (both mixes) and on those encounters changed so
that each rule fires: pointers missing, past the claim's diagnoses and too many,
delimiters in identifiers, diagnoses an Excludes1 note names. And the line-code check
kept per code and date (``CodeSets.procedure``) against the check worked out each time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest
import sim_corpus

from pipeline.models import CodedDiagnosis, CodedEncounter
from services.refdata.codesets import CodeSets, dotted, normalize_code
from services.refdata.ub04 import claim_diagnoses, claim_kinds, claim_part, line_claim_type
from services.validation.duplicates import DuplicateStore, _order_key, change_record, fingerprint
from services.validation.engine import REGISTRY, Context, Hit
from services.validation.packs import DEFAULT_PACK
from services.validation.rules._util import where
from services.validation.rules.excludes1 import _in, excluded_by
from services.x12.guides import MAX_DX_POINTERS
from services.x12.writer import DELIMITERS


def judge_pointers(ctx: Context) -> Iterator[Hit]:
    n = len(claim_diagnoses(ctx.coded))
    for i, line in enumerate(ctx.coded.lines):
        if line_claim_type(line, ctx.setting) != "professional":
            continue
        field = f"lines[{i}].dx_pointers"
        w = where(line.line_number, line.code)
        if not line.dx_pointers:
            yield Hit(field, f"{w} points at no diagnosis.", line.line_number)
        if len(line.dx_pointers) > MAX_DX_POINTERS:
            yield Hit(
                field,
                f"{w} points at {len(line.dx_pointers)} diagnoses; a claim line holds "
                f"{MAX_DX_POINTERS}.",
                line.line_number,
            )
        bad = [p for p in line.dx_pointers if not 1 <= p <= n]
        if bad:
            yield Hit(
                field,
                f"{w} points at diagnosis {', '.join(map(str, bad))}, but the claim has "
                f"{n} {'diagnosis' if n == 1 else 'diagnoses'}.",
                line.line_number,
            )


def judge_delimiters(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    values = {
        "encounter.patient.patient_id": enc.patient.patient_id,
        "encounter.coverage.payer_id": enc.coverage.payer_id,
        "encounter.coverage.member_id": enc.coverage.member_id,
        "encounter.coverage.group_number": enc.coverage.group_number,
        "encounter.prior_claim_reference": enc.prior_claim_reference,
        "encounter.billing_provider.tax_id": enc.billing_provider.tax_id,
        "encounter.billing_provider.taxonomy": enc.billing_provider.taxonomy,
    }
    for field, value in values.items():
        if value and any(ch in DELIMITERS for ch in value):
            yield Hit(field, f"{field.rsplit('.', 1)[-1]} contains an X12 delimiter.")


def judge_excludes1(ctx: Context) -> Iterator[Hit]:
    codes = [normalize_code(d.code) for d in ctx.coded.diagnoses]
    reported: set[frozenset[str]] = set()
    for i, code in enumerate(codes):
        for low, high, note in excluded_by(code):
            for j, other in enumerate(codes):
                pair = frozenset((code, other))
                if j == i or other == code or pair in reported or not _in(other, low, high):
                    continue
                reported.add(pair)
                yield Hit(
                    f"diagnoses[{max(i, j)}].code",
                    f"Diagnoses {min(i, j) + 1} and {max(i, j) + 1} ({dotted(codes[min(i, j)])} "
                    f"and {dotted(codes[max(i, j)])}) exclude each other: {dotted(code)} "
                    f"Excludes1 {note}.",
                )


JUDGES = {
    "CF-LINE-003": judge_pointers,
    "CF-X12-002": judge_delimiters,
    "CF-DX-003": judge_excludes1,
}

# Codes whose Excludes1 notes name codes of the simulators' encounters (diabetes, E10-E13;
# hypertension, I10-I16; hyperlipidemia) and repeats of what is there.
EXTRA_CODES = ("R739", "E109", "O2441", "I150", "E7801", "E119", "R030")


def _pointed(coded: CodedEncounter) -> Iterator[CodedEncounter]:
    """The encounter with its first line's pointers changed every way CF-LINE-003 checks."""
    n = len(claim_diagnoses(coded))
    if coded.lines:
        for pointers in ([], [0], [1, 2, 3, 4, 5], [n + 1], [1, n + 2, 2], [2, 1], [1, 2, 3, 4]):
            lines = [coded.lines[0].model_copy(update={"dx_pointers": pointers})]
            yield coded.model_copy(update={"lines": lines + coded.lines[1:]})


def _variants(coded: CodedEncounter) -> Iterator[CodedEncounter]:
    yield coded
    yield from _pointed(coded)
    enc = coded.encounter
    for ch in sorted(DELIMITERS):
        coverage = enc.coverage.model_copy(
            update={"member_id": enc.coverage.member_id + ch, "group_number": f"G{ch}1"}
        )
        patient = enc.patient.model_copy(update={"patient_id": ch + enc.patient.patient_id})
        changed = enc.model_copy(update={"coverage": coverage, "patient": patient})
        yield coded.model_copy(update={"encounter": changed})
    extra = [
        CodedDiagnosis(
            code=c,
            sequence=len(coded.diagnoses) + k + 1,
            source="ehr",
            confidence=1.0,
            billable=True,
        )
        for k, c in enumerate(EXTRA_CODES)
    ]
    longer = coded.model_copy(update={"diagnoses": [*coded.diagnoses, *extra]})
    yield longer
    yield from _pointed(longer)  # five pointers, all at diagnoses of the claim
    yield coded.model_copy(update={"diagnoses": [*extra, *coded.diagnoses]})


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_rules_give_their_judges_hits(mix: str) -> None:
    fired = dict.fromkeys(JUDGES, 0)
    for coded in sim_corpus.coded(mix):
        for variant in _variants(coded):
            ctx = Context(variant, sim_corpus.codesets(), sim_corpus.VALIDATED_AT, DEFAULT_PACK)
            for rule_id, judge in JUDGES.items():
                expected = list(judge(ctx))
                assert list(REGISTRY[rule_id].check(ctx)) == expected, (rule_id, variant)
                fired[rule_id] += len(expected)
    assert all(fired.values()), fired  # every rule fired on some variant


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_duplicate_store_keeps_the_fingerprint_it_recorded(mix: str) -> None:
    once = DuplicateStore(":memory:", changelog=True)
    every = DuplicateStore(":memory:", changelog=True)
    every._keys = lambda c: (fingerprint(c), _order_key(c))  # type: ignore[method-assign]

    def record_before(c: CodedEncounter, outcome: str) -> None:  # the change as json.dumps wrote it
        row = (fingerprint(c), _order_key(c), int(outcome != "rejected"))
        every._upsert(c.encounter_id, *row)
        every.log_change(c.encounter_id, json.dumps(row).encode())

    every.record = record_before  # type: ignore[method-assign]
    coded = sim_corpus.coded(mix)
    for c in [*coded, *coded]:  # the second time, each is a duplicate of the first
        assert once.earlier_duplicate(c) == every.earlier_duplicate(c)
        once.record(c, "clean")
        every.record(c, "clean")
    rows = "SELECT * FROM seen ORDER BY encounter_id"
    assert once.db.execute(rows).fetchall() == every.db.execute(rows).fetchall()
    a, b = coded[0], coded[1]
    assert once.earlier_duplicate(b) == every.earlier_duplicate(b)
    once.record(a, "rejected")  # asked about b, records a: a's own fingerprint
    every.record(a, "rejected")
    assert once.db.execute(rows).fetchall() == every.db.execute(rows).fetchall()
    assert once.take_changes() == every.take_changes()


def test_a_change_record_is_what_json_dumps_writes() -> None:
    for fp, received_at, billable in [
        ("0f" * 16, "2026-03-02T17:00:00+00:00", 1),
        ("", "2026-03-02T17:00:00.123456", 0),
        ('a"b\\c', "\u00e9\u2028\x00", 1),
    ]:
        want = json.dumps((fp, received_at, billable)).encode()
        assert change_record(fp, received_at, billable) == want


@pytest.mark.parametrize("loaded", [False, True], ids=["format-only", "reference-files"])
def test_line_code_checks_kept_per_code_and_date_are_the_checks_worked_out(loaded: bool) -> None:
    cs = sim_corpus.codesets() if loaded else CodeSets.load(None)
    codes = {ln.code for mix in sim_corpus.MIXES for c in sim_corpus.coded(mix) for ln in c.lines}
    codes = {c for c in codes if c} | {"99213", "0001U", "G0439", "J3490", "A0000", "9921", "X"}
    days = [None, *(date(year, month, 15) for year in range(2022, 2028) for month in (1, 7))]
    answers = {(code, on): cs._procedure(code, on) for code in sorted(codes) for on in days}
    for _ in range(2):  # worked out and kept, then answered from what was kept
        assert {key: cs.procedure(*key) for key in answers} == answers
    assert {a.status for a in answers.values()} >= {"valid", "invalid"}


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_facility_lines_found_once_are_the_lines_each_rule_found(mix: str) -> None:
    facility = 0
    for coded in sim_corpus.coded(mix):
        for kind in {*claim_kinds(coded), "institutional", "professional"}:
            part = claim_part(coded, kind, renumber=False)  # type: ignore[arg-type]
            ctx = Context(part, sim_corpus.codesets(), sim_corpus.VALIDATED_AT, DEFAULT_PACK)
            judge = [
                (i, line)
                for i, line in enumerate(part.lines)
                if line_claim_type(line, ctx.setting) == "institutional"
            ]
            assert ctx.facility_lines == judge
            facility += len(judge)
    assert facility or mix == "office"
