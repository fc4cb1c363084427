"""What a payer's contract says a claim should be paid, from the hospital's published rates.

The chargemaster (the CMS price-transparency file) lists, per payer and plan, a negotiated
dollar amount, percentage or algorithm for each item, with its methodology. The payer
registry names which of those payer/plan columns is a payer's contract. A claim's expected
payment is then:

- inpatient with an MS-DRG the contract prices: its case rate (dollars), or its percentage
  of the claim's total charges;
- otherwise the sum of its lines: each line's item (by CPT/HCPCS, preferring its revenue
  code; a revenue-code-only line by revenue code) at the contract's fee schedule or per diem
  (dollars x units), case rate (dollars), or percentage of the line's charge, adjusted by the
  contract's modifier percentage when one is published for the line's modifiers.

No total when a line has no contracted rate or only an algorithm: a partial sum would look
like an underpayment. No contract, no expected payment (the caller decides whether Medicare
pricing applies instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from services.refdata.chargemaster import Chargemaster
from services.refdata.payers import Contract

_CENT = Decimal("0.01")


class Line(Protocol):
    code: str | None
    revenue_code: str | None
    modifiers: list[str]
    units: float
    charge: Decimal


def contract_expected(
    cdm: Chargemaster,
    contract: Contract,
    lines: Sequence[Line],
    *,
    setting: str,
    drg: str | None = None,
) -> tuple[Decimal | None, str]:
    """(expected payment, basis) under the contract; (None, why) when it cannot be priced."""
    name = f"{contract.payer_name}/{contract.plan_name or '*'}"
    total = sum((line.charge for line in lines), Decimal(0))
    if setting == "inpatient" and drg:
        item = cdm.for_drg(drg)
        rate = item.rate(contract.payer_name, contract.plan_name) if item else None
        if rate is not None:
            amount = rate.for_line(1, total)
            if amount is None:
                return None, f"contract {name}: MS-DRG {drg} paid by an algorithm"
            return amount.quantize(_CENT, ROUND_HALF_UP), f"contract {name}: MS-DRG {drg} " + (
                rate.methodology
            )
    expected = Decimal(0)
    for line in lines:
        item = cdm.for_service(line.code, line.revenue_code, setting)
        rate = item.rate(contract.payer_name, contract.plan_name) if item else None
        amount = rate.for_line(line.units, line.charge) if rate else None
        if amount is None:
            what = line.code or f"revenue code {line.revenue_code}"
            return None, f"contract {name}: no contracted dollar amount or percentage for {what}"
        factor = cdm.modifier_factor(line.modifiers, contract.payer_name, contract.plan_name)
        if factor is not None:
            amount = amount * factor / 100
        expected += amount
    return expected.quantize(_CENT, ROUND_HALF_UP), f"contract {name}: line rates"
