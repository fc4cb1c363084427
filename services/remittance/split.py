"""An 835 split for matching on many instances: the first step of remittance, keyed by file.

A payer file is read, balanced and triaged per transaction set exactly as a single
instance does it (``posting.triage``): what cannot be read or does not balance becomes
an exception with the file's bytes, and the rest goes on as

- one ``ClaimPaymentRecord`` per CLP of a balanced payment, keyed by the claim id (CLP01)
  the claims stage keyed ``claims.submitted.v1`` by, so the payment meets its claim in one
  partition (``remittance.claim-payments.v1``), carrying what posting needs: the payer, the
  file, ST02, the trace and date, its place among the payment's CLPs, the warnings, and the
  CLP loop as read (CLP, CAS, MIA/MOA, DTM, SVC with their CAS ...);
- one ``PayerPaymentRecord`` per balanced payment, keyed by its payer
  (``remittance.payer-payments.v1``): the payment's amounts, its PLB adjustments and the
  references (CLP01, CLP07) of the claims it paid, so one partition keeps each payer's
  forward balances and finds the claim a later file's PLB names (``matching.PayerBook``).

A predetermination (CLP02 25) is reported when the file comes and never posted. No Kafka
here, and no state: any instance may split any file.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from pipeline.errors import InputError
from pipeline.models import ClaimPaymentRecord, PayerFile, PayerPaymentRecord, event_id
from pipeline.serde import model_builder
from services.remittance.era import ClaimPayment, Read835, decode_x12, read_835
from services.remittance.exceptions import (
    Output,
    Source,
    file_exception,
    held_exception,
    looks_like_x12,
    predetermination,
)
from services.remittance.posting import Postable, cents, payer_of, triage

STAGE = "remittance"
VERSION = "v1"
CLAIM_PAYMENTS = "remittance.claim-payments.v1"
PAYER_PAYMENTS = "remittance.payer-payments.v1"


class Split(NamedTuple):
    """What a payer file becomes: exceptions to publish, claim payments by claim id,
    payments by payer."""

    exceptions: list[Output]
    claim_payments: list[ClaimPaymentRecord]
    payer_payments: list[PayerPaymentRecord]

    def outputs(self) -> list[Output]:
        """Everything, as records to publish (exceptions first, as a single instance does)."""
        return [
            *self.exceptions,
            *(Output(CLAIM_PAYMENTS, r.claim_id, r) for r in self.claim_payments),
            *(Output(PAYER_PAYMENTS, r.payer_id, r) for r in self.payer_payments),
        ]


def split_file(file: PayerFile, source: Source = None, read: Read835 | None = None) -> Split:
    """An inbound payer file split (999 and 277CA files give nothing here); raises
    InputError when it is not X12 at all. ``read``: the file already read."""
    if file.kind != "835":
        return Split([], [], [])
    try:
        read = read or read_835(file.body)
    except InputError as exc:
        if not looks_like_x12(decode_x12(file.body)[0]):
            raise  # not X12 at all: poison, to the dead-letter topic
        return Split([file_exception(file, source, "unreadable_file", [str(exc)])], [], [])
    postable, held = triage(read)
    outs = [held_exception(file, source, item, n, read.warnings) for n, item in enumerate(held)]
    claims: list[ClaimPaymentRecord] = []
    payers: list[PayerPaymentRecord] = []
    for payment in postable:
        for occurrence, clp in payment.occurrences():
            if clp.status_code == "25":  # reported when the file comes, never posted
                outs.append(predetermination(file, payment.remittance, clp))
                continue
            claims.append(
                claim_payment_record(file, source, payment, clp, occurrence, len(claims), read)
            )
        payers.append(payer_payment_record(file, payment))
    return Split(outs, claims, payers)


def claim_payment_record(
    file: PayerFile,
    source: Source,
    payment: Postable,
    clp: ClaimPayment,
    occurrence: int,
    sequence: int,
    read: Read835,
) -> ClaimPaymentRecord:
    remit = payment.remittance
    claim_id = clp.patient_control_number
    return _build_claim_payment(
        {
            "event_id": event_id(
                claim_id,
                f"{file.payer_id}:{file.file_id}",
                remit.transaction_control_number,
                remit.trace_number,
                str(occurrence),
                "claim-payment",
                STAGE,
                VERSION,
            ),
            "kind": "payment",
            "claim_id": claim_id,
            "payer_id": file.payer_id,
            "file_id": file.file_id,
            "received_at": file.received_at,
            "source_partition": source[0] if source else None,
            "source_offset": source[1] if source else None,
            "transaction_control_number": remit.transaction_control_number,
            "payment_trace": remit.trace_number,
            "payment_date": remit.payment_date,
            "payment_amount": cents(remit.net_payment),
            "sequence": sequence,
            "occurrence": occurrence,
            "warnings": [*read.warnings, *remit.warnings],
            "payment": _remember(claim_payment_json(clp), clp),
            "adjustment": None,
        }
    )


def payer_payment_record(file: PayerFile, payment: Postable) -> PayerPaymentRecord:
    # The payment's figures as ``posting.reconcile`` sums them, without its balancing
    # errors: ``triage`` checked those already, and a held payment never comes here
    # (checking every claim again was half of this record's cost).
    remit = payment.remittance
    payer_id = payer_of(remit)
    references = [
        {
            "claim_id": c.patient_control_number,
            "payer_claim_control_number": c.payer_claim_control_number,
        }
        for c in remit.claims
    ]
    adjustments = [
        {
            "seq": seq,
            "provider_id": plb.provider_id,
            "fiscal_period_end": plb.fiscal_period_end,
            "reason": plb.reason,
            "reference": plb.reference,
            "amount": cents(plb.amount),
            "claim_id": None,
        }
        for seq, plb in enumerate(remit.provider_adjustments)
    ]
    return _build_payer_payment(
        {
            "event_id": event_id(
                payer_id,
                remit.trace_number,
                remit.transaction_control_number,
                "payer-payment",
                STAGE,
                VERSION,
            ),
            "payer_id": payer_id,
            "file_payer_id": file.payer_id,
            "file_id": file.file_id,
            "payment_trace": remit.trace_number,
            "transaction_control_number": remit.transaction_control_number,
            "payment_amount": cents(remit.net_payment),
            "claims_paid": cents(remit.claims_paid),
            "claim_count": len(remit.claims),
            "claims": references,
            "provider_adjustments": adjustments,
            "received_at": file.received_at,
        }
    )


# The split's records are built from values of the types their fields hold (the 835 as read,
# the payer file as validated when it came in, the money in cents as ``Money`` gives it):
# validating them again cost 3.8 us a claim payment record (1.1 without), and took a payer
# payment record from 10.4 us to 6.7. tests/unit/test_remittance_split_records.py compares
# them with the validated build on every payment of the corpus: equal, the same JSON, the
# same Avro bytes.
_build_claim_payment = model_builder(ClaimPaymentRecord)
_build_payer_payment = model_builder(PayerPaymentRecord)


# --- a CLP loop as JSON and back -----------------------------------------------------------
#
# The CLP loop is a tree of frozen dataclasses (ClaimPayment > ServicePayment > CasAdjustment).
# Which fields hold a nested dataclass, a tuple of them, a Decimal or a date follows from the
# classes' type hints, which never change while the process runs. So each class's conversion
# is worked out once (``_json_writer``: one function written out per class, an f-string over
# its fields that writes the JSON text straight from the objects; ``_reader``: one function
# per field) and a payment is then converted by calling those, instead of asking
# ``is_dataclass``, ``fields`` and ``typing.get_origin`` again for every value of every
# payment (that reflection was most of the ~100 us a payment cost). The text is what
# ``json.dumps(..., separators=(",", ":"))`` gives for the fields as plain data (amounts and
# dates as strings, tuples as lists, nested loops as objects, in declaration order); writing
# it without that intermediate dict and the encoder's walk over it halves the conversion.
# An empty tuple is written '[]' at once and a date without the call to ``_scalar_json``
# (a simulator's claim payment: 15.9 us to 12.8).
# The JSON and the objects are the same as before: the test
# (tests/unit/test_remittance_split_json.py) compares both with the reflective conversion,
# on every payment of the corpus and on values that need escaping or are of other types.

_Convert = Callable[[Any], Any]


def _typed_of(hint: Any) -> _Convert:
    """How JSON data is read back as a value of the given type hint (None stays None)."""
    hint = _optional_inner(hint)
    if typing.get_origin(hint) is tuple:
        item = _typed_of(typing.get_args(hint)[0])
        return lambda value: None if value is None else tuple(item(v) for v in value)
    if hint is Decimal:
        return lambda value: None if value is None else Decimal(value)
    if hint is date:
        return lambda value: None if value is None else date.fromisoformat(value)
    if is_dataclass(hint):
        return lambda value: None if value is None else _built(hint, value)
    return lambda value: value


def _optional_inner(hint: Any) -> Any:
    """``X | None`` -> X; any other hint as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner
    return hint


@functools.cache
def _reader(cls: Any) -> dict[str, _Convert]:
    """For each field of ``cls``: how its JSON data is read back."""
    hints = typing.get_type_hints(cls)
    return {name: _typed_of(hint) for name, hint in hints.items()}


def _built(cls: Any, data: dict[str, Any]) -> Any:
    reader = _reader(cls)
    return cls(**{name: reader[name](value) for name, value in data.items()})


def claim_payment_json(payment: ClaimPayment) -> str:
    """The CLP loop as read, JSON (amounts and dates as strings: nothing is rounded)."""
    return _json_writer(ClaimPayment)(payment)


# ``json.dumps`` with separators makes a new encoder on every call: this is the one it makes.
_compact = json.JSONEncoder(separators=(",", ":")).encode

# Strings go through the encoder's own escaping (ASCII only).
_escape = json.encoder.encode_basestring_ascii


def _scalar_json(value: Any) -> str:
    """The JSON of a scalar: amounts and dates as strings (nothing is rounded), anything
    else as the encoder writes it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, Decimal | date):
        return _escape(str(value))
    return _compact(value)  # booleans, numbers and anything else, as the encoder does


def _json_expr(hint: Any, value: str, env: dict[str, Any]) -> str:
    """Python source for the JSON text of ``value`` (an expression of the given type hint):
    a scalar as ``_scalar_json`` writes it, a list for a tuple, an object for a nested
    dataclass (None is null)."""
    hint = _optional_inner(hint)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        each = _json_expr(item, "i", env)
        # Most tuples of a CLP loop are empty (modifiers, remarks, warnings): '[]' at once.
        return (
            f"('null' if {value} is None else '[]' if {value} == () else "
            f"'[' + ','.join([{each} for i in {value}]) + ']')"
        )
    if is_dataclass(hint):
        cls: Any = hint
        name = f"_json_{cls.__name__}"
        env[name] = _json_writer(cls)
        return f"('null' if {value} is None else {name}({value}))"
    if hint is Decimal:  # an amount, as a string
        text = f"_escape(str({value})) if type({value}) is Decimal"
    elif hint is date:  # as _scalar_json writes it, without the call
        text = f"_escape(str({value})) if type({value}) is date"
    else:
        text = f"_escape({value}) if type({value}) is str"
    return f"('null' if {value} is None else {text} else _scalar_json({value}))"


@functools.cache
def _json_writer(cls: Any) -> Callable[[Any], str]:
    """A dataclass of ``cls`` as JSON text, fields in declaration order: one function written
    out for the class, one f-string over its fields (joined once, not pair by pair)."""
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {
        "_escape": _escape,
        "_scalar_json": _scalar_json,
        "Decimal": Decimal,
        "date": date,
    }
    text = ",".join(
        f"{_escape(f.name)}:{{{_json_expr(hints[f.name], f'v.{f.name}', env)}}}"
        for f in fields(cls)
    )
    exec(f'def write(v):\n    return f"""{{{{{text}}}}}"""\n', env)  # noqa: S102 - built above
    return env["write"]  # type: ignore[no-any-return]


def claim_payment_from_json(text: str) -> ClaimPayment:
    """``claim_payment_json`` read back: the payment this process wrote as exactly this text
    when it is still kept (``_remember``), else read from the text."""
    written = _WRITTEN.pop(text, None)
    if written is not None:
        return written
    payment = _built(ClaimPayment, json.loads(text))
    assert isinstance(payment, ClaimPayment)
    return payment


# --- a claim payment read back by the process that split it -----------------------------------
#
# A claim payment goes through remittance.claim-payments.v1 to the instance that holds its
# claim's partition: most often the one that split the file. Reading its JSON back gives an
# object equal to the one written, of the same types (the conversion is its own inverse:
# tests/unit/test_remittance_split_json.py), so the object itself is kept, under the exact
# text, until it is read back. A record that another instance reads, or that comes back after
# many others, is read from its text as before.

_KEEP_WRITTEN = 4096
_WRITTEN: OrderedDict[str, ClaimPayment] = OrderedDict()


def _remember(text: str, payment: ClaimPayment) -> str:
    _WRITTEN[text] = payment
    _WRITTEN.move_to_end(text)  # written again (a file read again): read back last
    if len(_WRITTEN) > _KEEP_WRITTEN:
        _WRITTEN.popitem(last=False)
    return text
