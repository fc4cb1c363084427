"""999 and 277CA readers, on the public samples and on what the payer simulator writes."""

from __future__ import annotations

import pytest
from shared_data import SHARED_DATA, requires_shared

from pipeline.errors import InputError
from services.claims.acks import ClaimStatus, parse_277ca, parse_999

X12 = SHARED_DATA / "x12"


@requires_shared
def test_an_accepted_999_acknowledges_the_837_group_and_set() -> None:
    (group,) = parse_999((X12 / "x12_999_accepted.txt").read_text())
    assert (group.functional_id, group.group_control_number, group.version) == (
        "HC",
        "17456",
        "005010X223A2",
    )
    (st,) = group.sets
    assert (st.transaction, st.control_number, st.status, st.rejected) == (
        "837",
        "0001",
        "A",
        False,
    )
    assert group.group_status == "A"


@requires_shared
def test_a_rejected_999_names_the_segment_in_error() -> None:
    (group,) = parse_999((X12 / "x12_999_rejected.txt").read_text())
    assert group.group_control_number == "28" and group.group_status == "R"
    (st,) = group.sets
    assert st.rejected and st.status_codes == ("5",)
    (err,) = st.errors
    assert (err.segment_id, err.position, err.code) == ("NM", "17", "1")
    assert st.codes() == ["IK5:R:5", "IK3:NM:17:1"]
    assert st.reason("28") == (
        "999: transaction set 0028 of group 28 rejected: one or more segments in error; "
        "segment NM at 17: unrecognized segment id"
    )


@requires_shared
def test_an_accepted_277ca_reads_the_claim_with_the_payer_claim_number() -> None:
    (claim,) = parse_277ca((X12 / "x12_277CA_accepted.txt").read_text())
    assert claim.claim_id == "5781"
    assert claim.statuses == (ClaimStatus("A2", "20"),)
    assert not claim.rejected
    assert claim.payer_claim_control_number == "1107000000014420"


@requires_shared
def test_a_rejected_277ca_with_another_component_separator_gives_codes_and_reason() -> None:
    # This sample uses '|' as the component separator (ISA16), on a single line.
    (claim,) = parse_277ca((X12 / "x12_277CA_rejected.txt").read_text())
    assert claim.claim_id == "3920394930203" and claim.rejected
    assert claim.codes() == ["A7:562:85"]
    assert claim.reason() == (
        "277CA: claim rejected: rejected for invalid information, "
        "entity's National Provider Identifier (NPI) (billing provider)"
    )


def test_files_that_are_not_acknowledgments_are_refused() -> None:
    with pytest.raises(InputError):
        parse_999("not x12")
    sample_835 = (
        "ISA*00*          *00*          *ZZ*A              *ZZ*B              *260101*0000*^*00501"
        "*000000001*0*P*:~GS*HP*A*B*20260101*0000*1*X*005010X221A1~ST*835*0001~SE*2*0001~"
        "GE*1*1~IEA*1*000000001~"
    )
    with pytest.raises(InputError, match="AK1"):
        parse_999(sample_835)
    with pytest.raises(InputError, match="not a 277"):
        parse_277ca(sample_835)


def _variants() -> list[tuple[str, str]]:
    """(kind, text): the public 999 and 277CA samples, and 999s whose segments say other
    than their first ones would (no AK1, two groups, an IK5 without its AK2)."""
    files = [
        ("999", (X12 / "x12_999_accepted.txt").read_text()),
        ("999", (X12 / "x12_999_rejected.txt").read_text()),
        ("999", (X12 / "834_ls_le_ls_5010.999.txt").read_text()),
        ("277CA", (X12 / "x12_277CA_accepted.txt").read_text()),
        ("277CA", (X12 / "x12_277CA_rejected.txt").read_text()),
    ]
    rejected = files[1][1]
    ak1 = rejected.index("AK1")
    ak1_end = rejected.index("~", ak1) + 1
    files += [
        ("999", rejected[:ak1] + rejected[ak1_end:]),  # no AK1
        ("999", rejected[:ak1_end] + rejected[ak1:]),  # the group named twice
        ("999", rejected.replace("AK2", "XK2", 1)),  # an IK5 without its AK2
        ("277CA", files[1][1]),  # a 999 sent as a 277CA
    ]
    return files


@requires_shared
def test_an_acknowledgment_read_once_is_matched_as_when_read_again() -> None:
    """The routing reads a 999/277CA once and hands the reading on: the control numbers,
    rejections, payer claim numbers and refusals are those of reading it again."""
    from datetime import UTC, datetime

    from pipeline.models import PayerFile
    from services.claims.acks import (
        RejectionContext,
        answered_interchanges,
        read_ack,
        rejections,
    )

    def matched(file: PayerFile, ack: object) -> object:
        ctx = RejectionContext(
            lambda group: [(f"CLM-{group}", "ENC-1")],
            lambda claim: f"ENC-{claim}",
            datetime(2026, 11, 20, tzinfo=UTC),
        )
        try:
            found = rejections(file, ctx, ack)  # type: ignore[arg-type]
        except InputError as exc:
            return ("refused", exc.field, exc.reason)
        return (found, ctx.payer_claim_numbers, ctx.unknown_groups)

    for n, (kind, text) in enumerate(_variants()):
        file = PayerFile(
            event_id=f"e{n}",
            payer_id="P1",
            file_id=f"f{n}",
            kind=kind,  # type: ignore[arg-type]
            body=text.encode(),
            received_at=datetime(2026, 11, 20, tzinfo=UTC),
        )
        ack = read_ack(file)
        assert ack is not None
        assert list(ack.numbers) == answered_interchanges(file)
        assert matched(file, ack) == matched(file, None)
