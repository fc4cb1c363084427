"""Contract models built from values intake made itself, without pydantic's validation
when every value is already what validation would give back.

Intake turns validated FHIR resources into claimflow's contract models from values it
computed: stripped strings, dates, nested models it built a moment before. :func:`build`
checks each value against its field (its exact Python type, a ``Literal``'s members,
``min_length``/``max_length``, the contract's few ``pattern``s, ``gt``/``ge``, a nested
model's exact class) and, when every check passes, builds the model as pipeline's trusted
decode does (slots set directly), a Money amount rounded to cents as its validator rounds
it. The checks only ever say yes when pydantic would accept the value unchanged; anything
else (a subclass, a ``datetime`` for a ``date``, an int for a float, a string the pattern
might refuse, a Money amount that is not a finite Decimal) returns None, and the caller
validates as before, so a bad value gets the same error. ``tests/unit/test_intake_trusted.py``
holds the two ways equal.

It pays for the Encounter record (about 20 us validated, 10 us checked) and for a service
line (DocumentedService: its model validator and its Money rounding run in Python, about
twice the checks): for a small model (an Address, a Provider) pydantic's validation costs
no more than the checks, and fhir.py validates those as before.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

import annotated_types
from pydantic import AfterValidator, BaseModel
from pydantic_core import PydanticUndefined

from pipeline import models

T = TypeVar("T", bound=BaseModel)
Check = Callable[[Any], bool]

_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__

# The contract's patterns, each as a stricter Python equivalent (ASCII digits, no newline):
# what matches here matches pydantic's pattern.
_PATTERNS = {
    r"^\d{2}$": re.compile(r"[0-9]{2}"),
    r"^0?\d{3}$": re.compile(r"0?[0-9]{3}"),
    r"^\d{5}(\d{4})?$": re.compile(r"[0-9]{5}(?:[0-9]{4})?"),
    r"^\d{9}$": re.compile(r"[0-9]{9}"),
    r"^\d{10}$": re.compile(r"[0-9]{10}"),
    r"^[A-Z]{2}$": re.compile(r"[A-Z]{2}"),
}
_EXACT = {str, date, datetime, time, bool, float}


class _Unsupported(Exception):
    """A field this module does not check: the model is always validated."""


def _is_money(annotation: Any, metadata: list[Any]) -> bool:
    """Whether a field holds Money (an amount its validator rounds to cents)."""
    stack = [annotation, *metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, AfterValidator) and item.func is models._cents:
            return True
        stack.extend(typing.get_args(item))
        stack.extend(getattr(item, "__metadata__", ()))
    return False


class _Source:
    """The names a generated builder refers to (its environment)."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}

    def name(self, value: Any) -> str:
        key = f"c{len(self.env)}"
        self.env[key] = value
        return key


def _check(annotation: Any, metadata: list[Any], v: str, src: _Source) -> str:
    """A Python expression over the variable ``v`` that is true only for values pydantic
    accepts unchanged for a field (Money: before its rounding to cents)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != len(typing.get_args(annotation)) - 1 or len(args) != 1:
            raise _Unsupported(annotation)
        return f"({v} is None or {_check(args[0], metadata, v, src)})"
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _check(base, [*extra, *metadata], v, src)
    if origin is typing.Literal:
        members = typing.get_args(annotation)
        if metadata or not all(type(m) is str for m in members):
            raise _Unsupported(annotation)
        return f"(type({v}) is str and {v} in {src.name(frozenset(members))})"
    if origin is list:
        (item,) = typing.get_args(annotation)
        if metadata:
            raise _Unsupported(annotation)
        each = _check(item, [], "x", src)
        return f"(type({v}) is list and all([{each} for x in {v}]))"
    if isinstance(annotation, type) and issubclass(annotation, models.Model):
        if metadata:
            raise _Unsupported(annotation)
        return f"type({v}) is {src.name(annotation)}"
    checks: list[str] = []
    money = False
    for meta in metadata:
        if isinstance(meta, AfterValidator) and meta.func is models._cents:
            money = True
        elif isinstance(meta, annotated_types.MinLen):
            checks.append(f"len({v}) >= {int(meta.min_length)}")
        elif isinstance(meta, annotated_types.MaxLen):
            checks.append(f"len({v}) <= {int(meta.max_length)}")
        elif isinstance(meta, annotated_types.Gt) and type(meta.gt) is int:
            checks.append(f"{v} > {meta.gt}")
        elif isinstance(meta, annotated_types.Ge) and type(meta.ge) is int:
            checks.append(f"{v} >= {meta.ge}")
        elif getattr(meta, "pattern", None) is not None and meta.pattern in _PATTERNS:
            checks.append(f"{src.name(_PATTERNS[meta.pattern].fullmatch)}({v}) is not None")
        else:
            raise _Unsupported(meta)
    if money:
        if annotation is not Decimal:
            raise _Unsupported(annotation)
        first = f"type({v}) is {src.name(Decimal)} and {v}.is_finite()"  # NaN, inf refused
    elif annotation in _EXACT:
        first = f"type({v}) is {src.name(annotation)}"
    else:
        raise _Unsupported(annotation)
    if checks and annotation not in (str, float, Decimal):
        raise _Unsupported(annotation)
    return "(" + " and ".join([first, *checks]) + ")"


def _service_ok(values: dict[str, Any]) -> bool:
    """DocumentedService's model validator, as a predicate (see models.py)."""
    code, system = values["code"], values["system"]
    if code is None and not values["revenue_code"]:
        return False
    return (code is None) == (system is None)


# Model validators this module knows, as predicates over the values (with the defaults).
_MODEL_CHECKS: dict[type[BaseModel], Check] = {models.DocumentedService: _service_ok}
_MISSING = object()
Build = Callable[[dict[str, Any]], Any]


@cache
def _builder(cls: type[BaseModel]) -> Build | None:
    """The function that builds ``cls`` from checked values (None when a check fails);
    None when the class has something this module does not check."""
    decorators = cls.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        return None
    if decorators.model_validators and cls not in _MODEL_CHECKS:
        return None
    if cls.model_config.get("extra") != "forbid" or cls.__private_attributes__:
        return None
    src = _Source()
    lines = [
        "def build(values):",
        f"    if not {src.name(frozenset(cls.model_fields))}.issuperset(values):",
        "        return None",
    ]
    items = []
    for i, (name, info) in enumerate(cls.model_fields.items()):
        if info.alias not in (None, name):
            return None
        default = info.default
        if info.default_factory is list:
            default = []  # made afresh below, as the factory would
        elif info.default_factory is not None:
            return None
        if type(default) is list and default:
            return None  # only an empty list default is made afresh below
        try:
            check = _check(info.annotation, list(info.metadata), f"v{i}", src)
        except _Unsupported:
            return None
        lines.append(f"    v{i} = values.get({name!r}, _MISSING)")
        lines.append(f"    if v{i} is _MISSING:")
        if default is PydanticUndefined:
            lines.append("        return None  # required: pydantic's error")
        elif type(default) is list:
            lines.append(f"        v{i} = []")
        else:
            lines.append(f"        v{i} = {src.name(default)}")
        lines.append(f"    elif not {check}:")
        lines.append("        return None")
        if _is_money(info.annotation, list(info.metadata)):
            lines.append(f"    elif v{i} is not None:")
            lines.append(f"        v{i} = _cents(v{i})")
        items.append(f"{name!r}: v{i}")
    lines.append(f"    full = {{{', '.join(items)}}}")
    if cls in _MODEL_CHECKS:
        lines.append(f"    if not {src.name(_MODEL_CHECKS[cls])}(full):")
        lines.append("        return None")
    lines += [
        "    model = _new(_cls)",
        "    _set_dict(model, full)",
        "    _set_fields_set(model, set(values))",
        "    _set_extra(model, None)",
        "    _set_private(model, None)",
        "    return model",
    ]
    env = {
        **src.env, "_MISSING": _MISSING, "_cents": models._cents, "_new": cls.__new__,
        "_cls": cls, "_set_dict": _SET_DICT, "_set_fields_set": _SET_FIELDS_SET,
        "_set_extra": _SET_EXTRA, "_set_private": _SET_PRIVATE,
    }  # fmt: skip
    exec(compile("\n".join(lines), f"<trusted {cls.__name__}>", "exec"), env)  # noqa: S102
    built: Build = env["build"]
    return built


def build(cls: type[T], values: dict[str, Any]) -> T | None:
    """``cls(**values)`` without validation when every value passes its field's check;
    None when pydantic must decide (the caller then validates as before)."""
    builder = _builder(cls) if _enabled else None
    return builder(values) if builder is not None else None


_enabled = True


@contextmanager
def validated_only() -> Iterator[None]:
    """Within the block, :func:`build` leaves every model to pydantic: the reference path,
    for the judge test and the benchmark."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before
