"""Intake's memo of what fhir.resources and hl7apy made of inputs already seen: the results
equal the libraries' own, element for element, cold and warm."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
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
    hl7v2._SKELETONS.clear()
    ctx = fhir._Ctx()
    whole = 0
    plain = hl7v2._parse_hl7apy

    def counted(keep: list[str], prefix: str) -> object:
        nonlocal whole
        whole += 1
        return plain(keep, prefix)

    for _, _, body in generate(40, seed=4, fmt="hl7v2", mix="all"):
        for lines in hl7v2._group_messages(hl7v2._split_segments(body.decode()), ctx):
            sep = lines[0][3]
            keep = [lines[0]] + [
                sep.join(f if i == 0 or i in hl7v2.READ[ln[:3]] else "" for i, f in
                         enumerate(ln.split(sep)))
                for ln in lines[1:] if ln[:3] in hl7v2.READ
            ]  # fmt: skip
            for _ in range(2):  # cold, then its fields and skeleton known
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(hl7v2, "_parse_hl7apy", counted)
                    before = whole
                    got = hl7v2._parse_memo(keep)
                    assert got is not None
                    warm = whole == before  # segments parsed without hl7apy's Message
                assert got == hl7v2._parse_hl7apy(keep, "")
            assert warm


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


_HEADERS = [
    "MSH|^~\\&|ehr-sim|LAKESHORE^1203984756^NPI|CLAIMFLOW|CLAIMFLOW|20260604113000-0600||"
    "DFT^P03^DFT_P03|c1|P|2.5.1",
    "MSH|^~\\&|ehr-sim~other|LAKE\\T\\SHORE^1203984756^NPI|CLAIMFLOW||20260604113000||"
    "DFT^P03|c2|P^T|2.5.1|||AL|NE|USA||en|||||x|y|z",  # repetitions, escapes, beyond 2.5.1
    "MSH|^~\\&|ehr-sim|LAKESHORE|||20260604|SEC|DFT^P03^DFT_P03|c3|P|2.3",
    "MSH|^~\\&|ehr-sim|LAKESHORE^1203984756^NPI|CLAIMFLOW|CLAIMFLOW|2026||DFT^P03^DFT_P03|c4|P|"
    "2.5.1^USA",
    "MSH|^~\\&|ehr-sim|LAKESHORE^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^x|CLAIMFLOW|CLAIMFLOW|202606||"
    "DFT^P03^DFT_P03|c5|P|2.5.1",
    "MSH|^~\\&|||||||ADT^A01|c6||2.5",
    "MSH|^~\\&|ehr-sim|LAKESHORE|CLAIMFLOW|CLAIMFLOW|20260604||ADT^A01^ADT_A01|c7|P|2.8.2",
    "MSH|^~\\&|ehr-sim|LAKESHORE|CLAIMFLOW|CLAIMFLOW|20260604||DFT^P03^DFT_P03|c8|P|2.5.1|"
    "|||||8859/1",
]


def test_hl7_memo_takes_the_header_fields_it_knows_and_equals_plain_parse() -> None:
    """The header's fields, blanked once known except those hl7apy reads the message by,
    give what hl7apy gives for the whole header; the known ones are not sent again."""
    hl7v2._FIELDS.clear()
    sent: list[list[str]] = []
    plain = hl7v2._parse_hl7apy

    def spy(keep: list[str], prefix: str) -> object:
        sent.append(list(keep))
        return plain(keep, prefix)

    segments = ["PID|1||MRN1^^^H^MR||DOE^JANE||19800101|F", "PV1|1|O|||||||||||||||||V1"]
    for header in _HEADERS:
        keep = [header, *segments]
        try:
            expected = plain(keep, "")
        except Exception as exc:  # noqa: BLE001 - the memo must refuse it the same way
            expected = type(exc)
        for _ in range(2):  # cold, then from the memo
            try:
                got = hl7v2._parse_memo(keep)
            except Exception as exc:  # noqa: BLE001
                got = type(exc)
            assert got is None or got == expected
    hl7v2._SKELETONS.clear()  # hl7apy's whole parse, to see what it is sent
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hl7v2, "_parse_hl7apy", spy)
        assert hl7v2._parse_memo([_HEADERS[0].replace("|c1|", "|c9|"), *segments]) is not None
    header = sent[-1][0].split("|")
    assert header[1] == "^~\\&"  # MSH-2: always sent
    assert header[2:6] == ["", "", "", ""]  # MSH-3 to MSH-6: known, not sent
    assert header[8] == "DFT^P03^DFT_P03" and header[11] == "2.5.1"  # always sent
    assert header[10] == ""  # MSH-11: known
    assert header[9] == "c9"  # MSH-10: its first time
