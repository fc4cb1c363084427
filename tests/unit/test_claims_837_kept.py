"""The 837's parts that repeat from one interchange to the next (the 2000A billing provider
loop, the 1000A submitter and 1000B receiver) are rendered once and kept: every 837 written
for the simulator's encounters of both mixes, batched per payer and claim type and one
claim per interchange, is the same text (or the same refusal) as when every segment is
built and rendered for each interchange, and a value the document's render refuses is
still refused where it was, however often it is written.

The segments the loops write as text (the lines' LX, SV1, SV2, DTP*472 and REF*6R, the
837P's CLM and HI, the 837I's HI and DTPs, the providers' NM1, N3, REF*F8, the
subscriber's HL and NM1s) are what ``Segment.render`` writes of their elements: every
written segment is rendered again from its elements by the general renderer. A delimiter
in a value not checked before the text is written (a line's place of service, the claim's
place of service or frequency) is still refused by the document's render, naming the
element."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from bench.bench_claims_stage import verdicts
from pipeline.errors import InputError
from services.claims import x12_837_common, x12_837i, x12_837p
from services.claims.domain import PlannedClaim, claim_parts, plan_claim, write_interchange
from services.claims.settings import ClaimsSettings
from services.refdata.masterdata import load_master_data
from services.x12 import writer
from services.x12.writer import COMPONENT, ELEMENT, SEGMENT, Composite, Segment


def forget() -> None:
    x12_837_common._billing_lines_by_value.cache_clear()
    x12_837_common._parties.cache_clear()
    for memo in BY_INSTANCE + BY_VALUE:
        memo.clear()


class Forgetful(dict[Any, Any]):
    """A memo that keeps nothing."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


#: The memos kept by instance: (module, name).
BY_INSTANCE_NAMES = [
    (x12_837_common, "_NM1"),
    (x12_837_common, "_BILLING"),
    (x12_837i, "_BILLED_BY"),
    (x12_837p, "_FACILITY"),
]
BY_INSTANCE = [getattr(module, name) for module, name in BY_INSTANCE_NAMES]
#: The memos kept by value (codes, taxonomies, payers, types of bill, envelope ids): with
#: them off, every fast path finds nothing kept and hands over to the checked path it
#: stands in for, the judge.
BY_VALUE_NAMES = [
    (x12_837_common, "_DX_CODES"),
    (x12_837_common, "_PROCEDURES"),
    (x12_837_common, "_PRV"),
    (x12_837_common, "_PAYERS"),
    (x12_837i, "_REVENUES"),
    (x12_837i, "_BILLS"),
    (writer, "_ENVELOPE_IDS"),
]
BY_VALUE = [getattr(module, name) for module, name in BY_VALUE_NAMES]


@pytest.fixture
def nothing_kept() -> Iterator[Callable[[], None]]:
    """Switch keeping off (every part built and rendered each time) when called."""
    with pytest.MonkeyPatch.context() as patch:

        def off() -> None:
            forget()
            patch.setattr(x12_837_common, "_rendered", tuple)
            for module, name in BY_INSTANCE_NAMES + BY_VALUE_NAMES:
                patch.setattr(module, name, Forgetful())

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
    assert all(BY_INSTANCE)  # the providers, facilities and billing loops were kept
    assert all(BY_VALUE)  # and the codes, taxonomies, payers, bills and ids
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


def general(text: str) -> str:
    """``Segment.render`` of a written segment's elements (ISA16 is the separator itself)."""
    segment_id, *elements = text.removesuffix(SEGMENT).split(ELEMENT)
    if segment_id == "ISA":
        return Segment(segment_id, tuple(elements)).render()
    values = tuple(Composite(tuple(e.split(COMPONENT))) if COMPONENT in e else e for e in elements)
    return Segment(segment_id, values).render()


def write(chunk: list[PlannedClaim]) -> str:
    return write_interchange(chunk, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=1)


def test_written_segments_are_what_render_writes(planned: list[list[PlannedClaim]]) -> None:
    written = [write(chunk) for group in planned for chunk in [group, *([p] for p in group)]]
    ids = set()
    for x12 in written:
        for text in x12.splitlines():
            ids.add(text.split(ELEMENT, 1)[0])
            assert general(text) == text
    assert {"LX", "SV1", "SV2", "CLM", "HI", "SBR", "NM1", "HL", "DTP", "REF"} <= ids


def tampered(one: PlannedClaim, where: str, value: str) -> PlannedClaim:
    """The claim with ``value`` as the first line's or the claim's place of service, or as
    the frequency."""
    claim = one.claim
    coded = claim.coded
    if where == "frequency":
        return replace(one, claim=replace(claim, frequency=value))  # type: ignore[arg-type]
    if where == "line":
        lines = [coded.lines[0].model_copy(update={"place_of_service": value}), *coded.lines[1:]]
        coded = coded.model_copy(update={"lines": lines})
    else:
        encounter = coded.encounter.model_copy(update={"place_of_service": value})
        coded = coded.model_copy(update={"encounter": encounter})
    return replace(one, claim=replace(claim, coded=coded))


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        ("line", "2*", "SV105"),
        ("line", "2:", "SV105"),
        ("line", "~2", "SV105"),
        ("claim", "1^", "CLM05"),
        ("frequency", "1:", "CLM05"),
    ],
)
def test_a_delimiter_in_an_unchecked_value_is_refused(
    planned: list[list[PlannedClaim]], where: str, value: str, field: str
) -> None:
    group = next(g for g in planned if len(g) > 1 and g[0].claim_type == "professional")
    bad = tampered(group[0], where, value)
    for chunk in ([bad], [*group[1:], bad]):
        with pytest.raises(InputError) as caught:
            write(chunk)
        assert (type(caught.value).__name__, caught.value.field) == ("InputError", field)


@pytest.mark.parametrize(("where", "value"), [("line", ""), ("line", "22"), ("frequency", "")])
def test_empty_and_other_values_are_written_as_render_writes_them(
    planned: list[list[PlannedClaim]], where: str, value: str
) -> None:
    group = next(g for g in planned if g[0].claim_type == "professional")
    for text in write([tampered(group[0], where, value)]).splitlines():
        assert general(text) == text


def test_a_claim_alone_is_written_as_grouped(planned: list[list[PlannedClaim]]) -> None:
    """``_detail_one`` (a claim alone in its interchange) against the grouping it skips."""
    master = load_master_data(ClaimsSettings())
    pay_to = master.providers.pay_to if master is not None else {}
    seen = set()
    for group in planned:
        for one in group:
            institutional = one.claim_type == "institutional"
            profile = x12_837i.INSTITUTIONAL if institutional else x12_837p.PROFESSIONAL
            for where in ({}, pay_to):
                alone = x12_837_common._detail_one(one.claim, profile, where)
                assert alone == x12_837_common._detail_grouped([one.claim], profile, where)
                seen.add((one.claim_type, one.claim.coverage.relationship == "18"))
    assert len(seen) == 4  # both claim types, patients who are and are not the subscriber


def line_tampered(one: PlannedClaim, **update: Any) -> PlannedClaim:
    """The claim with its first line changed."""
    coded = one.claim.coded
    lines = [coded.lines[0].model_copy(update=update), *coded.lines[1:]]
    return replace(one, claim=replace(one.claim, coded=coded.model_copy(update={"lines": lines})))


def outcome(chunk: list[PlannedClaim]) -> str:
    try:
        return write(chunk)
    except InputError as exc:
        return f"refused {type(exc).__name__} {exc.field}: {exc.reason}"


@pytest.mark.parametrize("claim_type", ["professional", "institutional"])
@pytest.mark.parametrize(
    "update",
    [
        {"charge": Decimal("-1")},
        {"non_covered_charge": Decimal("1")},
        {"non_covered_charge": Decimal("1000000")},
        {"modifiers": ["25", "59"]},
        {"modifiers": ["2*"]},
        {"modifiers": ["25", "59", "76", "77", "91"]},
        {"code": "9921"},
        {"code": None},
        {"revenue_code": "45"},
        {"revenue_code": "0120"},
        {"revenue_code": "x"},
        {"revenue_code": None},
        {"dx_pointers": []},
        {"dx_pointers": [1, 1]},
        {"dx_pointers": [2, 1, 1]},
        {"dx_pointers": [1, 2, 3, 4, 5]},
        {"dx_pointers": [0]},
        {"dx_pointers": [99]},
        {"place_of_service": "22"},
        {"units": 1.5},
    ],
    ids=repr,
)
def test_a_line_the_fast_path_leaves_is_written_or_refused_as_checked(
    planned: list[list[PlannedClaim]],
    nothing_kept: Callable[[], None],
    claim_type: str,
    update: dict[str, Any],
) -> None:
    """A line's fast path (kept codes, no check) hands over to the checked one for
    anything it does not know: the same text or refusal, kept or not, alone or batched."""
    group = next(g for g in planned if len(g) > 1 and g[0].claim_type == claim_type)
    bad = line_tampered(group[0], **update)
    chunks = ([bad], [*group[1:], bad])
    forget()
    write_all([group])  # every code of the group kept
    kept = [outcome(chunk) for chunk in chunks]
    nothing_kept()
    assert kept == [outcome(chunk) for chunk in chunks]


@pytest.mark.parametrize(
    "code", ["I10", "i10", " I10 ", "I1.0", "I1", "10I", "I10*", "Z0000", "E11.9"]
)
def test_a_diagnosis_is_written_or_refused_as_checked(
    planned: list[list[PlannedClaim]], nothing_kept: Callable[[], None], code: str
) -> None:
    """Diagnosis codes kept as written (``kept_dx_code``) against each checked again."""
    for claim_type in ("professional", "institutional"):
        group = next(g for g in planned if len(g) > 1 and g[0].claim_type == claim_type)
        coded = group[0].claim.coded
        diagnoses = [*coded.diagnoses[:-1], coded.diagnoses[-1].model_copy(update={"code": code})]
        tampered = coded.model_copy(update={"diagnoses": diagnoses})
        bad = replace(group[0], claim=replace(group[0].claim, coded=tampered))
        chunks = ([bad], [*group[1:], bad])
        forget()
        write_all([group])
        kept = [outcome(chunk) for chunk in chunks]
        again = [outcome(chunk) for chunk in chunks]
        nothing_kept()
        assert kept == again == [outcome(chunk) for chunk in chunks]
