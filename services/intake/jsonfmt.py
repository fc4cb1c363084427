"""The project's JSON encounter format: the Encounter contract minus the fields intake sets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from pipeline.errors import InputError
from pipeline.models import DocumentedDiagnosis, Encounter, Provider, event_id
from services.intake.memo import json_copy, same_json

# Set by intake from the transport, never by the sender.
RESERVED = ("event_id", "source_id", "source_format", "received_at")

# encounters.collected.v1 stores charges as decimal(12, 2).
MAX_CHARGE = Decimal("9999999999.99")
MAX_UNITS = 1e9

# X12 5010 individual relationship codes (837 SBR02 / PAT01): the contract's
# Coverage.relationship. 18 = the patient is the subscriber.
SELF = "18"
X12_RELATIONSHIPS = {
    "01": "spouse",
    "18": "self",
    "19": "child",
    "20": "employee",
    "21": "unknown",
    "39": "organ donor",
    "40": "cadaver donor",
    "53": "life partner",
    "G8": "other relationship",
}


def field_path(loc: tuple[int | str, ...], prefix: str) -> str:
    """A pydantic error location as a dotted path, list indexes in brackets."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def first_error(exc: ValidationError, prefix: str) -> InputError:
    """The first pydantic error as an InputError naming its field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    reason = str(first["msg"])
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more errors)"
    return InputError(field_path(tuple(first["loc"]), prefix), reason)


def check_charge(value: Any, field: str) -> Decimal:
    """A charge as a Decimal that fits the contract's decimal(12, 2), or InputError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InputError(field, "must be a number or a numeric string")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise InputError(field, "must be a number or a numeric string") from None
    if not amount.is_finite():
        raise InputError(field, "must be a finite number")
    if amount < 0:
        raise InputError(field, "must not be negative")
    if amount > MAX_CHARGE:
        raise InputError(field, f"exceeds {MAX_CHARGE}, the largest charge the contract holds")
    return amount


def _out_of_range(units: object) -> bool:
    """Whether a numeric units value is infinite or absurdly large (1e999 parses as inf)."""
    if isinstance(units, bool) or not isinstance(units, int | float | Decimal):
        return False
    return not abs(float(units)) <= MAX_UNITS


def _check_coverage(coverage: Any, field: str = "encounter.coverage") -> None:
    """The relationship is an X12 code, and a subscriber is sent only for a dependent."""
    if not isinstance(coverage, dict):
        return  # the model names the problem
    relationship = coverage.get("relationship", SELF)
    if not isinstance(relationship, str):
        return
    if relationship not in X12_RELATIONSHIPS:
        codes = ", ".join(f"{k} {v}" for k, v in X12_RELATIONSHIPS.items())
        raise InputError(f"{field}.relationship", f"not an X12 code ({codes})")
    if relationship == SELF and coverage.get("subscriber") is not None:
        # Two people for one policy holder: the claim would name the wrong insured.
        raise InputError(
            f"{field}.subscriber",
            "must be omitted when relationship is 18 (the patient is the subscriber)",
        )


def _coverages_in_order(data: dict[str, Any]) -> dict[str, Any]:
    """``coverages`` (a list in coordination-of-benefits order, primary first) as the
    contract's ``coverage`` and ``other_coverages``; each coverage checked."""
    if "coverages" in data:
        coverages = data["coverages"]
        if "coverage" in data or "other_coverages" in data:
            raise InputError(
                "encounter.coverages", "send either coverages or coverage/other_coverages"
            )
        if not isinstance(coverages, list) or not coverages:
            raise InputError("encounter.coverages", "must be a list, primary first, not empty")
        data = {k: v for k, v in data.items() if k != "coverages"}
        data |= {"coverage": coverages[0], "other_coverages": coverages[1:]}
        for i, coverage in enumerate(coverages):
            _check_coverage(coverage, f"encounter.coverages[{i}]")
        return data
    _check_coverage(data.get("coverage"))
    others = data.get("other_coverages")
    for i, coverage in enumerate(others if isinstance(others, list) else []):
        _check_coverage(coverage, f"encounter.other_coverages[{i}]")
    return data


# The practice's providers and facility, sent alike in most encounters: each part is kept
# with the model pydantic made of it (by the field, the NPI and the name), and a part whose
# JSON is exactly the one kept (memo.same_json) goes to pydantic as that model, which it
# takes as it is (a frozen model, shared by the encounters that hold it). A part is kept
# from the second time it is met, and only when small; a part that is not exactly the one
# kept is validated as before, so a bad one gets the same error.
_PARTS = ("billing_provider", "rendering_provider", "facility")
_PARTS_MAX = 1024
_PART_LEN, _PART_LEAVES = 256, 64  # the longest string and most non-strings of a kept part
_SEEN_ONCE = object()
_KEPT_PARTS: dict[tuple[str, str | None, str], Any] = {}


def _part_key(name: str, part: dict[str, Any]) -> tuple[str, str | None, str] | None:
    npi, label = part.get("npi"), part.get("name")
    if (npi is None or type(npi) is str) and type(label) is str:
        return name, npi, label
    return None


def _kept_parts(values: dict[str, Any]) -> dict[str, tuple[str, str | None, str]]:
    """Put the kept model in place of each part sent exactly as kept; the keys of the
    other parts, to keep them once validated."""
    missed = {}
    for name in _PARTS:
        part = values.get(name)
        if type(part) is not dict:
            continue
        key = _part_key(name, part)
        if key is None:
            continue
        hit = _KEPT_PARTS.get(key)
        if hit is not None and hit is not _SEEN_ONCE and same_json(part, hit[0], hit[1]):
            values[name] = hit[2]
        else:
            missed[name] = key
    return missed


def _keep_parts(
    values: dict[str, Any], missed: dict[str, tuple[str, str | None, str]], enc: Encounter
) -> None:
    """Keep the parts just validated (the second time their key is met)."""
    for name, key in missed.items():
        if _KEPT_PARTS.get(key) is None:
            if len(_KEPT_PARTS) >= _PARTS_MAX:
                _KEPT_PARTS.clear()
            _KEPT_PARTS[key] = _SEEN_ONCE
            continue
        copied = json_copy(values[name], _PART_LEN, _PART_LEAVES)
        if copied is not None:
            _KEPT_PARTS[key] = (*copied, getattr(enc, name))


# The usual diagnoses of a practice's visits, sent alike in encounter after encounter (the
# pipeline benchmark's mix: 872 diagnoses in 500 JSON encounters, 92 distinct): a diagnosis
# object validated whose members are all strings (up to _DX_LEN), booleans or nulls is kept,
# by its members in order, with the model pydantic made of it and the exact type of each
# value; one sent again with equal members of those exact types (1 is not true) goes to
# pydantic as that model (frozen, shared, as fhir.py's diagnoses are). The Avro writer keeps
# a shared diagnosis's bytes by its instance, so it is written once too. Anything else is
# validated as before.
_DX_MAX = 4096
_DX_LEN = 256
_DX_PLAIN = frozenset({str, bool, type(None)})
DxKey = tuple[tuple[str, Any], ...]
_KEPT_DX: dict[DxKey, tuple[DocumentedDiagnosis, tuple[type, ...]]] = {}


def _kept_diagnoses(values: dict[str, Any]) -> list[tuple[int, DxKey]]:
    """Put the kept model in place of each diagnosis sent exactly as one kept; the places
    and keys of the others (objects of hashable values), to keep them once validated."""
    sent = values.get("diagnoses")
    if type(sent) is not list:
        return []
    missed = []
    found = None
    for i, item in enumerate(sent):
        if type(item) is not dict:
            continue
        try:
            key = tuple(item.items())
            hit = _KEPT_DX.get(key)
        except TypeError:  # a list or an object in it: never kept
            continue
        if hit is None or tuple(map(type, item.values())) != hit[1]:
            missed.append((i, key))
            continue
        if found is None:
            found = list(sent)  # the sender's list stays as it was decoded
        found[i] = hit[0]
    if found is not None:
        values["diagnoses"] = found
    return missed


def _keep_diagnoses(missed: list[tuple[int, DxKey]], enc: Encounter) -> None:
    """Keep the diagnoses just validated from objects of plain, short values."""
    for i, key in missed:
        types = tuple(type(v) for _, v in key)
        if not _DX_PLAIN.issuperset(types) or any(
            type(v) is str and len(v) > _DX_LEN for _, v in key
        ):
            continue
        if len(_KEPT_DX) >= _DX_MAX:
            _KEPT_DX.clear()
        _KEPT_DX[key] = (enc.diagnoses[i], types)


def parse_json_encounter(data: Any, *, source_id: str, received_at: datetime) -> Encounter:
    """Validate one JSON-format encounter object and complete it into an Encounter."""
    return parse_json_completed(data, source_id=source_id, received_at=received_at)[0]


def parse_json_completed(
    data: Any,
    *,
    source_id: str,
    received_at: datetime,
    complete: Callable[[Provider], Provider] | None = None,
) -> tuple[Encounter, bool]:
    """``parse_json_encounter``, the billing provider then completed by ``complete`` (a
    provider profile); whether that changed it.

    A billing provider sent exactly as one kept (``_kept_parts``) is completed before the
    encounter is validated, and the encounter is validated holding the completed one: the
    record a copy with it would be (the same values, the same fields set), without the copy
    (~3.6 us for every JSON encounter of the pipeline mix, each completed). Any other is
    completed after, and the record copied, as before."""
    if not isinstance(data, dict):
        raise InputError("encounter", "expected a JSON object")
    for name in RESERVED:
        if name in data:
            raise InputError(f"encounter.{name}", "is set by intake, not by the sender")
    services = data.get("services")
    if isinstance(services, list):
        for i, service in enumerate(services):
            if not isinstance(service, dict):
                continue
            # Pre-checked: a huge charge would otherwise fail inside the model's rounding.
            if "charge" in service:
                check_charge(service["charge"], f"encounter.services[{i}].charge")
            if _out_of_range(service.get("units")):
                raise InputError(f"encounter.services[{i}].units", f"must be at most {MAX_UNITS:g}")
    data = _coverages_in_order(data)
    encounter_id = data.get("encounter_id")
    eid = event_id(source_id, encounter_id if isinstance(encounter_id, str) else "", "intake", "v1")
    values = {
        **data,
        "event_id": eid,
        "source_id": source_id,
        "source_format": "json",
        "received_at": received_at,
    }
    missed = _kept_parts(values)
    missed_dx = _kept_diagnoses(values)
    sent = values.get("billing_provider")
    early = False
    if complete is not None and type(sent) is Provider:  # a kept part, valid as it is
        try:
            done = complete(sent)
        except Exception:  # noqa: BLE001 - raised again after the encounter validates
            pass
        else:
            early = True
            values["billing_provider"] = done
    try:
        encounter = Encounter.model_validate(values)
    except ValidationError as exc:
        raise first_error(exc, "encounter") from None
    _keep_parts(values, missed, encounter)
    _keep_diagnoses(missed_dx, encounter)
    if early:
        return encounter, encounter.billing_provider is not sent
    if complete is None:
        return encounter, False
    billing = complete(encounter.billing_provider)
    if billing is encounter.billing_provider:
        return encounter, False
    return encounter.model_copy(update={"billing_provider": billing}), True
