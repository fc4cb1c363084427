"""Dates: the service period, the future, the stay, line dates and timely filing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from services.validation.engine import NONE, Context, Hit, Hits, rule


@rule(
    "CF-DATE-001",
    "error",
    "A service period cannot end before it starts.",
    category="dates",
    fix_hint="Correct the encounter's start or end date.",
)
def period(ctx: Context) -> Hits:
    enc = ctx.coded.encounter
    if enc.service_end < enc.service_start:
        return (
            Hit(
                "encounter.service_end",
                f"The service ends on {enc.service_end} before it starts on {enc.service_start}.",
            ),
        )
    return NONE


@rule(
    "CF-DATE-002",
    "error",
    "Services cannot be billed before they happen.",
    category="dates",
    fix_hint="Correct the date of service, or hold the claim until the service is done.",
)
def future(ctx: Context) -> Hits:
    enc = ctx.coded.encounter
    today = ctx.validated_at.date()
    if enc.service_start <= today and enc.service_end <= today:
        return NONE  # nearly every encounter
    return [
        Hit(
            f"encounter.{name}",
            f"The {name.replace('_', ' ')} {value} is in the future (validated {today}).",
        )
        for name, value in (("service_start", enc.service_start), ("service_end", enc.service_end))
        if value > today
    ]


@rule(
    "CF-DATE-003",
    "error",
    "Each line's date must fall inside the encounter's period.",
    category="dates",
    fix_hint="Correct the line's date of service, or the encounter's period.",
)
def line_dates(ctx: Context) -> Hits:
    enc = ctx.coded.encounter
    start, end = enc.service_start, enc.service_end
    return [
        Hit(
            f"lines[{i}].service_date",
            f"Line {line.line_number} is dated {line.service_date}, outside the encounter's "
            f"{start} to {end}.",
            line.line_number,
        )
        for i, line in enumerate(ctx.coded.lines)
        if not start <= line.service_date <= end
    ]


@rule(
    "CF-DATE-004",
    "error",
    "A patient cannot be treated before being born.",
    category="dates",
    fix_hint="Correct the date of birth in the registration, or the date of service.",
)
def born_before_service(ctx: Context) -> Hits:
    enc = ctx.coded.encounter
    dob = enc.patient.birth_date
    if dob is not None and dob > enc.service_start:
        return (
            Hit(
                "encounter.patient.birth_date",
                f"The date of birth {dob} is after the service start {enc.service_start}.",
            ),
        )
    return NONE


@rule(
    "CF-DATE-005",
    "error",
    "Procedures fall within the stay, and an inpatient stay starts with its admission: the "
    "admission date is required and cannot be after the billed period starts.",
    category="dates",
    fix_hint="Correct the admission date or the procedure date from the medical record.",
)
def within_stay(ctx: Context) -> Hits:
    if ctx.coded.encounter.setting != "inpatient" and not ctx.coded.pcs_procedures:
        return NONE  # no stay and no procedure: every office visit
    return list(_stay_hits(ctx))


def _stay_hits(ctx: Context) -> Iterator[Hit]:
    enc = ctx.coded.encounter
    if enc.setting == "inpatient":
        if enc.admission_date is None:
            yield Hit(
                "encounter.admission_date",
                "The inpatient encounter has no admission date; an institutional claim "
                "requires it.",
            )
        elif enc.admission_date > enc.service_start:
            yield Hit(
                "encounter.admission_date",
                f"The admission date {enc.admission_date} is after the billed period starts "
                f"({enc.service_start}); a stay cannot be billed before the admission.",
            )
    start = min(enc.admission_date or enc.service_start, enc.service_start)
    for i, proc in enumerate(ctx.coded.pcs_procedures):
        if proc.date is not None and not start <= proc.date <= enc.service_end:
            yield Hit(
                f"pcs_procedures[{i}].date",
                f"Procedure {proc.code} is dated {proc.date}, outside the stay ({start} to "
                f"{enc.service_end}).",
            )


@rule(
    "CF-DATE-006",
    "error",
    "Payers refuse claims filed after their timely-filing limit (the payer registry sets "
    "the days per payer, else the rule pack; 365 for Medicare).",
    category="dates",
    fix_hint="File with proof of timely filing (an earlier acceptance report), or write the "
    "balance off as a timely-filing adjustment.",
)
def timely_filing(ctx: Context) -> Hits:
    enc = ctx.coded.encounter
    days = (
        ctx.payer.timely_filing_days
        if ctx.payer is not None
        else ctx.pack.filing_limit_days(enc.coverage.payer_id)
    )
    deadline = enc.service_end + timedelta(days=days)
    today = ctx.validated_at.date()
    if today > deadline:
        return (
            Hit(
                "encounter.service_end",
                f"The last date of service {enc.service_end} is "
                f"{(today - enc.service_end).days} days before {today}; payer "
                f"{enc.coverage.payer_id} accepts claims for {days} days (until {deadline}).",
            ),
        )
    return NONE
