"""Contract models built without validation (services/intake/trusted.py) against pydantic.

The judge: a model ``trusted.build`` makes equals the one ``cls(**values)`` validates, to
the exact types of its values and the fields set, and ``build`` says None whenever pydantic
would refuse or change a value. Held on the encounters intake makes of simulated bundles
(both mixes) and on every field of every contract model intake builds, fed values of the
wrong type, subclasses, values a constraint refuses, and edge values a constraint takes.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from pipeline import models
from pipeline.serde import registry
from services.intake import trusted
from services.intake.domain import parse_raw
from sim.ehr import generate, provider_directory

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIRECTORY = provider_directory()


class Text(str):
    pass


class Day(date):
    pass


def _shape(value: Any) -> Any:
    """A model's values with their exact types and fields set, nested models included."""
    if isinstance(value, BaseModel):
        return (
            type(value),
            sorted(value.model_fields_set),
            {k: _shape(v) for k, v in value.__dict__.items()},
        )
    if isinstance(value, list):
        return (list, [_shape(v) for v in value])
    return (type(value), repr(value))


def _parsed(mix: str, n: int) -> list[Any]:
    out = []
    for source_id, ctype, body in generate(n, seed=17, fmt="fhir", mix=mix):  # type: ignore[arg-type]
        result = parse_raw(body, ctype, source_id=source_id, received_at=AT, directory=DIRECTORY)
        out += result.encounters
    return out


@pytest.mark.parametrize("mix", ["office", "all"])
def test_simulated_encounters_are_the_ones_pydantic_validates(mix: str) -> None:
    trusted_path = _parsed(mix, 120)
    with trusted.validated_only():
        reference = _parsed(mix, 120)
    assert len(trusted_path) == len(reference) == 120
    topic = "encounters.collected.v1"
    for got, want in zip(trusted_path, reference, strict=True):
        assert _shape(got) == _shape(want)
        assert registry().encode(topic, got) == registry().encode(topic, want)


def _values(model: BaseModel) -> dict[str, Any]:
    return {k: getattr(model, k) for k in model.model_fields_set}


def _candidates(value: Any) -> list[Any]:
    """Values to try in place of one: right, wrong and borderline."""
    out: list[Any] = [None, 1, 1.0, True, "", "x", Text("x"), [], [None], object()]
    out += ["12", "1234567890", "123456789", "TX", "tx", "787011234", "78701", "0123", "123"]
    out += ["12\n", "١٢", "1234567890\n", "T", "TXS", " TX"]
    out += [date(2026, 1, 2), Day(2026, 1, 2), datetime(2026, 1, 2, tzinfo=UTC)]
    out += [datetime(2026, 1, 2, 3, 4), time(9, 30), "2026-01-02", "09:30"]
    out += [Decimal("1.5"), Decimal("1.50"), Decimal("-0.01"), Decimal("-0.001")]
    out += [Decimal("0"), Decimal("NaN"), Decimal("Infinity"), Decimal("1E+2"), 0.0, -1.0, 2]
    out += ["professional", "inpatient", "fhir", "icd10cm", "cpt", "external_cause", "F"]
    if isinstance(value, BaseModel):
        out += [value, value.model_dump()]
    if isinstance(value, list):
        out += [list(value), tuple(value), [*value, None]]
        out += [[item.model_dump()] for item in value[:1] if isinstance(item, BaseModel)]
    return out


def _judge(cls: type[BaseModel], values: dict[str, Any]) -> bool:
    """Whether build agrees with pydantic on these values; True when it built the model."""
    built = trusted.build(cls, copy.copy(values))
    try:
        want = cls(**values)
    except ValidationError:
        assert built is None, (cls.__name__, values)
        return False
    if built is not None:
        assert _shape(built) == _shape(want), (cls.__name__, values)
        assert built == want
    return built is not None


def _models(enc: models.Encounter) -> list[BaseModel]:
    """Every contract model inside an encounter, the encounter first."""
    found: list[BaseModel] = []
    stack: list[Any] = [enc]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseModel):
            found.append(item)
            stack.extend(item.__dict__.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_every_field_fed_every_kind_of_value_agrees_with_pydantic() -> None:
    samples: dict[type[BaseModel], BaseModel] = {}
    for enc in _parsed("all", 60) + _parsed("office", 20):
        for model in _models(enc):
            samples.setdefault(type(model), model)
    extra = [
        models.DocumentedService(code=None, revenue_code="0450", charge=Decimal("12.5")),
        models.EncounterNote(kind="item_not_carried", message="m", charge=Decimal("3")),
        models.ValueCode(code="80", amount=Decimal("2")),
        models.Occurrence(code="11", date=date(2026, 1, 1)),
        models.OccurrenceSpan(code="70", start=date(2026, 1, 1), end=date(2026, 1, 2)),
    ]
    for model in extra:
        samples.setdefault(type(model), model)
    assert {models.Encounter, models.Patient, models.Address, models.Provider} <= set(samples)
    built = 0
    for cls, model in samples.items():
        values = _values(model)
        assert _judge(cls, values), cls.__name__  # a real model's own values are trusted
        for name in cls.model_fields:
            for candidate in _candidates(values.get(name)):
                built += _judge(cls, {**values, name: candidate})
            if name in values:
                built += _judge(cls, {k: v for k, v in values.items() if k != name})
        built += _judge(cls, {**values, "unknown": 1})
    assert built > 100  # the borderline values a field takes were built, not only refused


def test_money_is_rounded_to_cents_as_its_validator_does() -> None:
    for amount in ("12.5", "12.345", "12.355", "0", "0.004", "1E+2", "7"):
        values = {"code": None, "revenue_code": "0450", "charge": Decimal(amount)}
        assert _judge(models.DocumentedService, values)
    assert not _judge(models.DocumentedService, {"code": None, "charge": Decimal(1)})
    assert not _judge(models.DocumentedService, {"code": "99213", "charge": Decimal(1)})


def test_a_default_list_is_a_new_list_each_time() -> None:
    values = {"kind": "item_not_carried", "message": "m"}
    assert _judge(models.EncounterNote, values)
    enc = _parsed("office", 1)[0]
    one = trusted.build(models.Encounter, _values(enc) | {"notes": []})
    assert one is not None
    two = trusted.build(models.Encounter, {k: v for k, v in _values(enc).items() if k != "notes"})
    three = trusted.build(models.Encounter, {k: v for k, v in _values(enc).items() if k != "notes"})
    assert two is not None and three is not None
    assert two.notes == [] and two.notes is not three.notes
