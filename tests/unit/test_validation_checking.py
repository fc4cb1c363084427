"""``RulePack.checking`` (the applying rules whose ``needs`` the encounter meets) against
``RulePack.applying``, the dispatch before it, as the judge: every rule's hits, in order,
for every pack, on the simulators' coded encounters (both mixes), on each of them changed
so that every need is met (notes, review reasons, procedures, UB-04 codes, facility lines
and a type of bill on an office visit, a diagnosis the MCE edits), and on the crafted
claims the rule tests trip and nearly trip, on the whole encounter and on each claim part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

import pytest
import sim_corpus
from factories import codesets_bare, procedure
from test_facility_billing import FACILITY_CASES, note
from test_validation import CASES as SKELETON_CASES
from test_validation_edits import CASES as PAYER_GRADE_CASES
from test_validation_edits import MUE_LINE_EDITS, NCCI_FILES

from pipeline.models import CodedDiagnosis, CodedEncounter, Occurrence
from services.refdata import ub04
from services.refdata.codesets import CodeSets
from services.refdata.ncci import MueTable, NcciEdits, load_ncci
from services.validation.engine import PACKS, REGISTRY, Context, Hit, Rule, RulePack, two_claims

Select = Callable[[RulePack, Context], tuple[Rule, ...]]


def hits(coded: CodedEncounter, cs: CodeSets, at: datetime, pack: RulePack, select: Select) -> Any:
    """Each rule's hits on the encounter and on each of its claim parts, as ``run`` asks."""
    out: list[tuple[str | None, str, Hit]] = []
    contexts: list[tuple[str | None, CodedEncounter]] = [(None, coded)]
    kinds = ub04.claim_kinds(coded)
    if len(kinds) > 1:
        contexts += [(k, ub04.claim_part(coded, k, renumber=False)) for k in kinds]
    for kind, claim in contexts:
        ctx = Context(claim, cs, at, pack)
        out += [(kind, r.id, hit) for r in select(pack, ctx) for hit in r.check(ctx)]
    return out


def _dx(code: str, sequence: int) -> CodedDiagnosis:
    return CodedDiagnosis(code=code, sequence=sequence, source="ehr", confidence=1.0, billable=True)


def needs_met(coded: CodedEncounter) -> Iterator[CodedEncounter]:
    """The encounter as it is, then changed so that each rule's need is met."""
    yield coded
    enc = coded.encounter
    notes = [
        note("item_not_carried", "12.50"),
        note("coverage_not_carried"),
        note("data_not_carried"),
    ]
    yield coded.model_copy(update={"encounter": enc.model_copy(update={"notes": notes})})
    yield coded.model_copy(update={"review_reasons": ["diagnoses[0]: confirm it"]})
    yield coded.model_copy(update={"pcs_procedures": [procedure("0DTJ4ZZ", on=enc.service_start)]})
    codes = [Occurrence(code="1", date=enc.service_start)]
    yield coded.model_copy(update={"encounter": enc.model_copy(update={"occurrence_codes": codes})})
    yield coded.model_copy(update={"encounter": enc.model_copy(update={"condition_codes": ["X"]})})
    yield coded.model_copy(update={"type_of_bill": "0111"})
    if coded.lines:
        first = coded.lines[0].model_copy(update={"claim_type": "institutional"})
        yield coded.model_copy(update={"lines": [first, *coded.lines[1:]]})
    # a child's check-up for an adult and a manifestation first: edits of the MCE
    yield coded.model_copy(update={"diagnoses": [_dx("Z00129", 1), *coded.diagnoses[1:]]})
    yield coded.model_copy(update={"diagnoses": [_dx("G63", 1), _dx("E1142", 2)]})


def ncci_codesets() -> CodeSets | None:
    """The packaged code sets with the NCCI excerpts and a MUE line-edit table (as
    test_validation_edits's ``ncci``), None without the excerpts."""
    if not NCCI_FILES:
        return None
    from factories import CMS_DIR

    edits = load_ncci(CMS_DIR)
    edits.mue["practitioner"] = MueTable.parse(MUE_LINE_EDITS)
    return CodeSets(ncci=NcciEdits(ptp=edits.ptp, mue=edits.mue, notes=edits.notes))


def crafted() -> Iterator[tuple[CodedEncounter, str, datetime]]:
    """(claim, code sets, validated at) of the rule tests' crafted claims."""
    for _, build, *_ in SKELETON_CASES:
        yield build(), "bare", sim_corpus.VALIDATED_AT
    for _, sets, trips, near, at, *_ in PAYER_GRADE_CASES:
        yield trips(), sets, at
        yield near(), sets, at
    for _, trips, near in FACILITY_CASES:
        yield trips(), "bare", sim_corpus.VALIDATED_AT
        yield near(), "bare", sim_corpus.VALIDATED_AT


def applying(pack: RulePack, ctx: Context) -> tuple[Rule, ...]:
    return pack.applying(ctx)


def checking(pack: RulePack, ctx: Context) -> tuple[Rule, ...]:
    return pack.checking(ctx)


def _judged(claims: list[tuple[CodedEncounter, CodeSets, datetime]]) -> dict[str, int]:
    """Both dispatches on every claim and pack; how often each rule was left out."""
    left_out = {r: 0 for r, rule in REGISTRY.items() if rule.needs is not None}
    for coded, cs, at in claims:
        for pack in PACKS.values():
            assert hits(coded, cs, at, pack, checking) == hits(coded, cs, at, pack, applying), (
                pack.id,
                coded,
            )
            ctx = Context(coded, cs, at, pack)
            kept = pack.checking(ctx)
            for r in pack.applying(ctx):
                if r.needs is not None and r not in kept:
                    left_out[r.id] += 1
    return left_out


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_checking_gives_the_hits_of_every_applying_rule(mix: str) -> None:
    claims = [
        (variant, cs, sim_corpus.VALIDATED_AT)
        for coded in sim_corpus.coded(mix)
        for variant in needs_met(coded)
        for cs in (sim_corpus.codesets(), codesets_bare())
    ]
    left_out = _judged(claims)
    if mix == "office":  # an office visit meets none of the facility needs
        assert all(left_out[r] for r in ("CF-UB-001", "CF-UB-009", "CF-NOTE-001", "CF-REV-001"))


def test_checking_gives_the_hits_of_every_applying_rule_on_crafted_claims() -> None:
    more = ncci_codesets()
    sets = {"bare": codesets_bare(), "ncci": more}
    claims = [(c, cs, at) for c, s, at in crafted() if (cs := sets[s]) is not None]
    if more is not None:  # every claim with the NCCI tables too: the NCCI and MUE needs met
        claims += [(c, more, at) for c, _, at in claims]
    _judged(claims)


def test_checking_is_kept_per_answer_and_follows_the_date() -> None:
    pack = PACKS["2026.12.2"]
    coded = sim_corpus.coded("office")[0]
    before = coded.encounter.model_copy(
        update={"service_start": date(2024, 9, 1), "service_end": date(2024, 9, 1)}
    )
    cs = codesets_bare()
    for claim in (coded, coded.model_copy(update={"encounter": before})):
        ctx = Context(claim, cs, sim_corpus.VALIDATED_AT, pack)
        met = tuple(r for r in pack.applying(ctx) if r.needs is None or r.needs(ctx))
        assert pack.checking(ctx) == met
        assert pack.checking(Context(claim, cs, sim_corpus.VALIDATED_AT, pack)) is pack.checking(
            ctx
        )  # the kept answer


def _line_variants(coded: CodedEncounter) -> Iterator[CodedEncounter]:
    """The encounter, without lines, and with each line's claim type set each way."""
    yield coded
    yield coded.model_copy(update={"lines": []})
    for i, line in enumerate(coded.lines):
        for kind in ("institutional", "professional", None):
            changed = line.model_copy(update={"claim_type": kind})
            lines = [*coded.lines[:i], changed, *coded.lines[i + 1 :]]
            yield coded.model_copy(update={"lines": lines})
            yield coded.model_copy(update={"lines": [changed] * 2})


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_two_claims_is_claim_kinds_with_two(mix: str) -> None:
    seen = set()
    for coded in sim_corpus.coded(mix):
        for setting in ("professional", "outpatient", "inpatient"):
            enc = coded.encounter.model_copy(update={"setting": setting})
            for variant in _line_variants(coded.model_copy(update={"encounter": enc})):
                two = len(ub04.claim_kinds(variant)) == 2
                assert two_claims(variant) is two, variant
                seen.add(two)
    assert seen == {True, False}
