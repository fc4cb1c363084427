"""One claim's 837 loops are grouped without the dictionaries that group several
(``x12_837_common._group``): the same grouping, and the same refusals, as the general
grouping gives the claim alone, for every claim of the simulator's encounters of both
mixes, as a physician's and as a facility's claim, and with each coverage made invalid."""

from __future__ import annotations

from typing import Any

import pytest

from bench.bench_claims_stage import verdicts
from pipeline.errors import InputError
from services.claims.domain import claim_parts, plan_claim
from services.claims.settings import ClaimsSettings
from services.claims.x12_837_common import ClaimInput, _group, _grouped
from services.claims.x12_837i import INSTITUTIONAL
from services.claims.x12_837p import PROFESSIONAL
from services.refdata.masterdata import load_master_data


def outcome(group: Any, claim: ClaimInput, billing_of: Any) -> Any:
    try:
        return ("grouped", group([claim], billing_of))
    except InputError as exc:
        return ("refused", type(exc).__name__, exc.field, exc.reason)


@pytest.fixture(scope="module")
def claims() -> list[ClaimInput]:
    master = load_master_data(ClaimsSettings())
    out = []
    for mix in ("office", "all"):
        for verdict in verdicts(40, mix):
            for _, part in claim_parts(verdict):
                out.append(plan_claim(part, master=master).claim)
    return out


def invalid(claim: ClaimInput) -> list[ClaimInput]:
    """The claim with a relationship the 837 refuses, and a dependent without subscriber."""
    coverage = claim.coverage
    bad = coverage.model_copy(update={"relationship": "99"})
    orphan = coverage.model_copy(update={"relationship": "19", "subscriber": None})
    return [ClaimInput(claim.claim_id, claim.coded, billed_coverage=c) for c in (bad, orphan)]


def test_one_claim_is_grouped_as_the_general_grouping_does(claims: list[ClaimInput]) -> None:
    assert len(claims) > 60
    seen = set()
    for claim in claims:
        for one in (claim, *invalid(claim)):
            for profile in (PROFESSIONAL, INSTITUTIONAL):
                got = outcome(_group, one, profile.billing_provider)
                assert got == outcome(_grouped, one, profile.billing_provider)
                seen.add(got[0])
    assert seen == {"grouped", "refused"}
