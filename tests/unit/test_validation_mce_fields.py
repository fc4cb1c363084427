"""The MCE asked by a claim's fields gives what it gives for the claim built from them.

``Context.mce`` and the MCE rules ask ``CodeSets.mce_edits_of`` with the patient's age,
sex and discharge status, without building an ``MceClaim``; the judge is
``CodeSets.mce_claim_edits`` of ``Context.mce_claim`` (the path before). On the simulators'
coded encounters (both mixes) and on the same encounters with other birth dates, sexes and
discharge statuses, and dates outside the code sets: the whole claim, and each diagnosis
alone as the MCE rules ask about it; and ``Context.mce``, the whole claim's edits.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import sim_corpus

from pipeline.models import CodedEncounter
from services.refdata.codesets import normalize_code
from services.validation.engine import Context
from services.validation.packs import DEFAULT_PACK

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def variants(coded: CodedEncounter, n: int) -> Iterator[CodedEncounter]:
    yield coded
    enc = coded.encounter
    born = [date(2026, 1, 1), date(2019, 6, 1), date(1990, 2, 3), date(1940, 5, 6)][n % 4]
    patient = enc.patient.model_copy(update={"birth_date": born, "sex": "MFU"[n % 3]})
    status = [None, "01", "xx", "20", "99"][n % 5]
    changed = enc.model_copy(update={"patient": patient, "discharge_status": status})
    yield coded.model_copy(update={"encounter": changed})
    if n % 7 == 0:
        old = changed.model_copy(update={"service_start": date(2021, 5, 1)})
        yield coded.model_copy(
            update={"encounter": old.model_copy(update={"service_end": old.service_start})}
        )


def test_mce_by_fields_is_the_mce_by_claim() -> None:
    codesets = sim_corpus.codesets()
    asked = 0
    for mix in sim_corpus.MIXES:
        for n, original in enumerate(sim_corpus.coded(mix)):
            for coded in variants(original, n):
                ctx = Context(coded, codesets, NOW, DEFAULT_PACK)
                dxs = [normalize_code(d.code) for d in coded.diagnoses]
                pcs = tuple(normalize_code(p.code) for p in coded.pcs_procedures)
                questions = [(dxs[0], tuple(dxs[1:]), pcs)] if dxs else []
                questions += [(dx, (), ()) for dx in dxs]
                for pdx, sdx, procedures in questions:
                    judge = codesets.mce_claim_edits(ctx.mce_claim(pdx, sdx, procedures))
                    assert ctx.mce_edits(pdx, sdx, procedures) == judge, (coded.encounter_id, pdx)
                    asked += 1
                # the whole claim's edits as Context.mce finds them (by the fields, inlined)
                whole: frozenset[str] = frozenset()
                if dxs and ctx.age is not None:
                    claim = ctx.mce_claim(dxs[0], tuple(dxs[1:]), pcs)
                    whole = codesets.mce_claim_edits(claim) or frozenset()
                assert Context(coded, codesets, NOW, DEFAULT_PACK).mce == whole, coded.encounter_id
    assert asked > 1000
