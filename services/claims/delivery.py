"""Deliver an interchange through its adapter, retrying with exponential backoff.

Delays grow by ``multiplier`` from ``initial_s`` up to ``max_s``, each with up to 10%
random jitter so that many services retrying together do not hit a payer in step. A
``PermanentDeliveryError`` ends the attempts at once. The outcome says whether it was
delivered and, if not, every reason, for the dead letter.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.claims.adapters import (
    DeliveryError,
    DeliveryMeta,
    PayerAdapter,
    PermanentDeliveryError,
    Receipt,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries, and how long to wait between them."""

    attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        return base * (1 + self.jitter * (rng or random).random())


@dataclass
class DeliveryOutcome:
    """What happened: the receipt when delivered, the errors of every failed try."""

    receipt: Receipt | None
    attempts: int
    errors: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        """Whether an attempt succeeded."""
        return self.receipt is not None

    def reason(self) -> str:
        """Why it was not delivered, for the dead letter."""
        last = self.errors[-1] if self.errors else "no attempt was made"
        return f"not delivered after {self.attempts} attempt(s): {last}"


def deliver_with_retries(
    adapter: PayerAdapter,
    interchange: bytes,
    meta: DeliveryMeta,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryOutcome:
    """Try ``policy.attempts`` times; wait with backoff between tries."""
    outcome = DeliveryOutcome(receipt=None, attempts=0)
    for attempt in range(1, policy.attempts + 1):
        outcome.attempts = attempt
        try:
            outcome.receipt = adapter.deliver(interchange, meta)
            return outcome
        except PermanentDeliveryError as exc:
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
            return outcome
        except DeliveryError as exc:
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a plugin's own failure is a failed try
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
        if attempt < policy.attempts:
            sleep(policy.delay(attempt))
    return outcome
