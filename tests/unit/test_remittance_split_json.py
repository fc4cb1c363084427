"""The claim-payment record's CLP loop as JSON: the per-class conversion gives what the
reflective one gave.

``split.claim_payment_json`` and ``claim_payment_from_json`` work out each dataclass's
conversion once (from its type hints) instead of inspecting every value. The reference
below is the reflective conversion they replaced, kept here as the judge: on every claim
payment of the 835 fixtures, the public sample 835 and the payer simulator's 835s for both
EHR mixes, the JSON must be the same string and the payment read back the same object
(equal to the one read from the 835). A payment read back by the process that split its file
is the object it kept, which must be what reading its text gives.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import fields, is_dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sim_corpus
from shared_data import SHARED_DATA
from test_remittance_split import payer_files

from pipeline.models import ClaimPaymentRecord, PayerFile, event_id
from services.remittance import split
from services.remittance.era import CasAdjustment, ClaimPayment, ServicePayment, read_835
from services.remittance.split import claim_payment_from_json, claim_payment_json, split_file

# --- the reflective conversion (the path before), the judge ------------------------------------


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal | date):
        return str(value)
    return value


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(inner, value)
    if origin is tuple:
        return tuple(_typed(typing.get_args(hint)[0], v) for v in value)
    if hint is Decimal:
        return Decimal(value)
    if hint is date:
        return date.fromisoformat(value)
    if is_dataclass(hint):
        return _built(hint, value)
    return value


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _built(cls: Any, data: dict[str, Any]) -> Any:
    hints = _hints(cls)
    return cls(**{name: _typed(hints[name], value) for name, value in data.items()})


def reference_json(payment: ClaimPayment) -> str:
    return json.dumps(_plain(payment), separators=(",", ":"))


def reference_from_json(text: str) -> ClaimPayment:
    return _built(ClaimPayment, json.loads(text))  # type: ignore[no-any-return]


# --- the corpus --------------------------------------------------------------------------------


def corpus() -> list[ClaimPayment]:
    bodies: list[bytes | str] = [f.body for f in payer_files()]
    sample = SHARED_DATA / "x12" / "835_mult_loops.txt"
    if sample.is_file():
        bodies.append(sample.read_bytes())
    for mix in sim_corpus.MIXES:
        bodies += sim_corpus.payer_835s(mix)
    out = []
    for body in bodies:
        for remittance in read_835(body).remittances:
            out += remittance.claims
    return [*out, every_field_set(out)]


def every_field_set(payments: list[ClaimPayment]) -> ClaimPayment:
    """A payment of the corpus with the optional fields no file above sets (claim-level CAS
    and MOA, DRG amounts, warnings) filled in."""
    payment = next(p for p in payments if p.service_lines and p.drg_code)
    amount = Decimal("12.34")
    first, *rest = payment.service_lines
    bundled = replace(
        first,
        original_procedure="99215",
        original_modifiers=("25", "GT"),
        original_units=Decimal("2"),
        service_end=first.service_date,
    )
    return replace(
        payment,
        service_lines=(bundled, *rest),
        received_date=date(2026, 3, 2),
        drg_weight=Decimal("1.2345"),
        original_reference="ORIG1",
        rendering_provider_id="1234567893",
        covered_days=Decimal("3"),
        drg_amount=amount,
        reimbursement_rate=Decimal("0.85"),
        hcpcs_payable=amount,
        interest=Decimal("0.07"),
        coverage_amount=amount,
        adjustments=(
            CasAdjustment("CO", "45", amount, Decimal("2")),
            CasAdjustment("PR", "1", amount),
        ),
        remark_codes=("MA01", "N130"),
        crossover_payer_id="CROSS1",
        warnings=("DTM*050 20261340 is not a date",),
    )


@pytest.fixture(scope="module")
def payments() -> list[ClaimPayment]:
    return corpus()


def test_the_corpus_has_the_shapes_that_matter(payments: list[ClaimPayment]) -> None:
    """Denied and paid claims, service lines with adjustments and remarks, dates, MIA/MOA."""
    assert len(payments) > 250
    assert {p.status_code for p in payments} >= {"1", "4"}
    lines = [line for p in payments for line in p.service_lines]
    assert any(line.adjustments and line.remark_codes for line in lines)
    assert any(line.service_date is not None for line in lines)
    assert any(p.statement_start is not None for p in payments)
    assert any(p.drg_code is not None for p in payments)
    assert any(p.crossover_payer is not None for p in payments)
    assert all(any(getattr(p, f.name) for p in payments) for f in fields(ClaimPayment))
    assert all(any(getattr(line, f.name) for line in lines) for f in fields(ServicePayment))


def test_json_and_read_back_are_the_reflective_conversion(payments: list[ClaimPayment]) -> None:
    for payment in payments:
        text = claim_payment_json(payment)
        assert text == reference_json(payment), payment.patient_control_number
        back = claim_payment_from_json(text)
        assert back == reference_from_json(text) == payment, payment.patient_control_number
        # Equal objects could still differ in the type of a value (a str where a Decimal is).
        assert _typed_tree(back) == _typed_tree(payment)


def test_the_text_written_straight_is_the_encoders_for_any_value(
    payments: list[ClaimPayment],
) -> None:
    """``claim_payment_json`` writes the text without the encoder: strings that need escaping
    (quotes, backslashes, control characters, non-ASCII names a payer sends in ISO 8859-1)
    and values of a type a field does not declare (a number, a boolean, a float, a datetime
    where a date is) give the text the encoder gives."""
    payment = next(p for p in payments if p.service_lines and p.statement_start)
    first, *rest = payment.service_lines
    odd_line = replace(
        first,
        procedure='99"213\\',
        modifiers=("25", "\u00e9", 7),  # type: ignore[arg-type]
        units=2.5,  # type: ignore[arg-type]
        adjustments=(CasAdjustment("CO", "45\n", Decimal("-0.00"), Decimal("NaN")),),
    )
    odd = replace(
        payment,
        patient_last_name="M\u00dcLLER-\u0141\u00d3D\u0179 \U0001f600",
        patient_first_name="J\tO\x00\x1fE",
        patient_member_id=12345,  # type: ignore[arg-type]
        frequency=True,  # type: ignore[arg-type]
        statement_start=datetime(2026, 3, 2, 8, 30, tzinfo=UTC),
        drg_weight=float("inf"),  # type: ignore[arg-type]
        service_lines=(odd_line, *rest),
        warnings=("\u2028", "", '"'),
    )
    assert claim_payment_json(odd) == reference_json(odd)
    assert json.loads(claim_payment_json(odd))["patient_member_id"] == 12345


def test_a_payment_of_fewer_fields_reads_back_as_before(payments: list[ClaimPayment]) -> None:
    """A record written when the loop had fewer fields: the missing ones take their defaults."""
    payment = next(p for p in payments if p.service_lines)
    data = json.loads(claim_payment_json(payment))
    del data["warnings"], data["crossover_payer_id"]
    for line in data["service_lines"]:
        del line["allowed"]
    text = json.dumps(data)
    expected = replace(payment, warnings=(), crossover_payer_id=None)
    assert claim_payment_from_json(text) == reference_from_json(text)
    assert claim_payment_from_json(text).warnings == expected.warnings


def test_the_judge_sees_a_wrong_conversion(payments: list[ClaimPayment]) -> None:
    """The comparison above fails on a conversion that loses a type or a value."""
    payment = next(p for p in payments if p.service_lines and p.statement_start)
    as_floats = reference_json(payment).replace('"charge":"', '"charge":"0')
    assert as_floats != claim_payment_json(payment)
    wrong = replace(payment, statement_start=str(payment.statement_start))  # type: ignore[arg-type]
    assert _typed_tree(wrong) != _typed_tree(payment)


def _typed_tree(value: Any) -> Any:
    """The value with the type of every leaf beside it."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _typed_tree(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return (type(value).__name__, [_typed_tree(v) for v in value])
    return (type(value).__name__, value)


# --- a payment read back by the process that split it --------------------------------------------


def corpus_files() -> list[PayerFile]:
    """The corpus's 835s as payer files (the fixtures as they come, the others numbered)."""
    bodies: list[bytes] = [f.body for f in payer_files()]
    sample = SHARED_DATA / "x12" / "835_mult_loops.txt"
    if sample.is_file():
        bodies.append(sample.read_bytes())
    for mix in sim_corpus.MIXES:
        bodies += [text.encode() for text in sim_corpus.payer_835s(mix)]
    return [
        PayerFile(
            event_id=event_id("corpus", str(n)),
            payer_id="P",
            file_id=str(n),
            kind="835",
            body=body,
            received_at=datetime(2026, 3, 20, tzinfo=UTC),
        )
        for n, body in enumerate(bodies)
    ]


def split_corpus() -> list[tuple[PayerFile, ClaimPaymentRecord]]:
    """Every claim payment record the split publishes for the corpus's files."""
    return [(file, record) for file in corpus_files() for record in split_file(file).claim_payments]


def test_a_payment_read_back_where_it_was_split_is_the_one_read_from_its_text() -> None:
    """The split keeps each payment it publishes, under its exact JSON: reading a record back
    in the same process gives the payment kept (no JSON read), which must be what reading the
    text gives, value and type of every leaf, for every claim payment of the corpus; a text
    changed in one character is read from the text, and a payment is given back once."""
    records = split_corpus()
    assert len(records) > 250
    texts = {r.payment: r for _, r in records if r.payment is not None}  # files repeat a CLP
    for text, record in texts.items():
        kept = split._WRITTEN.get(text)
        assert kept is not None, record.claim_id
        back = claim_payment_from_json(text)
        assert back is kept
        reference = reference_from_json(text)
        assert back == reference, record.claim_id
        assert _typed_tree(back) == _typed_tree(reference), record.claim_id
        assert claim_payment_json(back) == text
        assert text not in split._WRITTEN  # given back once; read again from the text
        assert claim_payment_from_json(text) == reference
    _, record = records[0]
    assert record.payment is not None
    text = record.payment
    changed = text.replace('"status_code":"1"', '"status_code":"4"', 1)
    assert changed != text
    split_file(records[0][0])  # kept again
    assert claim_payment_from_json(changed).status_code == "4"
    assert claim_payment_from_json(text).status_code == "1"


def test_the_payments_kept_for_reading_back_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound the oldest go first (read back later, they are read from their text)."""
    monkeypatch.setattr(split, "_KEEP_WRITTEN", 50)
    split._WRITTEN.clear()
    by_last_write: dict[str, None] = {}
    for _, record in split_corpus():
        assert record.payment is not None
        by_last_write.pop(record.payment, None)
        by_last_write[record.payment] = None
    texts = list(by_last_write)
    assert len(texts) > 100
    assert list(split._WRITTEN) == texts[-50:]
    assert claim_payment_from_json(texts[0]) == reference_from_json(texts[0])
