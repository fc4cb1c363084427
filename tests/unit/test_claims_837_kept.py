"""The 837's parts that repeat from one interchange to the next (the 2000A billing provider
loop, the 1000A submitter and 1000B receiver) are rendered once and kept: every 837 written
for the simulator's encounters of both mixes, batched per payer and claim type and one
claim per interchange, is the same text (or the same refusal) as when every segment is
built and rendered for each interchange, and a value the document's render refuses is
still refused where it was, however often it is written."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from bench.bench_claims_stage import verdicts
from pipeline.errors import InputError
from services.claims import x12_837_common
from services.claims.domain import PlannedClaim, claim_parts, plan_claim, write_interchange
from services.claims.settings import ClaimsSettings
from services.refdata.masterdata import load_master_data


def forget() -> None:
    x12_837_common._billing_lines.cache_clear()
    x12_837_common._parties.cache_clear()


@pytest.fixture
def nothing_kept() -> Iterator[Callable[[], None]]:
    """Switch keeping off (every part built and rendered each time) when called."""
    with pytest.MonkeyPatch.context() as patch:

        def off() -> None:
            forget()
            patch.setattr(x12_837_common, "_rendered", tuple)

        yield off
    forget()


@pytest.fixture(scope="module")
def planned() -> list[list[PlannedClaim]]:
    """The simulator's billable claims, grouped per payer and claim type."""
    master = load_master_data(ClaimsSettings())
    groups: dict[tuple[str, str], list[PlannedClaim]] = defaultdict(list)
    for mix in ("office", "all"):
        for verdict in verdicts(40, mix):
            if verdict.outcome == "rejected":
                continue
            for _, part in claim_parts(verdict):
                one = plan_claim(part, master=master)
                groups[(mix, one.payer_id, one.claim_type)].append(one)
    return list(groups.values())


def write_all(groups: list[list[PlannedClaim]]) -> list[str]:
    out = []
    number = 0
    for group in groups:
        for chunk in [group, *([p] for p in group)]:
            number += 1
            try:
                x12 = write_interchange(
                    chunk, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=number
                )
            except InputError as exc:
                x12 = f"refused {type(exc).__name__} {exc.field}: {exc.reason}"
            out.append(x12)
    return out


def test_kept_parts_write_the_same_837s(
    planned: list[list[PlannedClaim]], nothing_kept: Callable[[], None]
) -> None:
    forget()
    kept = write_all(planned)
    again = write_all(planned)  # every part now from what was kept
    nothing_kept()
    built = write_all(planned)
    assert len(built) > 80
    assert sum(x.startswith("ISA*") for x in built) > 80
    assert kept == built
    assert again == built


def test_a_delimiter_in_a_kept_part_is_refused_each_time(
    planned: list[list[PlannedClaim]], nothing_kept: Callable[[], None]
) -> None:
    """REF*EI carries the tax id as it is: the document's render refuses the delimiter,
    naming the element, and not as an error of one claim of the batch."""
    group = next(g for g in planned if len(g) > 1)
    first = group[0]
    provider = first.claim.coded.encounter.billing_provider
    bad = provider.model_copy(update={"tax_id": "84*0392716"})
    encounter = first.claim.coded.encounter.model_copy(update={"billing_provider": bad})
    coded = first.claim.coded.model_copy(update={"encounter": encounter})
    claim = replace(first.claim, coded=coded)
    tampered = [replace(first, claim=claim), *group[1:]]

    def outcome() -> tuple[str, str, str]:
        with pytest.raises(InputError) as caught:
            write_interchange(tampered, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=1)
        return (type(caught.value).__name__, caught.value.field, caught.value.reason)

    forget()
    kept = [outcome(), outcome()]
    nothing_kept()
    assert kept == [outcome(), outcome()]
    assert kept[0][:2] == ("InputError", "REF02")
