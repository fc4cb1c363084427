"""The 835 model's objects built by ``era.direct_init``'s ``__init__`` are the ones the
dataclass's own ``__init__`` builds.

Every class given the direct ``__init__`` (``era.DATACLASS_INITS``) is built both ways from
the values of every object of its class that reading the corpus's 835s and posting them
make (the fixtures, the public sample 835, the simulator's 835s), by keyword with the
defaults left out and by position: the same fields, equal, the same hash and repr. A call
the dataclass refuses (a required value missing, an unknown one, one too many) is refused
the same way, and the objects stay frozen. The service lines and claims the reader makes
from the dict it filled (``era._made``) hold every field, in the class's order.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from test_remittance_split_json import corpus_files

from services.remittance import posting
from services.remittance.era import DATACLASS_INITS, read_835
from services.remittance.posting import Prior, shortfall, triage


def _objects() -> dict[type, list[Any]]:
    """Every object of a directly built class reachable from the corpus's reads, triage and
    payment summaries, by class."""
    found: dict[type, list[Any]] = defaultdict(list)

    def walk(value: Any) -> None:
        if type(value) in DATACLASS_INITS:
            found[type(value)].append(value)
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)

    bodies = [file.body for file in corpus_files()]
    # A claim whose charge cannot be read (a defect of its payment) and a transaction set
    # without its payment (BPR).
    bodies += [bodies[0].replace(b"CLP*", b"CLP*X*", 1), bodies[0].replace(b"BPR*", b"BPX*", 1)]
    for body in bodies:
        read = read_835(body)
        walk(read)
        postable, held = triage(read)
        walk(postable)
        walk(held)
        for payment in postable:
            walk(posting.reconcile(payment.remittance))
    walk(
        [Prior(), Prior(Decimal("1.00"), Decimal("2.00")), shortfall(_a_payment(found), None, None)]
    )
    return found


def _a_payment(found: dict[type, list[Any]]) -> Any:
    return next(iter(found[posting.ClaimPayment]))


@pytest.fixture(scope="module")
def objects() -> dict[type, list[Any]]:
    return _objects()


def _by_dataclass(cls: type, *args: Any, **kwargs: Any) -> Any:
    obj = object.__new__(cls)
    DATACLASS_INITS[cls](obj, *args, **kwargs)
    return obj


def test_every_class_built_directly_is_in_the_corpus(objects: dict[type, list[Any]]) -> None:
    assert set(objects) == set(DATACLASS_INITS)
    assert len(objects[posting.ClaimPayment]) > 250


def test_built_directly_is_built_by_the_dataclass(objects: dict[type, list[Any]]) -> None:
    for cls, items in objects.items():
        for item in items:
            fields = dataclasses.fields(item)
            values = {f.name: getattr(item, f.name) for f in fields}
            given = {
                f.name: values[f.name]
                for f in fields
                if f.default is dataclasses.MISSING or values[f.name] != f.default
            }
            # What the reader made from its own dict (``era._made``): every field, in order.
            assert list(vars(item)) == [f.name for f in fields], cls.__name__
            for args, kwargs in (((), given), (tuple(values.values()), {})):
                direct = cls(*args, **kwargs)
                reference = _by_dataclass(cls, *args, **kwargs)
                assert vars(direct) == vars(reference) == values, cls.__name__
                assert list(vars(direct)) == list(vars(reference)), cls.__name__
                assert direct == reference == item
                assert hash(direct) == hash(reference)
                assert repr(direct) == repr(reference)
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(direct, fields[0].name, None)


def _outcome(build: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return build(*args, **kwargs)
    except TypeError as exc:
        return type(exc)


def test_what_the_dataclass_refuses_is_refused(objects: dict[type, list[Any]]) -> None:
    refused = 0
    for cls, items in objects.items():
        item = items[0]
        values = [getattr(item, f.name) for f in dataclasses.fields(item)]
        for args, kwargs in (
            ((), {}),  # the required values missing (none for a class of defaults)
            ((*values, None), {}),  # one too many
            (tuple(values), {"not_a_field": 1}),
            (tuple(values[:1]), {dataclasses.fields(item)[0].name: values[0]}),  # twice
        ):
            direct = _outcome(cls, *args, **kwargs)
            reference = _outcome(_by_dataclass, cls, *args, **kwargs)
            assert direct == reference, cls.__name__
            refused += reference is TypeError
    assert refused >= 3 * len(objects)


def test_a_class_it_cannot_build_directly_is_refused() -> None:
    from services.remittance.era import direct_init

    @dataclasses.dataclass(frozen=True)
    class Listed:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            assert self.value > 0

    for cls in (Listed, Checked):
        with pytest.raises(TypeError):
            direct_init(cls)
