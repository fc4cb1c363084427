"""``claimflow intake parse``: intake's domain on files, without Kafka."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from pipeline import offline


def cmd_intake_parse(args: argparse.Namespace) -> int:
    from pipeline.errors import InputError
    from services.intake.account import AccountBook, AccountStore, hl7_parser, split_held
    from services.intake.domain import parse_raw
    from services.intake.settings import IntakeSettings
    from services.refdata.masterdata import load_master_data

    settings = IntakeSettings()
    if args.provider_directory:
        settings = settings.model_copy(update={"provider_directory": Path(args.provider_directory)})
    master = load_master_data(settings)
    # The messages of one hospital visit, in one file or several, make one account, billed
    # once every input has been read.
    store = AccountStore(":memory:")
    book = AccountBook(
        store, hl7_parser(master.providers, master.chargemaster), bill_hold_s=math.inf
    )

    def handle(name: str, data: bytes) -> list[str]:
        held, rest = split_held(book, data, args.content_type)
        encounters = []
        if held:
            with store.atomic():
                encounters += book.receive(held, offline.now(), Path(name).name)
        if rest is not None:
            result = parse_raw(
                rest,
                args.content_type,
                source_id=Path(name).name,
                received_at=offline.now(),
                directory=master.providers,
                chargemaster=master.chargemaster,
            )
            encounters += result.encounters
        return [e.model_dump_json() for e in encounters]

    def finish() -> list[str]:
        with store.atomic():
            billed = book.due(offline.now(), hold_s=0)
        if store.open_visits():
            raise InputError(
                "PV1-45",
                f"{len(store.open_visits())} hospital account(s) not final: no discharge "
                "(ADT^A03 or PV1-45) among the inputs, so their charges were not billed",
            )
        return [e.model_dump_json() for e in billed]

    return offline.run(args.files, handle, "intake parse", finish=finish)


def register(sub: Any) -> None:
    """Add intake's commands to the ``claimflow`` parser."""
    group = sub.add_parser("intake", help="offline intake").add_subparsers(
        dest="sub", required=True
    )
    r = group.add_parser(
        "parse", help="FHIR bundle / HL7 v2 / JSON encounter files -> encounters (JSON lines)"
    )
    r.add_argument("files", nargs="*", help="FHIR, HL7 v2 or JSON files (default, or -: stdin)")
    r.add_argument(
        "--content-type", default=None, help="how to read the input (default: sniffed from it)"
    )
    r.add_argument(
        "--provider-directory",
        default=None,
        help="completes HL7 v2 (billing EIN, address); default $CLAIMFLOW_PROVIDER_DIRECTORY",
    )
    r.set_defaults(func=cmd_intake_parse)
