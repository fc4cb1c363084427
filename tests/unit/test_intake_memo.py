"""Intake's memo of what fhir.resources and hl7apy made of inputs already seen: the results
equal the libraries' own, element for element, cold and warm."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from fhir.resources.R4B import get_fhir_model_class

from services.intake import fhir, fhir_fast, hl7v2
from services.intake.domain import parse_raw
from services.intake.fhir import SUPPORTED
from sim.ehr import generate, provider_directory

AT = datetime(2025, 7, 1, tzinfo=UTC)


def test_fhir_memo_equals_plain_validation() -> None:
    fhir._VALIDATED.clear()
    for _, _, body in generate(60, seed=3, fmt="fhir", mix="all"):
        for entry in json.loads(body, parse_float=Decimal)["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] not in SUPPORTED:
                continue
            cls = get_fhir_model_class(resource["resourceType"])
            for _ in range(2):  # cold, then from the memo
                got = fhir._validated(cls, resource)
                assert got == cls.model_validate(resource)
                assert got.model_dump() == cls.model_validate(resource).model_dump()


def test_hl7_memo_equals_plain_parse() -> None:
    hl7v2._FIELDS.clear()
    ctx = fhir._Ctx()
    for _, _, body in generate(40, seed=4, fmt="hl7v2", mix="all"):
        for lines in hl7v2._group_messages(hl7v2._split_segments(body.decode()), ctx):
            sep = lines[0][3]
            keep = [lines[0]] + [
                sep.join(f if i == 0 or i in hl7v2.READ[ln[:3]] else "" for i, f in
                         enumerate(ln.split(sep)))
                for ln in lines[1:] if ln[:3] in hl7v2.READ
            ]  # fmt: skip
            for _ in range(2):
                assert hl7v2._parse_memo(keep) == hl7v2._parse_hl7apy(keep, "")


def test_encounters_equal_cold_and_warm() -> None:
    directory = provider_directory()
    for fmt in ("fhir", "hl7v2"):
        messages = list(generate(30, seed=6, fmt=fmt, mix="all"))
        runs = []
        for _ in range(2):
            fhir._VALIDATED.clear()
            fhir_fast.forget()
            hl7v2._FIELDS.clear()
            runs.append([
                [e.model_dump() for e in parse_raw(
                    body, ctype, source_id=sid, received_at=AT, directory=directory
                ).encounters]
                for sid, ctype, body in messages
            ])  # fmt: skip
            warm = [
                [e.model_dump() for e in parse_raw(
                    body, ctype, source_id=sid, received_at=AT, directory=directory
                ).encounters]
                for sid, ctype, body in messages
            ]  # fmt: skip
            assert warm == runs[-1]
        assert runs[0] == runs[1]
