"""Errors the domain raises, and how the stage runner tells poison input from outages.

A domain module raises ``InputError`` (or a subclass) when the input itself is wrong: the
runner sends the original bytes to the stage's dead-letter topic with ``field`` and
``reason`` and goes on. Anything raised by the broker client is transient: the runner
retries and then stops the process so its supervisor restarts it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: names the offending field (a dotted path) and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DecodeError(InputError):
    """The bytes could not be decoded into the topic's contract."""


class TransientError(RuntimeError):
    """A dependency (broker, downstream) failed; retrying later may succeed."""


class StorageUnavailable(TransientError):
    """The state volume cannot be written (full, read-only, failing): not the input's fault,
    never a dead letter; the input waits until the volume takes writes again."""
