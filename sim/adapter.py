"""The payer simulator's route: it reads the interchange from claims.submitted.v1 itself.

Every claim event carries the interchange that delivered it, so for the simulator the
event is the delivery: nothing is sent here, and the simulator process answers each
interchange with a 999, a 277CA and an 835 on payer.inbound.v1. Claim events are marked
with the adapter that delivered them (header ``claimflow-adapter``), so the simulator
leaves alone claims routed to a real payer.
"""

from __future__ import annotations

from services.claims.adapters import AdapterContext, DeliveryMeta, Receipt


class SimulatorAdapter:
    """Hands the interchange to the payer simulator through claims.submitted.v1."""

    def __init__(self, context: AdapterContext) -> None:
        self.name = context.name

    def deliver(self, interchange: bytes, meta: DeliveryMeta) -> Receipt:
        """Nothing to send: the claim event published next is what the simulator reads."""
        return Receipt(self.name, "claims.submitted.v1", f"{len(meta.claim_ids)} claims")
