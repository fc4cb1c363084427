"""``Segment.render`` looks for a delimiter in all of a segment's values at once, and for
the element at fault only when there is one: the same text and the same refusals as the
element-by-element check it replaced (kept here as the reference), on every segment of the
837s written for the simulator's encounters of both mixes (batched per payer and claim
type, as the service writes them), and with each delimiter put into each of their values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import pytest

from bench.bench_claims_stage import verdicts
from pipeline.errors import InputError
from services.claims import x12_837_common
from services.claims.domain import claim_parts, plan_claim, write_interchange
from services.claims.settings import ClaimsSettings
from services.refdata.masterdata import load_master_data
from services.x12.writer import (
    COMPONENT,
    DELIMITERS,
    ELEMENT,
    SEGMENT,
    Composite,
    Element,
    Segment,
    render,
    render_each,
)


def reference_render(segment: Segment) -> str:
    """The render before this change: each value checked as it is joined."""

    def check(pos: int, value: str) -> None:
        if segment.id == "ISA" and pos in (11, 16):
            return
        if any(ch in DELIMITERS for ch in value):
            raise InputError(f"{segment.id}{pos:02d}", f"contains an X12 delimiter: {value!r}")

    out: list[str] = []
    for pos, element in enumerate(segment.elements, start=1):
        if isinstance(element, Composite):
            parts = list(element.parts)
            while parts and parts[-1] == "":
                parts.pop()
            for part in parts:
                check(pos, part)
            out.append(COMPONENT.join(parts))
        else:
            check(pos, element)
            out.append(element)
    while out and out[-1] == "":
        out.pop()
    return ELEMENT.join((segment.id, *out)) + SEGMENT


def outcome(render_one: object, segment: Segment) -> tuple[str, str]:
    try:
        return ("ok", render_one(segment))  # type: ignore[operator]
    except InputError as exc:
        return ("refused", f"{exc.field}: {exc.reason}")


def parsed(line: str) -> Segment:
    """A segment written as text (``early``'s, ``interchange``'s), back as a segment: an
    element with component separators is a composite (ISA16 is the separator itself)."""
    segment_id, *elements = line.removesuffix(SEGMENT).split(ELEMENT)
    if segment_id == "ISA":
        return Segment(segment_id, tuple(elements))
    return Segment(
        segment_id,
        tuple(Composite(tuple(e.split(COMPONENT))) if COMPONENT in e else e for e in elements),
    )


@pytest.fixture(scope="module")
def written() -> list[Segment]:
    """Every distinct segment of the 837s written for 40 encounters of each mix."""
    master = load_master_data(ClaimsSettings())
    seen: dict[Segment, None] = {}

    def keep(segments: Sequence[Segment | str]) -> str:
        segments = list(segments)
        seen.update(dict.fromkeys(s if isinstance(s, Segment) else parsed(s) for s in segments))
        return render(segments)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(x12_837_common, "render", keep)
        # Every segment built, none kept already rendered (test_claims_837_kept.py).
        patch.setattr(x12_837_common, "_rendered", tuple)
        x12_837_common._billing_lines_by_value.cache_clear()
        x12_837_common._BILLING.clear()
        x12_837_common._parties.cache_clear()
        for mix in ("office", "all"):
            groups = defaultdict(list)
            for verdict in verdicts(40, mix):
                if verdict.outcome == "rejected":
                    continue
                for _, part in claim_parts(verdict):
                    planned = plan_claim(part, master=master)
                    groups[(planned.payer_id, planned.claim_type)].append(planned)
            for n, planned in enumerate(groups.values(), start=1):
                write_interchange(
                    planned, sender_id="CLAIMFLOW", receiver_id="CH01", control_number=n
                )
    x12_837_common._billing_lines_by_value.cache_clear()
    x12_837_common._BILLING.clear()
    x12_837_common._parties.cache_clear()
    return list(seen)


def test_every_written_segment_renders_as_before(written: list[Segment]) -> None:
    assert len(written) > 500
    assert {s.id for s in written} >= {"ISA", "GS", "HL", "CLM", "HI", "SV1", "SV2", "IEA"}
    for segment in written:
        assert segment.render() == reference_render(segment)


def with_value(segment: Segment, pos: int, part: int | None, value: str) -> Segment:
    """The segment with one value (element ``pos``, or one component of it) replaced."""
    elements: list[Element] = list(segment.elements)
    element = elements[pos]
    if part is None or not isinstance(element, Composite):
        elements[pos] = value
    else:
        parts = list(element.parts)
        parts[part] = value
        elements[pos] = Composite(tuple(parts))
    return Segment(segment.id, tuple(elements))


def tampered(segments: list[Segment]) -> Iterator[Segment]:
    """Each segment with each delimiter put into each of its values in turn."""
    for segment in segments:
        for pos, element in enumerate(segment.elements):
            places = range(len(element.parts)) if isinstance(element, Composite) else [None]
            for part in places:
                current = element.parts[part] if isinstance(element, Composite) else element
                for ch in DELIMITERS:
                    yield with_value(segment, pos, part, f"{current}{ch}X")


def test_a_delimiter_in_any_value_is_refused_as_before(written: list[Segment]) -> None:
    refused = 0
    for segment in tampered(written):
        before = outcome(reference_render, segment)
        assert outcome(Segment.render, segment) == before
        refused += before[0] == "refused"
    assert refused > 1000
    # ISA11 and ISA16 carry separators: not refused there, by either render.
    isa = next(s for s in written if s.id == "ISA")
    assert outcome(Segment.render, with_value(isa, 10, None, "^"))[0] == "ok"


def test_a_document_is_rendered_as_each_segment_renders(written: list[Segment]) -> None:
    """``render`` joins text as it is, and renders each segment when one is not text: the
    same document, or the same refusal of the same segment first, as ``render_each`` (the
    way every document was rendered before), for text, segments and refused segments
    mixed, in lists, tuples and generators."""
    text: list[Segment | str] = [s.render() for s in written[:60]]
    bad = [with_value(written[5], 0, None, "A*B"), with_value(written[7], 1, None, "C~")]
    documents: list[list[Segment | str]] = [
        text,
        list(written[:60]),
        [*text[:30], *written[30:60]],
        [*text[:10], bad[0], *text[10:20], bad[1]],
        [*written[:3], bad[1], *text[:5], bad[0]],
        [],
    ]
    for document in documents:
        for shaped in (list(document), tuple(document), (s for s in document)):
            assert outcome(render, shaped) == outcome(render_each, document)  # type: ignore[arg-type]
    assert outcome(render, documents[3])[1].startswith(bad[0].id)  # type: ignore[arg-type]
