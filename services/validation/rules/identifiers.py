"""Identifiers: NPI check digits and the billing provider's EIN."""

from __future__ import annotations

import re

from services.refdata import npi as npi_check
from services.validation.engine import NONE, Context, Hit, Hits, rule
from services.validation.rules._util import blank

_NPI_FIX = "Check the NPI against the NPPES registry; a wrong digit is the usual cause."


npi_is_valid = npi_check.is_valid


def _npi_hits(npi: str | None, field: str, who: str) -> Hits:
    if blank(npi):
        return NONE
    assert npi is not None
    if not npi_is_valid(npi):
        return (
            Hit(
                field,
                f"The {who} NPI {npi} is not a valid NPI: it must be 10 digits whose last "
                "digit is the Luhn check digit (with the 80840 prefix); it is probably "
                "mistyped.",
            ),
        )
    return NONE


@rule(
    "CF-NPI-001",
    "error",
    "A mistyped billing NPI is rejected by every payer.",
    category="identifiers",
    fix_hint=_NPI_FIX,
)
def billing_npi(ctx: Context) -> Hits:
    npi = ctx.coded.encounter.billing_provider.npi
    return _npi_hits(npi, "encounter.billing_provider.npi", "billing provider's")


@rule(
    "CF-NPI-002",
    "error",
    "A mistyped rendering NPI is rejected by every payer.",
    category="identifiers",
    fix_hint=_NPI_FIX,
)
def rendering_npi(ctx: Context) -> Hits:
    rendering = ctx.coded.encounter.rendering_provider
    if rendering is not None:
        return _npi_hits(rendering.npi, "encounter.rendering_provider.npi", "rendering")
    return NONE


@rule(
    "CF-NPI-003",
    "error",
    "A mistyped facility NPI is rejected by every payer.",
    category="identifiers",
    fix_hint=_NPI_FIX,
)
def facility_npi(ctx: Context) -> Hits:
    facility = ctx.coded.encounter.facility
    if facility is not None:
        return _npi_hits(facility.npi, "encounter.facility.npi", "service facility")
    return NONE


_EIN = re.compile(r"\d{9}")
_EIN_BAD_PREFIXES = frozenset(
    {"00", "07", "08", "09", "17", "18", "19", "28", "29", "49", "69", "70", "78", "79", "89"}
    | {"96", "97"}
)
"""Two-digit prefixes the IRS has never assigned to an EIN."""


@rule(
    "CF-EIN-001",
    "error",
    "The billing provider's tax id (EIN) is reported on every claim.",
    category="identifiers",
    fix_hint="Enter the 9-digit EIN from the practice's IRS letter, without the dash.",
)
def ein(ctx: Context) -> Hits:
    provider = ctx.coded.encounter.billing_provider
    field = "encounter.billing_provider.tax_id"
    tin = provider.tax_id
    if blank(tin):
        return (Hit(field, "The billing provider's tax id (EIN) is missing."),)
    assert tin is not None
    if not _EIN.fullmatch(tin):
        return (Hit(field, f"The tax id {tin!r} is not an EIN: it must be 9 digits, no dash."),)
    if provider.entity == "organization" and tin[:2] in _EIN_BAD_PREFIXES:
        return (
            Hit(
                field,
                f"The tax id {tin} starts with {tin[:2]}, a prefix the IRS does not assign to "
                "EINs.",
            ),
        )
    return NONE
