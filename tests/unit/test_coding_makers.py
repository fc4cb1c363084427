"""The coder makes its coded encounter, diagnoses and lines unvalidated (``model_maker``):
the judge is pydantic's validation of the very same values. Both simulator mixes, as intake
parsed them and as the coding stage reads them (decoded from their Avro bytes), must be
coded to the same models, value for value and type for type (1 == 1.0 and
Decimal("1.0") == Decimal("1.00"): equality alone would not see a value the validation
changes), with the same fields set.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sim_corpus
from pydantic import BaseModel

from pipeline.errors import InputError
from pipeline.models import CodedDiagnosis, CodedEncounter, Encounter, ServiceLine
from pipeline.serde import registry
from services.coding import domain


def same(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` hold the same values of the same types (models field by field)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, BaseModel):
        assert a.model_fields_set == b.model_fields_set, where
        assert a.__pydantic_extra__ == b.__pydantic_extra__, where
        assert a.__pydantic_private__ == b.__pydantic_private__, where
        assert list(a.__dict__) == list(b.__dict__), where
        for name, value in a.__dict__.items():
            same(value, b.__dict__[name], f"{where}.{name}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, Decimal):
        assert a.as_tuple() == b.as_tuple(), where
    else:
        assert a == b, where


def coded_all(encounters: tuple[Encounter, ...]) -> list[Any]:
    out: list[Any] = []
    for enc in encounters:
        try:
            out.append(sim_corpus.coder().code(enc, coded_at=sim_corpus.RECEIVED_AT))
        except InputError as exc:
            out.append(str(exc))
    return out


def decoded(encounters: tuple[Encounter, ...]) -> tuple[Encounter, ...]:
    """The encounters as the coding stage reads them: from encounters.collected.v1 bytes."""
    reg = registry()
    topic = "encounters.collected.v1"
    out = tuple(reg.decode(topic, reg.encode(topic, e)) for e in encounters)
    assert all(isinstance(e, Encounter) for e in out)
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("read", ["parsed", "decoded"])
@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_the_unvalidated_makes_give_the_validated_models(
    mix: str, read: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encounters = sim_corpus.encounters(mix)
    if read == "decoded":
        encounters = decoded(encounters)
    fast = coded_all(encounters)
    monkeypatch.setattr(domain, "_DIAGNOSES", {})  # none of the fast run's diagnoses kept
    monkeypatch.setattr(domain, "_coded_encounter", CodedEncounter)
    monkeypatch.setattr(domain, "_coded_diagnosis", CodedDiagnosis)
    monkeypatch.setattr(domain, "_service_line", ServiceLine)
    judged = coded_all(encounters)
    assert sum(isinstance(c, CodedEncounter) for c in fast) > 100
    assert any(ln.code is None for c in fast if isinstance(c, CodedEncounter) for ln in c.lines) \
        or mix == "office"  # fmt: skip
    for i, (a, b) in enumerate(zip(fast, judged, strict=True)):
        same(a, b, f"[{i}]")
        if isinstance(a, CodedEncounter):
            assert a.model_dump_json() == b.model_dump_json()


class _Forgetful(dict[Any, Any]):
    """A memo that keeps nothing: every diagnosis made anew."""

    def get(self, key: Any, default: Any = None) -> Any:
        return default


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_kept_diagnoses_are_the_ones_made(mix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_numbered`` keeps each coded diagnosis by its values (``_DIAGNOSES``): a kept one
    is the model made anew, value for value, in every place it serves."""
    encounters = decoded(sim_corpus.encounters(mix))
    coded_all(encounters)  # kept from here on
    kept = coded_all(encounters)
    ids = [id(d) for c in kept if isinstance(c, CodedEncounter) for d in c.diagnoses]
    assert len(set(ids)) < len(ids) / 2  # diagnoses shared between encounters
    monkeypatch.setattr(domain, "_DIAGNOSES", _Forgetful())
    made = coded_all(encounters)
    for i, (a, b) in enumerate(zip(kept, made, strict=True)):
        same(a, b, f"[{i}]")
        if isinstance(a, CodedEncounter):
            assert a.model_dump_json() == b.model_dump_json()
