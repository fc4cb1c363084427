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

Claims are looked up among the payment's own CLPs, then among the claims the same payer
paid in earlier files (CLP01 or CLP07): the payer's partition of the ledger keeps those
references, so this works with the claims spread over many instances.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.models import PayerPaymentRecord
from services.remittance.ledger import PlbApplied

FORWARD_BALANCE = "FB"


def reference_candidates(reference: str | None) -> list[str]:
    """The ids a PLB03-2 reference may name: all of it, then its first word."""
    if not reference:
        return []
    ref = reference.strip()
    first = ref.split()[0] if ref.split() else ref
    return list(dict.fromkeys(c for c in (ref, first) if c))


def apply_plb(
    payment: PayerPaymentRecord, find_claim: Callable[[str], str | None]
) -> list[PlbApplied]:
    """Decide, for each PLB adjustment of a payment, what it applies to (a claim's id is
    set on the adjustment).

    ``find_claim`` maps a payer claim control number or a patient control number to a
    claim id the payer paid before (the payer's ledger); the payment's own CLPs are looked
    at first, so a recovery of a claim reversed in the same file finds it.
    """
    in_file: dict[str, str] = {}
    for claim in payment.claims:
        in_file.setdefault(claim.claim_id, claim.claim_id)
        if claim.payer_claim_control_number:
            in_file.setdefault(claim.payer_claim_control_number, claim.claim_id)
    out: list[PlbApplied] = []
    for plb in payment.provider_adjustments:
        if plb.reason == FORWARD_BALANCE:
            out.append(PlbApplied(plb, "forward_balance"))
            continue
        claim_id = None
        for candidate in reference_candidates(plb.reference):
            claim_id = in_file.get(candidate) or find_claim(candidate)
            if claim_id:
                break
        if claim_id:
            out.append(PlbApplied(plb.model_copy(update={"claim_id": claim_id}), "claim"))
        else:
            out.append(PlbApplied(plb, "provider"))
    return out
