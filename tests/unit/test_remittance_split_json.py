"""The claim-payment record's CLP loop as JSON: the per-class conversion gives what the
reflective one gave.

``split.claim_payment_json`` and ``claim_payment_from_json`` work out each dataclass's
conversion once (from its type hints) instead of inspecting every value. The reference
below is the reflective conversion they replaced, kept here as the judge: on every claim
payment of the 835 fixtures, the public sample 835 and the payer simulator's 835s for both
EHR mixes, the JSON must be the same string and the payment read back the same object
(equal to the one read from the 835).
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import fields, is_dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import sim_corpus
from shared_data import SHARED_DATA
from test_remittance_split import payer_files

from services.remittance.era import CasAdjustment, ClaimPayment, ServicePayment, read_835
from services.remittance.split import claim_payment_from_json, claim_payment_json

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
