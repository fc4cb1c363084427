"""What intake keeps between bundles (an Address per kept FHIR Address element, a billing
provider completed from its profile) against making it afresh. The JSON decoder it keeps is
held to json.loads in tests/unit/test_intake_json_decoder.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.address import Address as FhirAddress

from pipeline.errors import InputError
from pipeline.models import Encounter
from services.intake import domain, fhir, fhir_fast, jsonfmt
from services.intake.domain import parse_raw
from sim.ehr import generate, provider_directory

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIRECTORY = provider_directory()


def _encounters(mix: str, n: int, fmt: str = "fhir") -> list[Any]:
    out = []
    for source_id, ctype, body in generate(n, seed=23, fmt=fmt, mix=mix):  # type: ignore[arg-type]
        out += parse_raw(
            body, ctype, source_id=source_id, received_at=AT, directory=DIRECTORY
        ).encounters
    return out


@pytest.mark.parametrize(("fmt", "mix"), [("fhir", "office"), ("fhir", "all"), ("json", "office")])
def test_kept_addresses_and_completed_providers_give_the_same_encounters(
    fmt: str, mix: str
) -> None:
    fhir._ADDRESSES.clear()
    fhir._COMPLETED.clear()
    fhir._SHARED.clear()
    jsonfmt._KEPT_PARTS.clear()
    kept = _encounters(mix, 80, fmt)
    assert any(type(v) is tuple for v in jsonfmt._KEPT_PARTS.values()) or fmt == "fhir"
    assert fhir._COMPLETED  # used (the JSON format's billing providers too)
    assert fhir._ADDRESSES or fmt == "json"
    assert fhir._SHARED or fmt == "json"

    def fresh_address(addr: Any, path: str) -> Any:
        return fhir._make_address(addr, path)

    def fresh_complete(directory: Any, sent: Any, keys: list[str]) -> Any:
        return directory.complete(sent, keys)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fhir, "_address", fresh_address)
        patch.setattr(fhir, "complete_provider", fresh_complete)
        patch.setattr(fhir, "_shared", lambda cls, **values: cls(**values))
        patch.setattr(jsonfmt, "_PARTS", ())
        fresh = _encounters(mix, 80, fmt)
    assert [e.model_dump_json() for e in kept] == [e.model_dump_json() for e in fresh]
    assert kept == fresh


def test_an_address_is_kept_only_for_a_kept_element_and_only_when_valid() -> None:
    fhir._ADDRESSES.clear()
    fhir_fast.forget()
    plan = fhir_fast._plan(FhirAddress)
    assert plan is not None
    good = {"line": ["1 Main St"], "city": "Austin", "state": "TX", "postalCode": "78701"}
    element = fhir_fast._one(plan, good, False)
    assert fhir_fast.kept(element)
    first = fhir._address(element, "x")
    assert fhir._address(element, "y") is first
    assert first == fhir._make_address(element, "z")
    bad = fhir_fast._one(plan, {**good, "state": "Texas-ish"}, False)
    for _ in range(2):
        with pytest.raises(InputError) as err:
            fhir._address(bad, "Patient.address[0]")
        assert (err.value.field, err.value.reason) == (
            "Patient.address[0].state",
            "not a US state code or name",
        )
    assert id(bad) not in fhir._ADDRESSES
    unkept = fhir_fast._build(plan, good, False)  # the walk keeps nothing
    assert not fhir_fast.kept(unkept)
    assert fhir._address(unkept, "x") == first
    assert id(unkept) not in fhir._ADDRESSES


@pytest.mark.parametrize("mix", ["office", "all"])
def test_an_encounter_the_chargemaster_prices_nothing_of_is_the_record_as_copied(mix: str) -> None:
    from services.claims.settings import ClaimsSettings
    from services.refdata.masterdata import load_master_data

    chargemaster = load_master_data(ClaimsSettings()).chargemaster
    kept = copied = 0
    for enc in _encounters(mix, 60):
        notes: list[str] = []
        got = domain._priced(enc, chargemaster, notes)
        copy = enc.model_copy(update={"services": list(got.services)})
        assert got == copy
        assert got.model_fields_set == copy.model_fields_set
        assert got.model_dump_json() == copy.model_dump_json()
        if got is enc:
            kept += 1
            assert not notes
        else:
            copied += 1
    assert kept


def test_a_small_model_is_shared_only_for_the_same_values() -> None:
    """The same values (an Address by identity) give the same model; values equal in
    Python but of another type (1 for True, a datetime for a date) or an equal Address
    that is another object give a model made afresh, and a refusal is pydantic's."""
    from pipeline.models import Address, DocumentedDiagnosis, Facility, Provider

    fhir._SHARED.clear()
    dx = {"code": "B34.9", "system": "icd10cm", "display": None, "onset": None}
    first = fhir._shared(DocumentedDiagnosis, **dx, primary=True)
    assert fhir._shared(DocumentedDiagnosis, **dx, primary=True) is first
    assert fhir._shared(DocumentedDiagnosis, **dx, primary=False) is not first
    one = fhir._shared(DocumentedDiagnosis, **dx, primary=1)
    assert one is not first and one == first  # pydantic's coercion, not the kept model
    day = datetime(2026, 3, 1)  # midnight: pydantic takes it as that date
    on = fhir._shared(DocumentedDiagnosis, **{**dx, "onset": day}, primary=True)
    assert on is not fhir._shared(DocumentedDiagnosis, **{**dx, "onset": day}, primary=True)
    address = Address(line1="1 Main St", city="Portland", state="OR", postal_code="97210")
    same = address.model_copy()
    provider = {"npi": "1234567890", "name": "Clinic", "entity": "organization"}
    kept = fhir._shared(Provider, **provider, address=address)
    assert fhir._shared(Provider, **provider, address=address) is kept
    other = fhir._shared(Provider, **provider, address=same)
    assert other is not kept and other == kept and other.address is same
    with pytest.raises(ValueError) as refused:
        fhir._shared(Facility, name="", npi=None)
    with pytest.raises(ValueError) as direct:
        Facility(name="", npi=None)
    assert str(refused.value) == str(direct.value)


def test_a_json_part_sent_exactly_as_kept_is_the_kept_model() -> None:
    """A provider sent again exactly as before is the model made of it before; a changed
    or bad one is validated afresh, with the error it gets without anything kept."""
    jsonfmt._KEPT_PARTS.clear()
    sent = json.loads(next(b for _, t, b in generate(1, seed=3, fmt="json") if "json" in t))
    encounters = [
        jsonfmt.parse_json_encounter(json.loads(json.dumps(sent)), source_id=f"m{n}",
                                     received_at=AT)
        for n in range(3)
    ]  # fmt: skip
    first, second, third = (e.billing_provider for e in encounters)
    assert second == first and third is second  # kept from its second meeting
    moved = json.loads(json.dumps(sent))
    moved["billing_provider"]["address"]["city"] = "Salem"
    other = jsonfmt.parse_json_encounter(moved, source_id="m4", received_at=AT)
    assert other.billing_provider is not second
    assert other.billing_provider.address.city == "Salem"  # type: ignore[union-attr]
    for bad in ({"tax_id": 931604827}, {"npi": "12345"}, {"unknown": True}, {"name": ""}):
        broken = json.loads(json.dumps(sent))
        broken["billing_provider"].update(bad)
        errors = []
        for parts in (jsonfmt._PARTS, ()):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(jsonfmt, "_PARTS", parts)
                with pytest.raises(InputError) as exc:
                    jsonfmt.parse_json_encounter(broken, source_id="m5", received_at=AT)
            errors.append((exc.value.field, exc.value.reason))
        assert errors[0] == errors[1], bad


def _json_messages(n: int, seed: int = 29) -> list[Any]:
    return [json.loads(b) for _, t, b in generate(n, seed=seed, fmt="json") if "json" in t]


def test_a_json_diagnosis_sent_exactly_as_kept_is_the_kept_model() -> None:
    """Diagnoses kept by their members give the records validating every diagnosis gives;
    one sent with another type of value (1 for true) or a bad one is validated afresh, with
    the error it gets without anything kept."""
    jsonfmt._KEPT_DX.clear()
    sent = _json_messages(60)
    kept = [
        jsonfmt.parse_json_encounter(json.loads(json.dumps(d)), source_id=f"m{i}", received_at=AT)
        for i, d in enumerate(sent)
    ]
    assert jsonfmt._KEPT_DX
    shared = {id(x) for e in kept for x in e.diagnoses}
    assert len(shared) < sum(len(e.diagnoses) for e in kept)  # some were the kept models
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonfmt, "_kept_diagnoses", lambda values: [])
        fresh = [
            jsonfmt.parse_json_encounter(d, source_id=f"m{i}", received_at=AT)
            for i, d in enumerate(sent)
        ]
    assert [e.model_dump_json() for e in kept] == [e.model_dump_json() for e in fresh]
    assert kept == fresh
    for k, f in zip(kept, fresh, strict=True):
        assert [x.model_fields_set for x in k.diagnoses] == [
            x.model_fields_set for x in f.diagnoses
        ]
    first = sent[0]["diagnoses"][0]
    for bad in ({"primary": 1}, {"system": "icd9"}, {"code": 5}, {"unknown": "x"}, {"code": None}):
        broken = json.loads(json.dumps(sent[0]))
        broken["diagnoses"][0] = {**first, **bad}
        results: list[object] = []
        for keep in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                if not keep:
                    patch.setattr(jsonfmt, "_kept_diagnoses", lambda values: [])
                try:
                    enc = jsonfmt.parse_json_encounter(broken, source_id="b", received_at=AT)
                except InputError as exc:
                    results.append((exc.field, exc.reason))
                else:
                    results.append(enc.model_dump_json())
        assert results[0] == results[1], bad


def test_a_json_billing_provider_completed_before_validation_is_the_copy_it_was() -> None:
    """parse_raw completes a kept billing provider before the encounter is validated: the
    same records, fields set and notes as validating, then completing and copying."""
    jsonfmt._KEPT_PARTS.clear()
    fhir._COMPLETED.clear()
    fhir._COMPLETED_BY_ID.clear()
    bodies = [(sid, t, b) for sid, t, b in generate(60, seed=31, fmt="json") if "json" in t]
    copies = []
    copy = Encounter.model_copy

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        copies.append(self)
        return copy(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Encounter, "model_copy", counted)
        got = [
            parse_raw(b, t, source_id=sid, received_at=AT, directory=DIRECTORY)
            for sid, t, b in bodies
        ]
    assert len(copies) < len(bodies) / 2  # most were completed before validation
    for (sid, _, b), result in zip(bodies, got, strict=True):
        enc = jsonfmt.parse_json_encounter(json.loads(b), source_id=sid, received_at=AT)
        billing = DIRECTORY.complete(enc.billing_provider, [])
        notes = []
        if billing is not enc.billing_provider:
            enc = enc.model_copy(update={"billing_provider": billing})
            notes.append("billing provider completed from its provider profile")
        (new,) = result.encounters
        assert new.model_dump_json() == enc.model_dump_json()
        assert new == enc
        assert new.model_fields_set == enc.model_fields_set
        assert new.billing_provider.model_fields_set == enc.billing_provider.model_fields_set
        assert list(result.notes) == notes
    assert notes  # the mix's providers have profiles
