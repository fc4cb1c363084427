"""Payer adapters: how an 837 interchange reaches a payer (or the clearinghouse in front of it).

An adapter is anything with ``deliver(interchange: bytes, meta) -> Receipt``. It is built by
a factory taking an ``AdapterContext`` (its name, its options from settings, the state
folder) and registered under the entry-point group ``claimflow.payer_adapters``, so a
package can ship its own adapter without touching claimflow::

    [project.entry-points."claimflow.payer_adapters"]
    acme = "acme_edi.claimflow:AcmeAdapter"

Built in: ``filedrop`` (one file per interchange in a directory, the way an SFTP gateway
picks files up) and ``http`` (POST with an idempotency key). The ``simulator`` route (the
payer simulator process answers from claims.submitted.v1) is registered by the ``sim``
package through the same entry point, so claims never imports the simulator.

``deliver`` must be idempotent for a given interchange (same control number, same bytes):
the claims stage delivers at least once. Raise ``DeliveryError`` for a failure worth
retrying, ``PermanentDeliveryError`` for one that is not (a 4xx answer, a bad path).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "claimflow.payer_adapters"
DEFAULT_ROUTE = "*"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class DeliveryMeta:
    """What an adapter may want to know about the interchange it delivers."""

    payer_id: str
    control_number: int
    claim_type: str  # professional | institutional
    claim_ids: tuple[str, ...]
    sender_id: str
    receiver_id: str

    @property
    def transaction(self) -> str:
        """837P or 837I."""
        return "837P" if self.claim_type == "professional" else "837I"

    @property
    def file_name(self) -> str:
        """A name that is the same on every retry of this interchange, and only of this one."""
        payer = _UNSAFE.sub("_", self.payer_id)
        return f"{payer}.{self.transaction}.{self.control_number:09d}.x12"


@dataclass(frozen=True)
class Receipt:
    """Proof of delivery: which adapter took the interchange and where it went."""

    adapter: str
    reference: str
    detail: str = ""

    def describe(self) -> str:
        """One line for logs and the control-number store."""
        return f"{self.adapter}: {self.reference}" + (f" ({self.detail})" if self.detail else "")


class DeliveryError(Exception):
    """The delivery failed; trying again later may succeed."""


class PermanentDeliveryError(DeliveryError):
    """The delivery failed in a way retrying will not fix."""


class PayerAdapter(Protocol):
    """Delivers an 837 interchange to a payer; must be idempotent per interchange."""

    name: str

    def deliver(self, interchange: bytes, meta: DeliveryMeta) -> Receipt: ...


@dataclass(frozen=True)
class AdapterContext:
    """What a factory gets: the adapter's name in the routes, its options, the state folder."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path = Path(".claimflow/state")


AdapterFactory = Callable[[AdapterContext], PayerAdapter]


def _builtin() -> dict[str, AdapterFactory]:
    from services.claims.adapters.filedrop import FileDropAdapter
    from services.claims.adapters.http import HttpPostAdapter

    return {"filedrop": FileDropAdapter, "http": HttpPostAdapter}


def available() -> dict[str, AdapterFactory]:
    """Adapter kinds by name: the built-ins, then whatever entry points register."""
    kinds = _builtin()
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            kinds[entry.name] = entry.load()
        except Exception:  # noqa: BLE001 - a broken plugin must not hide the others
            log.exception("payer adapter plugin failed to load", extra={"adapter": entry.name})
    return kinds


class Router:
    """Picks the adapter for a payer: its own route, else the ``*`` route."""

    def __init__(self, routes: Mapping[str, str], adapters: Mapping[str, PayerAdapter]) -> None:
        self.routes = dict(routes)
        self.adapters = dict(adapters)

    def adapter_for(self, payer_id: str) -> PayerAdapter | None:
        """The adapter for ``payer_id``; None when no route covers it."""
        name = self.routes.get(payer_id, self.routes.get(DEFAULT_ROUTE))
        return self.adapters.get(name) if name else None


def build_router(
    routes: Mapping[str, str],
    options: Mapping[str, Mapping[str, Any]],
    state_dir: Path,
    kinds: Mapping[str, AdapterFactory] | None = None,
) -> Router:
    """Create every adapter the routes name, failing fast with a sentence a person can act on.

    A route names an adapter; ``options[name]`` configures it, and its ``kind`` (default:
    the name itself) says which adapter kind it is, so two HTTP payers can be routed to
    ``{"kind": "http", "url": ...}`` entries of different names.
    """
    kinds = dict(kinds) if kinds is not None else available()
    adapters: dict[str, PayerAdapter] = {}
    for name in dict.fromkeys(routes.values()):
        opts = dict(options.get(name, {}))
        kind = str(opts.pop("kind", name))
        factory = kinds.get(kind)
        if factory is None:
            raise SystemExit(
                f"payer route names adapter {name!r} of kind {kind!r}, which is not installed; "
                f"known kinds: {', '.join(sorted(kinds))} (entry-point group {ENTRY_POINT_GROUP})"
            )
        adapters[name] = factory(AdapterContext(name=name, options=opts, state_dir=state_dir))
    return Router(routes, adapters)
