"""PHI is marked in the contracts: in the newest version of every schema, every field that
carries patient data has ``"phi": true`` (on itself or on the record that holds it), so
that whatever reads the schemas (the console's masking, a future de-identified export) can
tell what must not be shown or logged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.serde import registry

REG = registry()

# Fields that carry patient data wherever they appear, and why.
PHI_BY_NAME = {
    "last_name": "a person's name",
    "first_name": "a person's name",
    "birth_date": "a birth date",
    "patient_id": "the medical record number",
    "member_id": "the health plan member id",
    "note_text": "the clinical note",
    "note": "a person's free text about an encounter",
    "x12": "the claim as sent: names, birth date, member id, address",
    "body": "a message or file as received: patient data inside",
}


def _carries_phi(topic: str, path: tuple[str, ...]) -> str | None:
    """Why the field at ``path`` carries patient data, or None."""
    name, parent = path[-1], path[-2] if len(path) > 1 else ""
    if name in PHI_BY_NAME:
        return PHI_BY_NAME[name]
    if name == "address" and parent in {"patient", "subscriber"}:
        return "a patient's or subscriber's address"
    if name == "message" and parent == "edits":
        return "a scrubber message: it may quote a date of service or of birth"
    if name == "value" and topic.startswith("dlq."):
        return "the original record, as it was consumed"
    return None


def _fields(
    schema: Any, path: tuple[str, ...] = (), marked: bool = False
) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every field as (path, marked itself or under a marked field)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _fields(branch, path, marked)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            for field in schema["fields"]:
                here = (*path, field["name"])
                is_marked = marked or field.get("phi") is True
                yield here, is_marked
                yield from _fields(field["type"], here, is_marked)
        elif kind == "array":
            yield from _fields(schema["items"], path, marked)
        elif kind == "map":
            yield from _fields(schema["values"], path, marked)
        elif isinstance(kind, dict | list):
            yield from _fields(kind, path, marked)


@pytest.mark.parametrize("topic", sorted(REG.topics))
def test_every_field_carrying_patient_data_is_marked(topic: str) -> None:
    latest = REG.latest(topic)
    unmarked = [
        f"{'.'.join(path)} ({why})"
        for path, marked in _fields(latest.schema)
        if (why := _carries_phi(topic, path)) and not marked
    ]
    assert not unmarked, f"{topic} v{latest.version}: not marked phi: {unmarked}"


def test_the_topics_that_carry_patient_data_are_found() -> None:
    """The rule above has something to find: every topic known to carry patient data."""
    carrying = {
        topic
        for topic in REG.topics
        if any(_carries_phi(topic, path) for path, _ in _fields(REG.latest(topic).schema))
    }
    assert {
        "intake.raw.v1",
        "encounters.collected.v1",
        "encounters.coded.v1",
        "encounters.validated.v1",
        "coding.review.v1",
        "coding.decisions.v1",
        "claims.submitted.v1",
        "claims.interchanges.v1",
        "payer.inbound.v1",
        "remittance.exceptions.v1",
        "dlq.intake.v1",
        "dlq.claims.v1",
    } <= carrying


def test_phi_marks_are_booleans() -> None:
    def marks(schema: Any) -> Iterator[Any]:
        if isinstance(schema, dict):
            if "phi" in schema:
                yield schema["phi"]
            for value in schema.values():
                yield from marks(value)
        elif isinstance(schema, list):
            for item in schema:
                yield from marks(item)

    for topic in REG.topics:
        assert {m for m in marks(REG.latest(topic).schema)} <= {True}, topic


def test_a_version_that_only_adds_phi_marks_keeps_the_wire_format() -> None:
    """payer.inbound.v1 v2 only marks ``body``: same canonical form, same fingerprint, so
    records written before and after read alike, and no consumer needs the new file."""
    v1, v2 = REG.versions["payer.inbound.v1"][:2]
    assert v1.schema != v2.schema and v1.fingerprint == v2.fingerprint
    assert REG.by_fingerprint[v1.fingerprint].version == REG.latest("payer.inbound.v1").version
