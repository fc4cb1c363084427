"""pipeline/model_reads.py: pydantic's ``__getattr__`` is gone from the models that do not
need it, and every model reads as it did: fields, private attributes, extra fields, and the
error for an attribute that is not there."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel, ConfigDict, PrivateAttr

from pipeline import model_reads, models


def hooked(cls: type) -> bool:
    """Whether instances of ``cls`` go through a ``__getattr__`` (``hasattr`` on the class
    would find the metaclass's own)."""
    return any("__getattr__" in c.__dict__ for c in cls.__mro__)


def test_the_contract_models_read_fields_without_the_hook() -> None:
    assert "__getattr__" not in BaseModel.__dict__
    for cls in (models.Encounter, models.CodedEncounter, models.ValidatedEncounter, models.Model):
        assert not hooked(cls), cls
    assert "__getattr__" in type(models.Address).__dict__  # the metaclass's (class reads)


def test_a_missing_attribute_raises_as_before() -> None:
    address = models.Address(line1="1 Main St", city="Albany", state="NY", postal_code="12207")
    with pytest.raises(AttributeError, match="'Address' object has no attribute 'suite'"):
        _ = address.suite  # type: ignore[attr-defined]
    assert getattr(address, "suite", None) is None
    assert not hasattr(address, "suite")


def test_private_attributes_and_extra_fields_still_read() -> None:
    """Classes made after ``install`` (``__init_subclass__``) get the hook back where they
    need it, their subclasses through it."""

    class Private(BaseModel):
        amount: Decimal
        _seen: int = PrivateAttr(default=3)

    class Below(Private):
        note: str = ""

    class Extra(BaseModel):
        model_config = ConfigDict(extra="allow")
        amount: Decimal

    class Plain(BaseModel):
        amount: Decimal

    assert Private(amount=Decimal(1))._seen == 3
    below = Below(amount=Decimal(1))
    below._seen = 4
    assert below._seen == 4
    assert Extra(amount=Decimal(1), payer="X").payer == "X"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = Extra(amount=Decimal(1)).payer  # type: ignore[attr-defined]
    assert not hooked(Plain)
    assert all(model_reads.needs_hook(c) for c in (Private, Below, Extra))
    assert not model_reads.needs_hook(Plain)


def test_every_loaded_model_that_needs_the_hook_has_it() -> None:
    """Those that existed before ``install`` too (pydantic-settings' CLI arguments keep
    private attributes)."""
    from pydantic_settings.sources.providers import cli  # noqa: F401 - its models loaded

    found = model_reads._subclasses(BaseModel)
    assert any(c.__name__ == "_CliArg" for c in found)
    for cls in found:
        assert model_reads.needs_hook(cls) == hooked(cls), cls


def test_install_twice_changes_nothing() -> None:
    model_reads.install()
    assert "__getattr__" not in BaseModel.__dict__
    assert models.Address(line1="1", city="A", state="NY", postal_code="12207").city == "A"
