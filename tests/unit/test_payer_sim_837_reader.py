"""The payer simulator reads each claim of an interchange as it did, in one pass.

``read_837_claim`` now finds every claim of an interchange in one pass (cached per
interchange) instead of searching the interchange from its start for each claim. The judge
is the search it replaced, kept below: on every claim of the simulators' interchanges as
the claims stage batches them (both EHR mixes: 837P and 837I, dependents, DRGs, several
billing providers) and of the public 837 samples, the two give the same claim, and the same
error (field and reason) for a claim that is not there, a claim id that comes twice, and
claims with a bad date or amount beside good ones; asked again for a claim (the adjudication
after the front end), the claim read the first time, or the same error.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sim_corpus
from shared_data import SHARED_DATA

from pipeline.errors import InputError
from services.x12.reader import Segment, read_segments
from sim.payer import (
    _SUBSCRIBER_KEYS,
    Claim837,
    _claim837,
    _d8,
    _decimal,
    _RawLine,
    read_837_claim,
)

# --- the search per claim (the path before), the judge -----------------------------------------


def judge(x12: str, claim_id: str) -> Claim837:
    ctx: dict[str, str | None] = {}
    found: dict[str, str | None] | None = None
    clm: Segment | None = None
    lines: list[_RawLine] = []
    in_claim = False
    institutional = ""
    billing: dict[str, str | None] = {}
    for seg in read_segments(x12):
        sid = seg.id
        if sid in {"HL", "SE"} or (sid == "CLM" and in_claim):
            if clm is not None:
                break
            in_claim = False
        if sid == "HL":
            level = seg.el(3)
            keep = {"20": (), "22": (), "23": _SUBSCRIBER_KEYS}.get(level, tuple(ctx))
            ctx = {k: v for k, v in ctx.items() if k in keep}
            if level == "23":
                ctx["dependent"] = "Y"
        elif sid == "SBR" and not in_claim:
            ctx["sbr09"] = seg.el(9)
            ctx["sbr01"] = seg.el(1) or "P"
        elif sid == "NM1" and not in_claim and seg.el(1) in {"IL", "QC"}:
            name = (seg.el(3) or None, seg.el(4) or None)
            if seg.el(1) == "IL":
                ctx["member_id"] = seg.el(9) or None
                ctx["insured_last"], ctx["insured_first"] = name
            ctx["last"], ctx["first"] = name
        elif sid == "ST":
            institutional = "Y" if "X223" in seg.el(3) else ""
        elif sid == "NM1" and seg.el(1) == "85":
            billing = {"billing_npi": seg.el(9) or None, "billing_name": seg.el(3) or None}
        elif sid == "CLM":
            in_claim = True
            if seg.el(1) == claim_id:
                clm, found = seg, {**ctx, **billing, "institutional": institutional}
        elif clm is not None and in_claim:
            if sid == "LX":
                lines.append(_RawLine())
            elif sid == "SV1" and lines:
                lines[-1].sv1 = seg
            elif sid == "SV2" and lines:
                lines[-1].sv2 = seg
            elif sid == "HI" and seg.comp(1, 1) in ("DR", "DRG") and found is not None:
                found["drg"] = seg.comp(1, 2) or None
            elif sid == "DTP" and seg.el(1) == "472" and lines:
                lines[-1].start, lines[-1].end = _d8(seg)
            elif sid == "REF" and seg.el(1) == "6R" and lines:
                lines[-1].control_number = seg.el(2) or None
            elif sid == "SVD" and lines:
                lines[-1].prior = []
            elif sid == "CAS" and lines and lines[-1].prior is not None and seg.el(1) == "PR":
                for pos in range(2, 20, 3):
                    if seg.el(pos):
                        lines[-1].prior.append((seg.el(pos), _decimal(seg, pos + 1)))
    if clm is None or found is None:
        raise InputError("CLM01", f"claim {claim_id!r} is not in the 837")
    return _claim837(clm, found, lines)


def both(x12: str, claim_id: str) -> tuple[object, object]:
    """What each path gives: the claim, or the error's field and reason."""
    out = []
    for read in (read_837_claim, judge):
        try:
            out.append(read(x12, claim_id))
        except InputError as exc:
            out.append(("error", exc.field, str(exc)))
    return out[0], out[1]


# --- the corpus --------------------------------------------------------------------------------


def corpus() -> list[tuple[str, tuple[str, ...]]]:
    out = [item for mix in sim_corpus.MIXES for item in sim_corpus.interchanges(mix)]
    for name in ("x12_many_claims.txt", "x12_complex.txt", "x12_valid.txt", "x223-test.txt"):
        path = SHARED_DATA / "x12" / name
        if path.is_file():
            text = path.read_text()
            ids = tuple(s.el(1) for s in read_segments(text) if s.id == "CLM")
            # The judge searches from the start for each claim: the first 60 of the
            # 820 claims of x12_many_claims keep the test in seconds.
            out.append((text, ids[:60]))
    return out


@pytest.fixture(scope="module")
def interchanges() -> list[tuple[str, tuple[str, ...]]]:
    return corpus()


def test_the_corpus_has_the_shapes_that_matter(
    interchanges: list[tuple[str, tuple[str, ...]]],
) -> None:
    claims = []
    for x12, ids in interchanges:
        for cid in ids:
            try:
                claims.append(read_837_claim(x12, cid))
            except InputError:
                continue  # the public samples have claims whose charges do not add up
    assert len(claims) > 250
    assert max(len(ids) for _, ids in interchanges) >= 20
    assert any(c.institutional for c in claims) and any(not c.institutional for c in claims)
    assert any(c.drg for c in claims)
    assert any(c.insured_last_name for c in claims)  # a dependent
    assert len({c.billing_npi for c in claims}) > 1
    assert len({c.filing_indicator for c in claims}) > 1


def test_every_claim_reads_as_before(interchanges: list[tuple[str, tuple[str, ...]]]) -> None:
    for x12, ids in interchanges:
        for cid in ids:
            new, old = both(x12, cid)
            assert new == old, cid
            # Asked again (the adjudication after the front end): the claim read once, or the
            # same error again.
            again, _ = both(x12, cid)
            assert again == old, cid
            if isinstance(new, Claim837):
                assert again is new


def test_a_missing_or_repeated_claim_id_reads_as_before(
    interchanges: list[tuple[str, tuple[str, ...]]],
) -> None:
    x12, ids = next((x, i) for x, i in interchanges if len(i) >= 3)
    new, old = both(x12, "NOSUCHCLAIM")
    assert new == old and new[:2] == ("error", "CLM01")  # type: ignore[index]
    # The second claim's CLM01 renamed to the first's: the first one is read, both ways.
    twice = x12.replace(f"CLM*{ids[1]}*", f"CLM*{ids[0]}*", 1)
    new, old = both(twice, ids[0])
    assert new == old
    assert isinstance(new, Claim837) and new == read_837_claim(x12, ids[0])


def test_a_bad_claim_fails_alone_as_before(
    interchanges: list[tuple[str, tuple[str, ...]]],
) -> None:
    x12, ids = next((x, i) for x, i in interchanges if len(i) >= 3 and "DTP*472*D8*" in x)
    # The second claim's first service date made impossible, its charge made unbalanced.
    start = x12.index(f"CLM*{ids[1]}*")
    dtp = x12.index("DTP*472*D8*", start) + len("DTP*472*D8*")
    broken = x12[:dtp] + "20261345" + x12[dtp + 8 :]
    for _ in range(2):  # and again, as the adjudication asks after the front end
        for cid in ids:
            new, old = both(broken, cid)
            assert new == old, cid
    assert isinstance(both(broken, ids[0])[0], Claim837)
    assert both(broken, ids[1])[0][0] == "error"  # type: ignore[index]


def test_the_judge_sees_a_wrong_reading() -> None:
    """A claim read with another claim's context or lines is not equal to it."""
    x12, ids = sim_corpus.interchanges("office")[0]
    first, second = (read_837_claim(x12, cid) for cid in ids[:2])
    assert first != second
    assert first.lines[0].service_date is None or isinstance(first.lines[0].service_date, date)
    assert isinstance(first.charge, Decimal)
