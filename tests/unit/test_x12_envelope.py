"""``interchange`` writes the ISA, GS, GE and IEA of a usual envelope as text straight away:
the same document, or the same refusal, as the segments it made before (kept here as the
reference) rendered by ``render``, for envelopes of every kind claimflow and the payer
simulator write and for odd ones (a delimiter or nothing in a free value, an identifier to
strip, the smallest and largest control numbers, early and late times)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.errors import InputError
from services.x12.writer import (
    COMPONENT,
    REPETITION,
    Envelope,
    Rendered,
    Segment,
    ident,
    interchange,
    render,
    seg,
    transaction_set,
)


def reference(envelope: Envelope, transactions: Sequence[Sequence[Segment]]) -> list[Segment]:
    """The envelope as segments, as ``interchange`` made it before this change."""
    if not transactions:
        raise InputError("transactions", "an interchange needs at least one transaction set")
    if not 1 <= envelope.control_number <= 999_999_999:
        raise InputError("control_number", "must be 1 to 999999999")
    sender = ident(envelope.sender_id, "sender_id", min_len=2, max_len=15)
    receiver = ident(envelope.receiver_id, "receiver_id", min_len=2, max_len=15)
    number = envelope.control_number
    icn = f"{number:09d}"
    created = envelope.created
    out = [
        seg(
            "ISA",
            *("00", " " * 10, "00", " " * 10, "ZZ", sender.ljust(15), "ZZ"),
            receiver.ljust(15),
            created.strftime("%y%m%d"),
            created.strftime("%H%M"),
            *(REPETITION, "00501", icn, "0", envelope.usage, COMPONENT),
        ),
        seg(
            "GS",
            envelope.functional_id,
            sender,
            receiver,
            created.strftime("%Y%m%d"),
            created.strftime("%H%M"),
            str(number),
            "X",
            envelope.version,
        ),
    ]
    for transaction in transactions:
        out.extend(transaction)
    out.append(seg("GE", str(len(transactions)), str(number)))
    out.append(seg("IEA", "1", icn))
    return out


def outcome(build: object, envelope: Envelope, transactions: list[list[Segment]]) -> str:
    try:
        segments: list[Segment | Rendered] = build(envelope, transactions)  # type: ignore[operator]
        return render(segments)
    except InputError as exc:
        return f"refused {exc.field}: {exc.reason}"


def test_the_envelope_is_written_as_its_segments_render() -> None:
    body = [seg("BHT", "0019", "00", "1", "20260303", "0900", "CH")]
    one = [transaction_set("837", "0001", "005010X222A1", body)]
    two = [*one, transaction_set("837", "0002", "005010X222A1", body)]
    checked = fast = 0
    for values in itertools.product(
        ["CLAIMFLOW", " CH01 ", "ABCDEFGHIJKLMNO", "X"],  # sender
        ["CH01", "030240928"],  # receiver
        [1, 778, 999_999_999, 0],  # control number
        [datetime(2026, 3, 3, 9, 5, tzinfo=UTC), datetime(999, 12, 31, 23, 59)],
        ["HC", "FA", "HN", "", "H*C", "H~"],  # GS01
        ["005010X222A1", "005010X231A1", "", "0050:10"],  # GS08
        ["P", "T", "", "^"],  # ISA15
        [one, two, []],
    ):
        sender, receiver, number, created, functional_id, version, usage, sets = values
        envelope = Envelope(
            sender_id=sender,
            receiver_id=receiver,
            control_number=number,
            created=created,
            functional_id=functional_id,
            version=version,
            usage=usage,  # type: ignore[arg-type]
        )
        before = outcome(reference, envelope, sets)
        assert outcome(interchange, envelope, sets) == before, values
        checked += 1
        fast += before.startswith("ISA*")
    assert checked > 10_000
    assert fast > 300
