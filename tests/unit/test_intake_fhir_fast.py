"""The cheaper FHIR path (services/intake/fhir_fast.py) against fhir.resources itself.

A corpus of real bundles (the README's example, the hospital bundles the facility tests
use, Synthea's when the shared files are there, the simulator in both mixes) and
systematic mutations of every element of its resources (wrong JSON types, bad dates and
codes, bad references, missing required elements, unknown elements, lists where one value
goes and the reverse, nulls, empty values, extensions and ``_element`` siblings, contained
resources, a second choice of a ``value[x]``). On every input both paths agree: the fast
path builds exactly the model fhir.resources validates, or leaves the input to it; a
bundle gives the same encounters, or the same error (field and reason), either way.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hospital_bundles import bundle as hospital_bundle
from hospital_bundles import inpatient_items, item
from pydantic import BaseModel, ValidationError
from shared_data import AVAILABLE, SHARED_DATA

from pipeline.errors import InputError
from services.intake import fhir_fast
from services.intake.fhir import SUPPORTED, parse_bundle
from sim.ehr import generate, provider_directory

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "office-visit.fhir.json"
EXT = {"url": "http://example.org/fhir/StructureDefinition/x", "valueString": "y"}
NOTE = b"Follow up in 3 months."
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _load(body: bytes | str) -> dict[str, Any]:
    return json.loads(body, parse_float=Decimal)  # as intake decodes a body


def corpus() -> list[tuple[str, dict[str, Any]]]:
    """(name, bundle) for every bundle the differential runs on."""
    example = _load(EXAMPLE.read_text())
    out = [("example", example)]
    with_documents = copy.deepcopy(example)
    visit, clinician = (
        next(e["fullUrl"] for e in example["entry"] if e["resource"]["resourceType"] == kind)
        for kind in ("Encounter", "Practitioner")
    )
    with_documents["entry"] += [
        {"fullUrl": "urn:uuid:note-1", "resource": {
            "resourceType": "DocumentReference", "id": "note-1", "status": "current",
            "date": "2026-03-10T10:15:00-06:00",
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": base64.b64encode(NOTE).decode()}}],
            "context": {"encounter": [{"reference": visit}],
                        "period": {"start": "2026-03-10"}},
        }},
        {"fullUrl": "urn:uuid:role-1", "resource": {
            "resourceType": "PractitionerRole", "id": "role-1", "active": True,
            "practitioner": {"reference": clinician},
            "specialty": [{"coding": [{"system": "http://nucc.org/provider-taxonomy",
                                       "code": "207Q00000X"}]}],
        }},
    ]  # fmt: skip
    out.append(("example with a note and a role", with_documents))
    admitted = date(2026, 2, 20)
    out.append((
        "hospital stay",
        _load(hospital_bundle(
            ident="stay", klass="IMP", admitted=admitted, days=3,
            diagnoses=[("J18.9", "Y"), ("E11.9", "y")],
            items=inpatient_items(admitted, 3, surgical=True), pcs=["0DTJ4ZZ"],
            admitting="R50.9", reason_for_visit="R06.02",
        )),
    ))  # fmt: skip
    out.append((
        "ed visit",
        _load(hospital_bundle(
            ident="ed", klass="EMER", admitted=admitted, days=0, diagnoses=[("R07.89", None)],
            items=[item(1, "0450", "1250.00", code="99284", on=admitted)],
            professional_items=[item(1, None, "310.00", code="99284", on=admitted)],
        )),
    ))  # fmt: skip
    if AVAILABLE:
        for path in sorted((SHARED_DATA / "fhir").rglob("*.json")):
            data = _load(path.read_bytes())
            if data.get("resourceType") == "Bundle":
                out.append((path.name, data))
    for mix in ("office", "all"):
        for sid, _, body in generate(40, seed=21, fmt="fhir", mix=mix):
            out.append((f"{mix}:{sid}", _load(body)))
    return out


CORPUS = corpus()


def supported(bundle: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(entry index, resource) for each resource intake validates."""
    for i, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") in SUPPORTED:
            yield i, resource


def full(cls: type[BaseModel], resource: Any) -> BaseModel | None:
    """fhir.resources' own validation: the model, or None when it refuses."""
    try:
        return cls.model_validate(resource)
    except (ValidationError, ValueError, TypeError):
        return None


def same_model(fast: BaseModel, reference: BaseModel | None) -> bool:
    return (
        reference is not None
        and fast == reference
        and fast.model_fields_set == reference.model_fields_set
        and fast.model_dump() == reference.model_dump()
    )


def outcome(bundle: dict[str, Any]) -> Any:
    """What intake makes of a bundle: its encounters, ignored counts and notes, or the error."""
    try:
        got = parse_bundle(
            copy.deepcopy(bundle), source_id="m1", received_at=AT, directory=DIRECTORY
        )
    except InputError as exc:
        return ("error", exc.field, exc.reason)
    return ([e.model_dump() for e in got.encounters], got.ignored, got.notes)


DIRECTORY = provider_directory()


def both_paths(bundle: dict[str, Any]) -> tuple[Any, Any]:
    fast = outcome(bundle)
    with fhir_fast.fhir_resources_only():
        reference = outcome(bundle)
    return fast, reference


def test_fast_path_builds_every_corpus_resource_as_fhir_resources_does() -> None:
    kinds: Counter[str] = Counter()
    for name, bundle in CORPUS:
        for i, resource in supported(bundle):
            cls = get_fhir_model_class(resource["resourceType"])
            fast = fhir_fast.construct(cls, resource)
            assert fast is not None, f"{name} entry[{i}] left to fhir.resources"
            assert same_model(fast, full(cls, resource)), f"{name} entry[{i}]"
            kinds[resource["resourceType"]] += 1
    assert set(kinds) == set(SUPPORTED)


def test_corpus_bundles_give_the_same_encounters_on_both_paths() -> None:
    parsed = 0
    for name, bundle in CORPUS:
        fast, reference = both_paths(bundle)
        assert fast == reference, name
        parsed += fast[0] != "error"
    assert parsed >= len(CORPUS) - 2  # Synthea's two side files hold no Encounter


# --- mutations ---------------------------------------------------------------------------


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every object member and list item below value."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*path, key)
            yield from _nodes(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield (*path, i)
            yield from _nodes(child, (*path, i))


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _variants(key: Any, value: Any) -> Iterator[tuple[str, Any]]:
    """Replacements for one value: wrong types, bad formats, cardinality, empties, nulls."""
    yield "null", None
    if isinstance(value, bool):
        yield "wrong type", "true"
        yield "wrong type", 1
    elif isinstance(value, (int, Decimal)):
        yield "wrong type", str(value)
        yield "wrong type", True
        yield "bad number", -1
        yield "bad number", Decimal("1.50")
        yield "bad number", Decimal("1E+2")
    elif isinstance(value, str):
        yield "wrong type", 7
        yield "wrong type", {"value": value}
        yield "empty", ""
        yield "bad code", f" {value}"
        yield "bad code", value.replace(" ", "  ") + "  x"
        if DATE.match(value):
            yield "bad date", "2026-02-30"
            yield "bad date", "2026-3-1"
            yield "bad date", "2026-03-01T10:00"  # a time needs a zone
            yield "bad date", "2026-03-01T25:00:00Z"
            yield "partial date", "2026-03"
            yield "partial date", "2026"
            yield "date time", value[:10] + "T09:30:00-05:00"
        if key == "reference":
            for bad in ("", "#missing", "Patient/", "urn:uuid:nowhere", "Patient?identifier=a|b"):
                yield "bad reference", bad
    if isinstance(value, dict):
        yield "wrong type", "text"
        yield "cardinality", [value]
        yield "empty", {}
        yield "unknown element", {**value, "unknownElement": "x"}
        yield "extension", {**value, "extension": [EXT]}
        yield "extension", {**value, "extension": [{"url": EXT["url"]}]}
        yield "extension", {**value, "extension": [{**EXT, "valueBoolean": True}]}
        yield "extension", {**value, "modifierExtension": [EXT]}
        yield "extension", {**value, "fhir_comments": ["x"]}
    elif isinstance(value, list):
        if value:
            yield "cardinality", value[0]
            yield "cardinality", [*value, value[0]]
            yield "null", [*value, None]
        yield "empty", []
        yield "cardinality", [value]
    else:
        yield "cardinality", [value]


def _shape(path: tuple[Any, ...]) -> tuple[str, ...]:
    """A path without its list indexes: the element it names, wherever it repeats."""
    return tuple(step for step in path if isinstance(step, str))


def mutants(
    resource: dict[str, Any], done: set[Any] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, mutated copy) for every element of a resource; with ``done``, only for the
    elements (type and path without indexes) not mutated before, which it then holds."""
    rtype = resource["resourceType"]
    for path in _nodes(resource):
        key = path[-1]
        if key == "resourceType":
            continue
        if done is not None:
            seen = (rtype, _shape(path), isinstance(key, int))
            if seen in done:
                continue
            done.add(seen)
        for kind, new in _variants(key, _at(resource, path)):
            out = copy.deepcopy(resource)
            _at(out, path[:-1])[key] = new
            yield kind, out
        if isinstance(key, str):
            out = copy.deepcopy(resource)
            parent = _at(out, path[:-1])
            del parent[key]
            yield "missing", out
            out = copy.deepcopy(resource)
            _at(out, path[:-1])[f"_{key}"] = {"extension": [EXT]}
            yield "extension", out
    cls = get_fhir_model_class(resource["resourceType"])
    plan = fhir_fast._plan(cls)
    assert plan is not None
    for alias, spec in plan.fields.items():
        if spec.name != alias and alias in resource:  # the Python name (class_fhir)
            out = copy.deepcopy(resource)
            out[spec.name] = out.pop(alias)
            yield "unknown element", out
    yield "wrong resource type", {**resource, "resourceType": "Observation"}
    patient = {"resourceType": "Patient", "id": "inner", "birthDate": "1960-01-01"}
    yield "contained", {**resource, "contained": [patient]}
    yield "contained", {**resource, "contained": [{**patient, "birthDate": "1960-13-01"}]}
    for path in _nodes(resource):  # a second choice of a value[x]
        parent = _at(resource, path[:-1])
        if not isinstance(parent, dict):
            continue
        owner = _owner(cls, resource, path[:-1])
        owner_plan = fhir_fast._plan(owner) if owner is not None else None
        for group in owner_plan.choices if owner_plan is not None else ():
            if path[-1] in group:
                for other in group:
                    if other not in parent:
                        out = copy.deepcopy(resource)
                        _at(out, path[:-1])[other] = copy.deepcopy(parent[path[-1]])
                        yield "two choices", out
                        break


def _owner(cls: type[BaseModel], resource: dict[str, Any], path: tuple[Any, ...]) -> Any:
    """The model class of the object at path (None below a primitive or unknown element)."""
    current: Any = cls
    for step in path:
        if isinstance(step, int):
            continue
        plan = fhir_fast._plan(current)
        spec = plan.fields.get(step) if plan is not None else None
        if spec is None or spec.model is None:
            return None
        current = spec.model
    return current


def _sample() -> list[tuple[str, int, dict[str, Any]]]:
    """Resources of the corpus that hold, together, every element it has (by type and path
    without indexes), each resource bringing at least one new element."""
    seen: set[Any] = set()
    out = []
    for name, bundle in CORPUS:
        for i, resource in supported(bundle):
            shapes = {(resource["resourceType"], _shape(p)) for p in _nodes(resource)}
            if not shapes <= seen:
                seen |= shapes
                out.append((name, i, resource))
    return out


SAMPLE = _sample()


def test_mutated_resources_are_built_only_as_fhir_resources_would() -> None:
    outcomes: Counter[tuple[str, str]] = Counter()
    done: set[Any] = set()
    for name, i, resource in SAMPLE:
        cls = get_fhir_model_class(resource["resourceType"])
        for kind, mutant in mutants(resource, done):
            fast = fhir_fast.construct(cls, mutant)
            reference = full(cls, mutant)
            if fast is not None:
                assert same_model(fast, reference), (name, i, kind, mutant)
                outcomes[kind, "built"] += 1
            else:
                outcomes[kind, "accepted" if reference is not None else "refused"] += 1
    kinds = {kind for kind, _ in outcomes}
    assert kinds >= {
        "null", "wrong type", "bad date", "bad code", "bad reference", "missing", "empty",
        "unknown element", "cardinality", "extension", "contained", "two choices",
        "wrong resource type", "partial date", "bad number",
    }  # fmt: skip
    # Every class of mutation that fhir.resources refuses reached it, and the fast path
    # still built the mutations that stay valid.
    for kind in ("wrong type", "bad date", "missing", "unknown element", "cardinality",
                 "two choices", "wrong resource type", "null"):  # fmt: skip
        assert outcomes[kind, "refused"] > 0, kind
    for kind in ("bad reference", "partial date", "extension", "bad number", "missing"):
        assert outcomes[kind, "built"] > 0, kind
    assert outcomes["contained", "accepted"] > 0  # contained: always left to fhir.resources


@pytest.mark.parametrize("source", ["example", "hospital stay", "all:"])
def test_mutated_bundles_give_the_same_encounters_or_the_same_error(source: str) -> None:
    name, bundle = next((n, b) for n, b in CORPUS if n.startswith(source))
    results: Counter[str] = Counter()
    done: set[Any] = set()
    for i, resource in supported(bundle):
        for n, (kind, mutant) in enumerate(mutants(resource, done)):
            if n % 6:  # a sixth of them: each runs the whole bundle through both paths
                continue
            changed = copy.deepcopy(bundle)
            changed["entry"][i]["resource"] = mutant
            fast, reference = both_paths(changed)
            assert fast == reference, (name, i, kind, mutant)
            results["error" if fast[0] == "error" else "parsed"] += 1
    assert results["error"] > 0 and results["parsed"] > 0


# --- the generated builders, their kept elements, and the generic walk -------------------

# Every bundle the simulator sends the pipeline benchmark's first phase (both mixes), at the
# resource level: each resource built by the generated builders as fhir.resources validates
# it, with elements kept from earlier bundles reused.
SIMULATED = [
    (f"{mix}:{sid}", _load(body))
    for mix in ("office", "all")
    for sid, _, body in generate(150, seed=101, fmt="fhir", mix=mix)
]


def test_every_simulated_resource_is_built_as_fhir_resources_validates_it() -> None:
    built = 0
    for name, bundle in SIMULATED:
        for i, resource in supported(bundle):
            cls = get_fhir_model_class(resource["resourceType"])
            fast = fhir_fast.construct(cls, resource)
            assert fast is not None and same_model(fast, full(cls, resource)), (name, i)
            built += 1
    assert built > 2500


@pytest.fixture
def walk() -> Iterator[None]:
    """The generic walk (``_build``) instead of the generated builders."""
    with fhir_fast.walk_only():
        yield


@pytest.fixture
def few_shapes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Builders generated for the first two combinations of elements of a class only: the
    others are walked (what happens past _SHAPES_MAX)."""
    monkeypatch.setattr(fhir_fast, "_SHAPES_MAX", 2)
    yield from new_builders()


def new_builders() -> Iterator[None]:
    """Builders generated anew (with the module's settings of the moment), then the
    previous ones back."""
    plans = [plan for plan in list(fhir_fast._PLANS.values()) if plan is not None]
    kept = [dict(plan.shapes) for plan in plans]
    for plan in plans:
        plan.shapes.clear()
    yield
    for plan, shapes in zip(plans, kept, strict=True):
        plan.shapes.clear()
        plan.shapes.update(shapes)


@pytest.mark.parametrize("mode", ["walk", "few_shapes"])
def test_the_walk_and_the_generated_builders_build_the_same(
    mode: str, request: pytest.FixtureRequest
) -> None:
    """The mutated corpus, on the walk or with most combinations walked, against the
    generated builders (and fhir.resources where either builds)."""
    done: set[Any] = set()
    cases = [
        (get_fhir_model_class(resource["resourceType"]), mutant)
        for _, _, resource in SAMPLE
        for _, mutant in [("", resource), *mutants(resource, done)]
    ]
    generated = [fhir_fast.construct(cls, mutant) for cls, mutant in cases]
    request.getfixturevalue(mode)
    other = [fhir_fast.construct(cls, mutant) for cls, mutant in cases]
    for (cls, mutant), a, b in zip(cases, generated, other, strict=True):
        assert (a is None) == (b is None), mutant
        if a is not None:
            assert same_model(a, b) and same_model(a, full(cls, mutant)), mutant
    assert sum(a is not None for a in generated) > 100
    assert sum(a is None for a in generated) > 100


def test_an_element_is_kept_by_its_exact_content() -> None:
    """The same content gives the same model; values that compare equal in Python but are
    different JSON (1, 1.0, true, "1", 1.50) give their own, each as fhir.resources makes it."""
    cls = get_fhir_model_class("Observation")
    base = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]}}  # fmt: skip
    values = [1, Decimal("1"), Decimal("1.0"), Decimal("1.50"), Decimal("1.5"), True, "1", 1.0]
    first: dict[str, Any] = {}
    for round_ in range(2):
        for value in values:
            resource = {**base, "valueQuantity": {"value": value, "unit": "mg"}}
            fast = fhir_fast.construct(cls, copy.deepcopy(resource))
            reference = full(cls, resource)
            if fast is None:
                continue  # left to fhir.resources (here: what it refuses)
            assert same_model(fast, reference), value
            quantity = fast.valueQuantity
            key = f"{type(value).__name__}:{value!r}"
            if round_ == 0:
                first[key] = quantity
            else:
                assert quantity is first[key], value  # kept, and found again
    assert len({id(q) for q in first.values()}) == len(first) >= 4
    fhir_fast.forget()
    resource = {**base, "valueQuantity": {"value": 1, "unit": "mg"}}
    again = fhir_fast.construct(cls, resource).valueQuantity  # type: ignore[union-attr]
    assert again is not first[f"int:{1!r}"] and again == first[f"int:{1!r}"]


def test_long_text_is_not_kept_nor_what_holds_it() -> None:
    """A note's attachment (or any long string) is built each time, as is every element
    holding it; short ones beside it are still kept."""
    cls = get_fhir_model_class("DocumentReference")
    data = base64.b64encode(b"x" * 4 * fhir_fast._KEEP_LEN).decode()

    def document(text: str) -> dict[str, Any]:
        return {
            "resourceType": "DocumentReference", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
            "content": [{"attachment": {"contentType": "text/plain", "data": text}}],
        }  # fmt: skip

    built = [fhir_fast.construct(cls, document(data)) for _ in range(2)]
    for model in built:
        assert model is not None and same_model(model, full(cls, document(data)))
    first, second = built
    assert first.type is second.type  # type: ignore[union-attr]
    assert first.content[0] is not second.content[0]  # type: ignore[union-attr]
    assert first.content[0].attachment is not second.content[0].attachment  # type: ignore[union-attr]
    short = [fhir_fast.construct(cls, document("eA==")) for _ in range(2)]
    assert short[0].content[0] is short[1].content[0]  # type: ignore[union-attr]
    for model in (first, second):  # neither held after the build
        content = model.content[0]  # type: ignore[union-attr]
        assert id(content) not in fhir_fast._KEPT and id(content.attachment) not in fhir_fast._KEPT


@pytest.fixture
def small_memos(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(fhir_fast, "_MEMO_MAX", 3)
    fhir_fast.forget()
    yield from new_builders()
    fhir_fast.forget()


@pytest.mark.usefixtures("small_memos")
def test_a_full_memo_is_emptied_with_what_it_kept() -> None:
    """Past _MEMO_MAX a combination's kept elements are dropped, and no longer count as kept
    (an element holding one is then built, not found); every build stays fhir.resources'."""
    cls = get_fhir_model_class("Observation")
    codes = [f"{n}-8" for n in range(1, 9)]

    def obs(code: str) -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final", "id": f"o{code}",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}  # fmt: skip

    models = []
    for code in codes * 2:
        model = fhir_fast.construct(cls, obs(code))
        assert model is not None and same_model(model, full(cls, obs(code)))
        models.append(model)
    in_memos = {id(m) for memo in fhir_fast._MEMOS for m in memo.values()}
    assert in_memos == fhir_fast._KEPT  # nothing dropped still counts as kept
    assert 0 < len(in_memos) <= 6  # at most three of each combination (Coding, concept)
    assert models[0].code is not models[len(codes)].code  # type: ignore[union-attr]


def test_a_practice_resource_is_kept_whole_by_its_exact_content() -> None:
    """An Organization or Location met again (its id, its JSON, in any key order) is the
    model built before; JSON that equals it in Python but is different JSON (true and 1,
    45.5 and 45.50), or changed content under the same id, is built anew, as
    fhir.resources makes it; what is kept does not change when its input does."""
    fhir_fast.forget()
    cls = get_fhir_model_class("Organization")
    org = {"resourceType": "Organization", "id": "org-1", "active": True, "name": "Cascade",
           "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1375920489"}],
           "address": [{"line": ["2222 NW Lovejoy St"], "city": "Portland", "state": "OR",
                        "postalCode": "97210"}]}  # fmt: skip
    first, second = (fhir_fast.construct(cls, copy.deepcopy(org)) for _ in range(2))
    assert first is not None and second is not None and same_model(second, full(cls, org))
    reordered = dict(reversed(list(copy.deepcopy(org).items())))
    assert fhir_fast.construct(cls, reordered) is second  # kept from its second meeting
    renamed = copy.deepcopy(org)
    again = fhir_fast.construct(cls, renamed)
    renamed["name"] = "Other"  # the caller's JSON changed after the build
    other = fhir_fast.construct(cls, renamed)
    assert again is second and other is not second
    assert other is not None and other.name == "Other" and second.name == "Cascade"
    assert fhir_fast.construct(cls, copy.deepcopy(renamed)) is other  # the id's latest
    for value in (1, Decimal("1"), "true", False, True):
        changed = {**copy.deepcopy(org), "active": value}
        fast = fhir_fast.construct(cls, changed)
        assert fast is not second and fast is not other, value
        if fast is not None:
            assert same_model(fast, full(cls, changed)) and type(fast.active) is bool, value

    cls = get_fhir_model_class("Location")
    kept: dict[str, Any] = {}
    for text in ("45.50", "45.5", "45.50", "45.5", "45.50"):
        position = {"latitude": Decimal(text), "longitude": Decimal("-122.7")}
        location = {"resourceType": "Location", "id": "loc-1", "position": position}
        fast = fhir_fast.construct(cls, location)
        assert fast is not None and same_model(fast, full(cls, location))
        assert str(fast.position.latitude) == text  # type: ignore[union-attr]
        kept.setdefault(text, fast)
    fhir_fast.forget()
    assert not fhir_fast._WHOLE


@pytest.mark.parametrize(("model", "element"), [("Period", "start"), ("Patient", "birthDate")])
def test_a_date_time_is_the_value_fhir_resources_gives_whatever_was_met_before(
    model: str, element: str
) -> None:
    """A date or dateTime made from one met before in the same zone (fhir_fast._date_time)
    is the value fhir_core's validation gives, and what it refuses is left to it: every
    month and day around the calendar's edges, leap years, the first and last years, times
    and zones accepted and refused."""
    from random import Random

    spec = fhir_fast._plan(get_fhir_model_class(model)).fields[element]  # type: ignore[union-attr]
    assert spec.days is not None
    years = ["0000", "0001", "0099", "1900", "2000", "2023", "2024", "2026", "9999"]
    edges = (0, 1, 28, 29, 30, 31, 32)
    days = [f"{y}-{m:02}-{d:02}" for y in years for m in range(14) for d in edges]
    days += ["2026-4-09", "2026-04-9", "20260409", "2026-04", "2026"]
    times = ["09:25:00", "00:00:00", "23:59:59", "24:00:00", "23:59:60", "12:60:00", "07:05"]
    times += ["10:30:00.5", "10:30:00.000"]
    zones = ["Z", "+00:00", "-00:00", "-08:00", "+05:30", "+14:00", "-14:00", "+14:30", "+15:00"]
    zones += [""]
    rnd = Random(3)
    values = [f"{d}T{rnd.choice(times)}{rnd.choice(zones)}" for d in days for _ in range(4)]
    values += days
    kept = 0
    fhir_fast.forget()
    for _ in range(3):
        rnd.shuffle(values)
        for value in values:
            plain = fhir_fast._PLAIN_DATE_TIME.fullmatch(value)
            kept += plain is not None and (plain[7] or fhir_fast._DATE_ONLY) in spec.days
            try:
                expected = spec.adapter.validate_python(value)  # type: ignore[union-attr]
            except (ValidationError, ValueError, TypeError):
                expected = "refused"
            try:
                got = fhir_fast._primitive(spec, value)
            except fhir_fast._Unsure:
                got = "refused"
            assert type(got) is type(expected) and got == expected, value
            if isinstance(got, datetime):
                assert got.utcoffset() == expected.utcoffset(), value
                assert got.isoformat() == expected.isoformat(), value
                assert repr(got) == repr(expected) and got.fold == expected.fold, value
        spec.seen.clear()  # the next round through the zones kept, not the values
    assert kept > 500
    fhir_fast.forget()


def test_fields_of_one_annotation_share_what_was_validated() -> None:
    """A value validated in one field is found again in every field of the same annotation
    (a visit's start is also the Condition's recordedDate), and gives there what
    fhir.resources gives: the fields share their validator and memos, fields of another
    annotation (a date and a dateTime, a code and a string) do not."""
    fhir_fast.forget()
    spec = fhir_fast._plan
    start = spec(get_fhir_model_class("Period")).fields["start"]  # type: ignore[union-attr]
    recorded = spec(get_fhir_model_class("Condition")).fields["recordedDate"]  # type: ignore[union-attr]
    birth = spec(get_fhir_model_class("Patient")).fields["birthDate"]  # type: ignore[union-attr]
    assert start.seen is recorded.seen and start.days is recorded.days
    assert start.adapter is recorded.adapter and start.seen is not birth.seen
    code = spec(get_fhir_model_class("Coding")).fields["code"]  # type: ignore[union-attr]
    text = spec(get_fhir_model_class("Coding")).fields["display"]  # type: ignore[union-attr]
    assert code.seen is not text.seen and code.seen is not start.seen
    period = {"start": "2025-12-06T10:00:00-08:00", "end": "2025-12-06"}
    made = fhir_fast.construct(get_fhir_model_class("Period"), period)
    assert "2025-12-06T10:00:00-08:00" in recorded.seen
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                 "recordedDate": "2025-12-06T10:00:00-08:00"}  # fmt: skip
    cls = get_fhir_model_class("Condition")
    fast = fhir_fast.construct(cls, condition)
    assert made is not None and fast is not None
    assert same_model(fast, full(cls, condition))
    validated: Any = cls.model_validate(condition)
    assert repr(getattr(fast, "recordedDate")) == repr(validated.recordedDate)  # noqa: B009
    fhir_fast.forget()


def test_providers_made_again_from_kept_resources_give_the_same_record_and_notes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The practice's Organization, Practitioner and Location, kept whole, make their
    providers and facility once (fhir._kept_provider); bundles that send them again, at the
    same place or another, with notes to make (a short NPI, an unusable address), give what
    fhir.resources' path gives."""
    from services.intake import fhir

    made: Counter[str] = Counter()
    makers = ("_make_practitioner", "_make_organization", "_make_profiled", "_location_facility")
    for name in makers:
        make = getattr(fhir, name)
        monkeypatch.setattr(
            fhir, name, lambda *args, make=make, name=name: (made.update([name]), make(*args))[1]
        )
    example = _load(EXAMPLE.read_text())
    noted = copy.deepcopy(example)
    org, clinician = noted["entry"][1]["resource"], noted["entry"][2]["resource"]
    clinician["identifier"][0]["value"] = "98765432"  # padded, with a note
    clinician["address"] = [{"line": ["1 Way"], "city": "Springfield", "state": "XX"}]
    org["address"][0]["postalCode"] = "6270"  # dropped, with a note
    location = noted["entry"][3]["resource"]
    location["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "4321"}]
    location["address"]["state"] = "Illinois-ish"  # dropped, with a note
    moved = copy.deepcopy(noted)  # the same resources at other places in the bundle
    moved["entry"] = moved["entry"][::-1]
    fhir_fast.forget()
    fhir._PROVIDERS.clear()
    bundles = [example, noted, noted, noted, moved, moved, moved, example, noted]
    outcomes = _judged(bundles, made)
    notes = outcomes[1][0][2]
    assert any("left-padded" in note for note in notes)
    assert any("address dropped: Bundle.entry[1]" in note for note in notes)
    assert any("facility address dropped: Bundle.entry[3]" in note for note in notes)
    assert any("'4321'" in note for note in notes)
    assert any("address dropped: Bundle.entry[7]" in note for note in outcomes[4][0][2])
    assert any("facility address dropped: Bundle.entry[6]" in n for n in outcomes[5][0][2])
    makes = [sum(counts.values()) for _, counts in outcomes]
    # Kept whole from the second bundle that sends them (made there), then found again; at
    # other places in the bundle, made once more; changed, made again.
    assert makes == [4, 4, 0, 0, 4, 0, 0, 4, 4]
    fhir_fast.forget()


def _judged(bundles: list[dict[str, Any]], made: Counter[str]) -> list[tuple[Any, Counter[str]]]:
    """Each bundle's outcome on the fast path, held equal to fhir.resources' path, with what
    ``made`` counted for it."""
    outcomes = []
    for bundle in bundles:
        with fhir_fast.fhir_resources_only():
            reference = outcome(bundle)
        before = made.copy()
        fast = outcome(bundle)
        assert fast == reference
        outcomes.append((fast, made - before))
    return outcomes


def test_payers_made_again_from_kept_resources_give_the_same_record_and_notes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A payer's Organization (kept whole), payor reference and Coverage.type (kept
    elements) make its payer fields once (fhir._kept_payer); bundles that send them again,
    with notes to make before and after the subscriber's (no payer id, no member id, an
    uncoded plan type), or a payer named as no insurance, give what fhir.resources' path
    gives, notes in the same order."""
    from services.intake import fhir

    made: Counter[str] = Counter()
    payer = fhir._payer
    monkeypatch.setattr(fhir, "_payer", lambda *args: (made.update(["payer"]), payer(*args))[1])
    example = _load(EXAMPLE.read_text())
    noted = copy.deepcopy(example)
    org, coverage = noted["entry"][4]["resource"], noted["entry"][5]["resource"]
    del org["identifier"]  # payer id from the name, with a note
    coverage["type"] = {"text": "Employer plan"}  # plan type from the name, with a note
    del coverage["subscriberId"]  # a member id note between the two
    unpaid = copy.deepcopy(example)
    unpaid["entry"][4]["resource"]["name"] = "No Insurance"
    fhir_fast.forget()
    fhir._PAYERS.clear()
    bundles = [example, example, example, noted, noted, noted, unpaid, unpaid, unpaid, noted]
    outcomes = _judged(bundles, made)
    notes = outcomes[4][0][2]
    order = [
        next(i for i, n in enumerate(notes) if text in n)
        for text in ("payer has no payer identifier", "subscriberId", "plan type not coded")
    ]
    assert order == sorted(order)
    assert any("payer named as no insurance" in note for note in outcomes[7][0][2])
    # Kept from the second bundle that sends the payer's id (its Organization kept whole
    # then), then found again; changed, made again (its Organization built anew).
    assert [counts["payer"] for _, counts in outcomes] == [1, 1, 0, 1, 0, 0, 1, 0, 0, 1]
    fhir_fast.forget()
