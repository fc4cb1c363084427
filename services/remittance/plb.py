"""Provider-level adjustments (PLB) applied where they belong: a claim, or the provider.

A PLB adjustment moves money between the payer and the payee outside any one CLP: a
positive amount takes money back (an overpayment recovery, WO; a forward balance being
collected, FB), a negative one adds it (interest, L6; a balance carried to the next file,
FB). 005010X221A1 puts the identifier of what the adjustment is about in PLB03-2:

- WO (overpayment recovery), L6 (interest owed), 72 (authorized return), and the other
  reasons that concern one claim: the payer's claim control number (CLP07) of that claim,
  sometimes the patient control number (CLP01), sometimes followed by more text. When
  the reference names a claim claimflow posted, the adjustment is applied to that claim:
  its net paid changes by the amount.
- FB (forward balance): the reference is the balance's own id. A negative FB carries a
  balance the provider owes into the next file; a positive FB in a later file collects it.
  The ledger keeps the open balance per payer and provider.
- Anything else (no reference, or one that names no claim) is held as a provider balance:
  recorded against the payment, counted, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from services.remittance.era import ProviderAdjustment, Remittance

FORWARD_BALANCE = "FB"
Target = Literal["claim", "forward_balance", "provider"]


@dataclass(frozen=True)
class PlbApplication:
    """Where one PLB adjustment went: a claim (with its id), the forward balance, or the
    provider's balance."""

    adjustment: ProviderAdjustment
    target: Target
    claim_id: str | None = None


def reference_candidates(reference: str | None) -> list[str]:
    """The ids a PLB03-2 reference may name: all of it, then its first word."""
    if not reference:
        return []
    ref = reference.strip()
    first = ref.split()[0] if ref.split() else ref
    return list(dict.fromkeys(c for c in (ref, first) if c))


def apply_plb(
    remittance: Remittance, find_claim: Callable[[str], str | None]
) -> list[PlbApplication]:
    """Decide, for each PLB adjustment of a payment, what it applies to.

    ``find_claim`` maps a payer claim control number or a patient control number to a
    claim id claimflow knows (the ledger's postings); the payment's own CLPs are looked at
    first, so a recovery of a claim reversed in the same file finds it.
    """
    in_file: dict[str, str] = {}
    for claim in remittance.claims:
        in_file.setdefault(claim.patient_control_number, claim.patient_control_number)
        if claim.payer_claim_control_number:
            in_file.setdefault(claim.payer_claim_control_number, claim.patient_control_number)
    out: list[PlbApplication] = []
    for plb in remittance.provider_adjustments:
        if plb.reason == FORWARD_BALANCE:
            out.append(PlbApplication(plb, "forward_balance"))
            continue
        claim_id = None
        for candidate in reference_candidates(plb.reference):
            claim_id = in_file.get(candidate) or find_claim(candidate)
            if claim_id:
                break
        out.append(PlbApplication(plb, "claim" if claim_id else "provider", claim_id))
    return out
