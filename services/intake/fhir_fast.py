"""A cheaper way to the fhir.resources model of a FHIR resource that is plainly valid.

fhir.resources validates element by element through Python validators (a custom
``__init__``, two model validators and a wrap validator per nested element), ~10 us per
element. Most of what an EHR sends is plainly valid, and for that the validation is only
the cost of building the objects. :func:`construct` checks a resource against the field
metadata of fhir.resources' own R4B models (which element names a type has, which hold a
complex type and which a primitive, which are lists, which are required, which choice
elements exclude each other) and, when every element passes, builds the same model
instances without running the model validators. Primitive values go through pydantic's
validator for the field's own annotation (fhir_core's date, dateTime, decimal, code …
types), so the values are the ones fhir.resources would make. The walk is a function
generated per class and set of element names, and a complex element whose exact content
was built before is the model built then (see "builders generated" below), as is an
Organization, Practitioner or Location (see "whole resources" below).

It never decides a rejection: anything it does not check or is not sure of (an unknown
element, a ``_element`` extension sibling, a contained resource, a null inside a list, an
empty object, a value a primitive validator refuses, a missing required element, two
choices of one ``value[x]``) returns None, and the caller validates with fhir.resources,
whose error is the one the sender sees. ``tests/unit/test_intake_fhir_fast.py`` holds the
two paths equal on real bundles and on mutations of them.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.resource import Resource
from fhir_core.types import Date, DateTime
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import SchemaValidator

from services.intake.memo import json_copy, same_json

_MISSING = object()
# pydantic's instance slots, set through their descriptors (as pipeline/serde.py's trusted
# build does): cheaper than object.__setattr__, which looks each name up first.
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


@dataclass(slots=True)
class _Field:
    """How one element of a model is checked and where its value goes."""

    name: str  # the model's attribute
    model: type[BaseModel] | None  # a complex element type, else None (a primitive)
    many: bool  # a list in JSON
    adapter: TypeAdapter[Any] | None  # a primitive's validator (the field's annotation)
    seen: dict[Any, Any]  # a primitive's values already validated (see _primitive)
    child: _Plan | None = None  # the plan of ``model``, once resolved
    # A single date or dateTime's value already validated, by its zone (see _date_time).
    days: dict[str, Any] | None = None
    check: Callable[[Any], Any] | None = None  # ``adapter``'s validation (see _validator_of)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The checks for one model class, derived from its pydantic fields."""

    fields: dict[str, _Field]  # by JSON name
    required: tuple[str, ...]  # JSON names that must hold a value
    choices: tuple[tuple[str, ...], ...]  # JSON names of which at most one may be present
    required_choices: tuple[tuple[str, ...], ...]  # ... and of which one must be
    defaults: dict[str, Any]  # every attribute and its default, in field order
    resource_type: str | None  # the ``resourceType`` a resource carries
    cls: type[BaseModel]
    new: Any  # cls.__new__
    checked: bool  # whether any of the checks after the elements applies
    # A builder generated for each set of element names (in the order sent) met so far.
    shapes: dict[tuple[str, ...], Callable[[dict[str, Any], bool], BaseModel]] = field(
        default_factory=dict
    )


def _complex_kinds(annotation: Any) -> tuple[set[type[BaseModel]], bool]:
    """The complex element classes an annotation names, and whether it is a list."""
    kinds: set[type[BaseModel]] = set()
    many = False
    stack = [annotation]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and hasattr(tp, "get_model_klass"):
            kinds.add(tp.get_model_klass())
            continue
        if typing.get_origin(tp) is list:
            many = True
        stack.extend(typing.get_args(tp))
    return kinds, many


_PLANS: dict[type[BaseModel], _Plan | None] = {}


def _plan(cls: type[BaseModel]) -> _Plan | None:
    """The plan of a model class, with the plans of its complex elements (an element whose
    class has none is left out: fhir.resources decides when it occurs)."""
    if cls in _PLANS:
        return _PLANS[cls]
    plan = _PLANS[cls] = _make_plan(cls)  # before its elements: types nest (Extension)
    if plan is not None:
        for alias, spec in list(plan.fields.items()):
            if spec.model is not None:
                child = _plan(spec.model)
                if child is None:
                    del plan.fields[alias]
                spec.child = child
    return plan


def _make_plan(cls: type[BaseModel]) -> _Plan | None:
    """One class's plan, its complex elements not yet resolved; None when the class has
    something this module does not check (a custom validator beyond fhir_core's own, a
    required non-element field)."""
    decorators = cls.__pydantic_decorators__
    expected = {"reject_null_complex_elements", "validate_after_model_construction"}
    if set(decorators.model_validators) - expected or decorators.field_validators:
        return None
    fields: dict[str, _Field] = {}
    required: list[str] = []
    defaults: list[tuple[str, Any]] = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            return None  # a mutable default: not shared between instances
        defaults.append((name, info.default))
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            if info.is_required():
                return None
            continue  # fhir_comments and the ``_element`` siblings: left to fhir.resources
        alias = info.alias or name
        kinds, many = _complex_kinds(info.annotation)
        if kinds:
            if len(kinds) != 1:
                continue
            (kind,) = kinds
            if issubclass(kind, Resource):
                continue  # contained resources: any type, left to fhir.resources
            fields[alias] = _Field(name, kind, many, None, {})
        else:
            flat = _flatten(info.annotation)
            many = any(typing.get_origin(tp) is list for tp in flat)
            dated = not many and any(type(tp) in (Date, DateTime) for tp in flat)  # not Instant
            adapter, seen, days = _primitive_kind(info.annotation or Any, dated)
            fields[alias] = _Field(name, None, many, adapter, seen, check=_validator_of(adapter))
            fields[alias].days = days
        if info.is_required() or extra.get("element_required"):
            required.append(alias)
    aliases = {f.name: alias for alias, f in fields.items()}
    probe = cls.model_construct()
    for name, _ext in probe.get_required_fields():  # type: ignore[attr-defined]
        if name not in aliases:
            return None
        if aliases[name] not in required:
            required.append(aliases[name])
    choices: list[tuple[str, ...]] = []
    required_choices: list[tuple[str, ...]] = []
    for names in probe.get_one_of_many_fields().values():  # type: ignore[attr-defined]
        if any(n not in aliases for n in names):
            return None
        group = tuple(aliases[n] for n in names)
        choices.append(group)
        first = cls.model_fields[names[0]].json_schema_extra
        if isinstance(first, dict) and first.get("one_of_many_required") is True:
            required_choices.append(group)
    resource_type = getattr(cls, "__resource_type__", None)
    is_resource = issubclass(cls, Resource)
    return _Plan(
        fields=fields,
        required=tuple(required),
        choices=tuple(choices),
        required_choices=tuple(required_choices),
        defaults=dict(defaults),
        resource_type=resource_type if is_resource else None,
        cls=cls,
        new=cls.__new__,
        checked=bool(required or choices or is_resource),
    )


# The validator and the values already validated of a primitive's annotation, shared by
# every field of that annotation: a validator is a function of the annotation alone
# (TypeAdapter(annotation)), so a value met in one field is the same value in another. A
# bundle's day and time recur across fields (Encounter.period.start is
# Condition.recordedDate, Claim.created is period.end, Claim.billablePeriod's days are
# item.servicedDate's), and per field each was parsed again: 382 fields of the supported
# types share 27 annotations, and the stage's run over 200 messages of the pipeline
# benchmark's mix not seen before went from 458.3M to 453.5M instructions (-1.0%, callgrind).
_KINDS: dict[Any, tuple[TypeAdapter[Any], dict[Any, Any], dict[str, Any] | None]] = {}


def _primitive_kind(
    annotation: Any, dated: bool
) -> tuple[TypeAdapter[Any], dict[Any, Any], dict[str, Any] | None]:
    """(validator, values seen, dates by zone or None) for a primitive's annotation."""
    try:
        kind = _KINDS.get((annotation, dated))
    except TypeError:  # an annotation that cannot be a key: its own
        return TypeAdapter(annotation), {}, {} if dated else None
    if kind is None:
        kind = _KINDS[(annotation, dated)] = (
            TypeAdapter(annotation), {}, {} if dated else None
        )  # fmt: skip
    return kind


def _validator_of(adapter: TypeAdapter[Any]) -> Callable[[Any], Any]:
    """``adapter.validate_python``, as pydantic-core's validator called directly: the same
    validation (TypeAdapter passes the validator its own defaults), without the Python call
    in between, ~15 times a bundle not seen before (a new id, reference, name or date):
    constructing bundles not seen went from ~156 to ~153 us a bundle (means of four
    interleaved pairs of six sets of 400 bundles)."""
    core = adapter.validator
    return core.validate_python if isinstance(core, SchemaValidator) else adapter.validate_python


def _flatten(annotation: Any) -> list[Any]:
    """An annotation and every type argument inside it."""
    out, stack = [], [annotation]
    while stack:
        tp = stack.pop()
        out.append(tp)
        stack.extend(typing.get_args(tp))
    return out


class _Unsure(Exception):
    """Raised inside the walk when fhir.resources must decide."""


# Primitive values already validated, per field: codes, systems, dates and names repeat
# across a feed. A plain dict per field, emptied when it reaches _SEEN_MAX (cheaper than an
# LRU on this path, which runs ~200 times a bundle). Entries hold message content in memory
# only, like memo.py's.
_SEEN_MAX = 4096
_REFUSED = (ValidationError, ValueError, TypeError)  # what a primitive's validator raises


def _primitive(spec: _Field, value: Any) -> Any:
    """The value fhir.resources' validator makes of a JSON primitive (or list of them)."""
    if type(value) is str:  # most primitives (codes, uris, dates, strings): the value is its key
        hit = spec.seen.get(value, _MISSING)
        if hit is not _MISSING:
            return hit
        key: Any = value
        if spec.days is not None:
            made = _date_time(spec, value)
            if made is not None:
                if len(spec.seen) >= _SEEN_MAX:
                    spec.seen.clear()
                spec.seen[key] = made
                return made
    else:
        if type(value) is list and not spec.many:
            raise _Unsure
        key = _value_key(value)
        hit = spec.seen.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
    try:
        result = spec.check(value)  # type: ignore[misc]
    except _REFUSED:
        raise _Unsure from None
    if len(spec.seen) >= _SEEN_MAX:
        spec.seen.clear()
    spec.seen[key] = result
    return result


# A date or dateTime is seldom sent twice (a birth date, a visit's start to the minute), but
# its zones are few. fhir_core checks the string against its pattern and pydantic parses it;
# for the plain forms below (a full date; or a full date, hours, minutes and seconds without
# a fraction, and a zone), both accept a value exactly when its date is a calendar day (a
# zone accepted once, and a day that is not one, refused by ``date``, is left to them), and
# give the date, or the datetime of that zone, of its parts. So the first value met of a zone
# (or the first date) is validated, and once it gave exactly its parts the next ones are
# made from theirs. Keyed by day and zone before, a new visit day or birth date went through
# fhir_core's validator (3.5-7.7 us each, ~4 a FHIR bundle of the pipeline benchmark's mix):
# parsing that mix went from 258 to 247 us a message (four interleaved pairs).
_PLAIN_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(Z|[+-][0-9]{2}:[0-9]{2}))?"
)
_DATE_ONLY = "date"  # the key of the date kept for a date alone (a zone has a sign or is Z)


def _date_time(spec: _Field, value: str) -> date | None:
    """The value of a date or dateTime of a plain form (else None), or _Unsure."""
    plain = _PLAIN_DATE_TIME.fullmatch(value)
    if plain is None:
        return None
    days: dict[str, Any] = spec.days  # type: ignore[assignment]
    dated = plain[7] is None  # a date alone
    zone = _DATE_ONLY if dated else plain[7]
    known = days.get(zone)
    if known is not None:
        try:
            if dated:
                return date(int(plain[1]), int(plain[2]), int(plain[3]))
            # What ``known.replace(year=..., second=...)`` gives (known has no fraction and
            # fold 0), made by the constructor: ~1.2 us against ~2.0 us for replace's keywords.
            return datetime(
                int(plain[1]), int(plain[2]), int(plain[3]),
                int(plain[4]), int(plain[5]), int(plain[6]), 0, known.tzinfo,
            )  # fmt: skip
        except ValueError:
            pass  # not a calendar day: fhir_core's validator refuses it
    try:
        made = spec.check(value)  # type: ignore[misc]
    except (ValidationError, ValueError, TypeError):
        raise _Unsure from None
    parts = [int(p) for p in plain.groups()[:6] if p is not None]
    if dated:
        if type(made) is not date or [made.year, made.month, made.day] != parts:
            return made  # not what this form gives (never so): not kept
    elif (
        type(made) is not datetime
        or made.microsecond
        or made.tzinfo is None
        or [made.year, made.month, made.day, made.hour, made.minute, made.second] != parts
    ):
        return made  # not what this form gives (never so): not kept
    if len(days) >= _SEEN_MAX:
        days.clear()
    days[zone] = made
    return made


def _value_key(value: Any) -> Any:
    """A key telling a primitive's JSON values apart exactly: a list is the tuple of its
    items' keys (a tuple of strings and pairs whose first item is a type, so it never equals
    a scalar's key). ``_scalar_key`` inlined: this runs ~30 times a bundle."""
    kind = type(value)
    if kind is str:
        return value
    if kind is list:
        return tuple([v if type(v) is str else _scalar_key(v) for v in value])
    if value is None or kind is dict:
        raise _Unsure
    return kind, repr(value)


def _scalar_key(value: Any) -> Any:
    """A key telling JSON values apart exactly (1, 1.0, True, "1", Decimal 1.0 vs 1.00):
    a string stands for itself, anything else is (type, repr); a null, object or list
    inside a list is left to fhir.resources."""
    kind = type(value)
    if kind is str:
        return value
    if value is None or kind is list or kind is dict:
        raise _Unsure
    return kind, repr(value)


def _build(plan: _Plan, data: Any, top: bool) -> BaseModel:
    """The model of one JSON object, or _Unsure."""
    if type(data) is not dict:
        raise _Unsure
    fields = plan.fields
    values: dict[str, Any] = {}
    for key, value in data.items():
        spec = fields.get(key)
        if spec is None:
            if key == "resourceType" and top and plan.resource_type is not None:
                if value != plan.resource_type:
                    raise _Unsure
                continue
            raise _Unsure
        if value is None:
            raise _Unsure
        if spec.adapter is not None:  # a primitive
            if type(value) is str:
                hit = spec.seen.get(value, _MISSING)
                values[spec.name] = _primitive(spec, value) if hit is _MISSING else hit
            else:
                values[spec.name] = _primitive(spec, value)
            continue
        child = spec.child
        if child is None:
            raise _Unsure  # its plan is still being made (another thread)
        if spec.many:
            if type(value) is not list:
                raise _Unsure
            values[spec.name] = [_build(child, v, False) for v in value]
        else:
            values[spec.name] = _build(child, value, False)
    if plan.checked:
        if top and plan.resource_type is not None and "resourceType" not in data:
            raise _Unsure
        for alias in plan.required:
            if alias not in data:
                raise _Unsure
        for group in plan.choices:
            if sum(alias in data for alias in group) > 1:
                raise _Unsure
        for group in plan.required_choices:
            if not any(alias in data for alias in group):
                raise _Unsure
    full = plan.defaults.copy()
    full.update(values)
    model = plan.new(plan.cls)
    _SET_DICT(model, full)
    _SET_FIELDS_SET(model, set(values))
    _SET_EXTRA(model, None)
    _SET_PRIVATE(model, None)
    return model


# --- builders generated per model class and set of element names ---------------------------
#
# ``_build`` walks an object generically: per element, a lookup of its spec and a branch on
# its kind. The elements an object may hold are fixed by its class, and a feed sends few
# combinations of them (a Coding is system, code and display), so for each combination met
# (the object's keys, in the order sent) a function is generated that reads exactly those
# elements, with the checks after the walk (required elements, choices, ``resourceType``)
# decided when it is generated. It makes what ``_build`` makes for that combination; the
# differential test holds both equal to fhir.resources. At most _SHAPES_MAX combinations
# are generated per class (input decides which are met): past that, ``_build`` walks.
#
# Most of the cost is making the objects (~11 a resource), and nine in ten of the complex
# elements a feed sends repeat one met before (codings, concepts, references to the same
# payer and clinicians, amounts). So a complex element (not a resource) is kept by its
# content, up to _MEMO_MAX per combination, and the same content
# gives the same model: the key is, per element, the primitive's JSON value (exactly: see
# _value_key) or the identity of the child model built for it. An object is kept only when
# its children are kept (``_KEPT``: the identities of the models kept) and its strings are
# short (_KEEP_LEN: a note's attachment is not held in memory); so an identity in a key
# always names a live object, held by the kept model. Kept models are shared between
# resources and bundles, as fhir.py's memo shares validated ones: read them, never assign
# to them.

_SHAPES_MAX = 256
_MEMO_MAX = 4096
_KEEP_LEN = 512  # the longest string a kept object holds
_MEMOS: list[dict[Any, BaseModel]] = []  # every builder's kept models (forget() empties them)
_KEPT: set[int] = set()  # the identities of the models in _MEMOS


def _short(value: Any) -> bool:
    """Whether a primitive's JSON value (not a string: a number, a boolean, a list) is small
    enough to keep."""
    if type(value) is list:
        return len(value) <= 16 and all(type(v) is not str or len(v) <= _KEEP_LEN for v in value)
    return True


def _empty(memo: dict[Any, BaseModel]) -> None:
    # list(): one step under the GIL, should another thread be adding to the memo.
    _KEPT.difference_update([id(m) for m in list(memo.values())])
    memo.clear()


def _one(plan: _Plan, data: Any, top: bool) -> BaseModel:
    """The model of one JSON object, by the builder of its set of element names."""
    if type(data) is not dict:
        raise _Unsure
    builder = plan.shapes.get(tuple(data))
    if builder is None:
        builder = _shape_builder(plan, tuple(data))
    return builder(data, top)


def _generic(plan: _Plan) -> Callable[[dict[str, Any], bool], BaseModel]:
    return lambda data, top: _build(plan, data, top)


def _refused(data: dict[str, Any], top: bool) -> BaseModel:
    raise _Unsure


# Numbers and booleans, whose _value_key is (type, repr): made inline in the generated
# builders, without the call (~16 such values a bundle: sequences, ranks, amounts).
_SCALARS = frozenset({int, bool, float, Decimal})


def _key_of(v: str) -> str:
    """The generated expression of ``_value_key(v)``."""
    scalar = f"(type({v}), repr({v})) if type({v}) in _SCALARS else _value_key({v})"
    return f"{v} if type({v}) is str else {scalar}"


def _shape_builder(
    plan: _Plan, keys: tuple[str, ...]
) -> Callable[[dict[str, Any], bool], BaseModel]:
    """The builder of objects of ``plan``'s class holding exactly ``keys`` (generated once)."""
    if len(plan.shapes) >= _SHAPES_MAX:
        return _generic(plan)
    present = set(keys)
    fields = plan.fields
    if (
        any(k not in fields and k != "resourceType" for k in keys)
        or ("resourceType" in present and plan.resource_type is None)
        or any(alias not in present for alias in plan.required)
        or any(sum(alias in present for alias in group) > 1 for group in plan.choices)
        or any(not any(a in present for a in group) for group in plan.required_choices)
    ):
        plan.shapes[keys] = _refused  # what ``_build`` raises for this combination
        return _refused
    if any(fields[k].model is not None and fields[k].child is None for k in keys if k in fields):
        return _generic(plan)  # a plan still being made (another thread): not kept
    memo: dict[Any, BaseModel] = {}
    env: dict[str, Any] = {
        "_Unsure": _Unsure, "_MISSING": _MISSING, "_primitive": _primitive,
        "_value_key": _value_key, "_one": _one, "_new": plan.new,
        "_cls": plan.cls, "_defaults": plan.defaults, "_set_dict": _SET_DICT,
        "_set_fields_set": _SET_FIELDS_SET, "_set_extra": _SET_EXTRA,
        "_set_private": _SET_PRIVATE, "_rtype": plan.resource_type, "_memo": memo,
        "_MEMO_MAX": _MEMO_MAX, "_KEEP_LEN": _KEEP_LEN, "_KEPT": _KEPT, "_short": _short,
        "_empty": _empty, "_SCALARS": _SCALARS, "_REFUSED": _REFUSED, "_SEEN_MAX": _SEEN_MAX,
    }  # fmt: skip
    # Elements only: a resource hit would still look up every element, for one object less.
    kept = plan.resource_type is None
    head = ["def build(data, top):"]
    if "resourceType" in present:
        head.append("    if not top or data['resourceType'] != _rtype:\n        raise _Unsure")
    elif plan.resource_type is not None:
        head.append("    if top:\n        raise _Unsure")
    reads, parts, small, validate, assign, names = [], [], [], [], [], []
    for i, key in enumerate(keys):
        if key == "resourceType":
            continue
        spec = fields[key]
        names.append(spec.name)
        reads.append(f"    v{i} = data[{key!r}]")
        assign.append(f"    full[{spec.name!r}] = v{i}")
        if spec.adapter is not None:
            env[f"spec{i}"], env[f"seen{i}"] = spec, spec.seen
            # A number, boolean or list is looked up by its key (_value_key), made once:
            # _primitive would make it again, and through two Python calls (~25 such values
            # a bundle: sequences, ranks, amounts, quantities). A list's key is never in a
            # single element's values (only values validated are), so looking it up before
            # _primitive refuses it changes nothing.
            if kept:
                reads.append(f"    k{i} = {_key_of(f'v{i}')}")
            parts.append(f"k{i}")
            small.append(
                f"(len(v{i}) <= _KEEP_LEN if type(v{i}) is str"
                f" else type(v{i}) is not list or _short(v{i}))"
            )
            if kept:  # k{i} is the string itself, else the key
                validate.append(f"    hit = seen{i}.get(k{i}, _MISSING)")
            elif spec.days is None:
                validate.append(
                    f"    k{i} = {_key_of(f'v{i}')}\n    hit = seen{i}.get(k{i}, _MISSING)"
                )
            else:
                validate.append(
                    f"    if type(v{i}) is str:\n"
                    f"        hit = seen{i}.get(v{i}, _MISSING)\n"
                    f"    else:\n"
                    f"        hit = seen{i}.get(_value_key(v{i}), _MISSING)"
                )
            if spec.days is None:
                # A value not met before is validated here, as _primitive validates it
                # (~18 a FHIR bundle of the pipeline mix not seen before, most of them ids and
                # references): the call to _primitive and its second look-up saved.
                env[f"check{i}"] = spec.check
                many = (
                    ""
                    if spec.many
                    else f"        if type(v{i}) is list:\n            raise _Unsure\n"
                )
                validate.append(
                    f"    if hit is _MISSING:\n{many}"
                    f"        try:\n            hit = check{i}(v{i})\n"
                    f"        except _REFUSED:\n            raise _Unsure from None\n"
                    f"        if len(seen{i}) >= _SEEN_MAX:\n            seen{i}.clear()\n"
                    f"        seen{i}[k{i}] = hit\n"
                    f"    v{i} = hit"
                )
            else:  # a date or dateTime: _primitive makes it from one met before in its zone
                validate.append(f"    v{i} = _primitive(spec{i}, v{i}) if hit is _MISSING else hit")
        else:
            # The child's builder looked up here rather than through ``_one`` (and, for a
            # list, ``_each``): a Python call less per complex element, ~100 a bundle.
            child = spec.child
            if child is None:  # never, by the check above (mypy cannot tell)
                return _generic(plan)
            env[f"plan{i}"], env[f"shapes{i}"] = child, child.shapes
            if spec.many:
                reads.append(
                    f"    if type(v{i}) is not list:\n        raise _Unsure\n"
                    f"    items = []\n"
                    f"    for x in v{i}:\n"
                    f"        if type(x) is not dict:\n            raise _Unsure\n"
                    f"        b = shapes{i}.get(tuple(x))\n"
                    f"        items.append(_one(plan{i}, x, False) if b is None else b(x, False))\n"
                    f"    v{i} = items"
                )
                # map() in C, not a comprehension's frame: ~20 such lists a bundle, most
                # of them a concept's codings, looked up on every build.
                parts.append(f"tuple(map(id, v{i}))")
                small.append(f"_KEPT.issuperset(map(id, v{i}))")
            else:
                reads.append(
                    f"    if type(v{i}) is not dict:\n        raise _Unsure\n"
                    f"    b = shapes{i}.get(tuple(v{i}))\n"
                    f"    v{i} = _one(plan{i}, v{i}, False) if b is None else b(v{i}, False)"
                )
                parts.append(f"id(v{i})")
                small.append(f"id(v{i}) in _KEPT")
    lines = [*head, *reads]
    if kept:
        lines += [
            f"    key = ({', '.join(parts)}{',' if len(parts) == 1 else ''})",
            "    model = _memo.get(key)",
            "    if model is not None:\n        return model",
            f"    keep = {' and '.join(small) or 'True'}",
        ]
    lines += validate
    lines += ["    full = _defaults.copy()", *assign]
    fields_set = "{" + ", ".join(repr(n) for n in names) + "}" if names else "set()"
    lines += [
        "    model = _new(_cls)",
        "    _set_dict(model, full)",
        f"    _set_fields_set(model, {fields_set})",
        "    _set_extra(model, None)",
        "    _set_private(model, None)",
    ]
    if kept:
        lines += [
            "    if keep:",
            "        if len(_memo) >= _MEMO_MAX:\n            _empty(_memo)",
            "        _memo[key] = model",
            "        _KEPT.add(id(model))",
        ]
    lines.append("    return model")
    exec(compile("\n".join(lines), f"<fhir_fast {plan.cls.__name__}>", "exec"), env)  # noqa: S102
    builder = plan.shapes[keys] = env["build"]
    if kept:
        _MEMOS.append(memo)
    return builder


# --- whole resources kept by their content ---------------------------------------------------
#
# A practice sends the same Organization, Practitioner and Location in bundle after bundle
# (the same id, the same content), and building one, even from kept elements, still reads
# each element and makes the model (~8 us). So a resource of these types is kept whole, by
# its type and id, with a copy of the JSON it was built from: the next resource of that id
# whose JSON is exactly the copy (memo.same_json) is the model built then. A resource is
# kept from the second time its id is met (one seen once is not copied), and only when it
# is small (_WHOLE_LEAVES values, strings up to _KEEP_LEN). Kept resources are shared
# between bundles, as the kept elements are: read them, never assign to them.

_WHOLE_TYPES = frozenset({"Organization", "Practitioner", "Location"})
_WHOLE_MAX = 1024
_WHOLE_LEAVES = 256
_SEEN_ONCE = object()
# (resourceType, id) -> _SEEN_ONCE, or (the JSON copy, its non-string values, the model)
_WHOLE: dict[tuple[str, str], Any] = {}
_WHOLE_KEPT: set[int] = set()  # the identities of the models kept whole (see kept_whole)


def _kept_whole(rtype: str, resource: dict[str, Any]) -> BaseModel | None:
    """The model kept for a resource of exactly this content, else None."""
    rid = resource.get("id")
    if type(rid) is not str:
        return None
    hit = _WHOLE.get((rtype, rid))
    if hit is None or hit is _SEEN_ONCE:
        return None
    copied, leaves, model = hit
    return model if same_json(resource, copied, leaves) else None  # type: ignore[no-any-return]


def _keep_whole(rtype: str, resource: dict[str, Any], model: BaseModel) -> None:
    """Keep a resource just built (the second time its id is met)."""
    rid = resource.get("id")
    if type(rid) is not str:
        return
    key = (rtype, rid)
    if _WHOLE.get(key) is None:
        if len(_WHOLE) >= _WHOLE_MAX:
            _WHOLE.clear()
            _WHOLE_KEPT.clear()
        _WHOLE[key] = _SEEN_ONCE
        return
    copied = json_copy(resource, _KEEP_LEN, _WHOLE_LEAVES)
    if copied is not None:
        _WHOLE[key] = (*copied, model)
        _WHOLE_KEPT.add(id(model))


def plan(cls: type[BaseModel]) -> None:
    """Make the plan of a model class (and of its elements' classes) now rather than when
    a resource of it is first met."""
    _plan(cls)


def construct(cls: type[BaseModel], resource: dict[str, Any]) -> BaseModel | None:
    """The model fhir.resources would validate ``resource`` into, built without its
    validators; None when fhir.resources must decide (see the module docstring)."""
    if not _enabled:
        return None
    # _plan's and _one's work inline: two Python calls less per resource (~10 a bundle).
    plan = _PLANS[cls] if cls in _PLANS else _plan(cls)
    if plan is None:
        return None
    whole = _generated and plan.resource_type in _WHOLE_TYPES and type(resource) is dict
    if whole:
        model = _kept_whole(plan.resource_type, resource)  # type: ignore[arg-type]
        if model is not None:
            return model
    try:
        if not _generated:
            model = _build(plan, resource, True)
        elif type(resource) is not dict:
            return None  # what _one raises _Unsure for
        else:
            keys = tuple(resource)
            builder = plan.shapes.get(keys)
            if builder is None:
                builder = _shape_builder(plan, keys)
            model = builder(resource, True)
    except (_Unsure, RecursionError):
        return None
    if whole:
        _keep_whole(plan.resource_type, resource, model)  # type: ignore[arg-type]
    return model


def kept(model: Any) -> bool:
    """Whether a model is one the fast path keeps (shared by every resource and bundle that
    holds the same content, alive while kept)."""
    return id(model) in _KEPT


def kept_whole(model: Any) -> bool:
    """Whether a resource model is one kept whole (an Organization, Practitioner or Location
    sent again and again: the same object in every bundle that sends the same content). An
    identity that outlived its model may answer yes for another: a hint, for what keeps
    results by the identity of the model and holds it."""
    return id(model) in _WHOLE_KEPT


def forget() -> None:
    """Forget the primitive values already validated and the elements already built (a cold
    start, for benchmarks and tests)."""
    for plan in list(_PLANS.values()):
        for spec in plan.fields.values() if plan is not None else ():
            spec.seen.clear()
            if spec.days is not None:
                spec.days.clear()
    for memo in list(_MEMOS):
        memo.clear()
    _KEPT.clear()
    _WHOLE.clear()
    _WHOLE_KEPT.clear()


_enabled = True
_generated = True


@contextmanager
def fhir_resources_only() -> Iterator[None]:
    """Within the block, :func:`construct` leaves every resource to fhir.resources: the
    reference path, for the differential test and the benchmark."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


@contextmanager
def walk_only() -> Iterator[None]:
    """Within the block, :func:`construct` walks every resource with ``_build`` (no
    generated builders, nothing kept): the previous fast path, for the benchmark and tests."""
    global _generated
    before, _generated = _generated, False
    try:
        yield
    finally:
        _generated = before
