"""An encounter's whole story: every record about it, from intake to posting, made readable.

Each record is decoded with the schema registry (the newest version of its topic reads
every older one), summed up in a line, and shown in full below it, PHI masked for roles
that may not see it. Claims show their part of the 837 and remittances their part of the
835, segment by segment (``x12view``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.serde import Registry
from services.console import x12view
from services.console.actions import plain
from services.console.redact import MASK, redact
from services.console.view import StoryEvent

TITLES = {
    "encounters.collected.v1": "Collected by intake",
    "encounters.coded.v1": "Coded",
    "coding.review.v1": "Held for coder review",
    "coding.decisions.v1": "Coder decision",
    "coding.audits.v1": "Coding audit",
    "coding.audit-results.v1": "Coder's audit answer",
    "encounters.validated.v1": "Scrubbed",
    "claims.submitted.v1": "Claim sent (837)",
    "claims.rejections.v1": "Refused by the payer's front end",
    "payer.inbound.v1": "Remittance received (835)",
    "remittance.posted.v1": "Payment posted",
    "remittance.denials.v1": "Denial queued",
    "remittance.exceptions.v1": "Remittance exception",
    "workqueue.actions.v1": "Work-queue action",
}


@dataclass
class Chapter:
    seq: int
    topic: str
    title: str
    when: str
    summary: str
    detail: str
    segments: list[x12view.Segment] = field(default_factory=list)
    segments_note: str = ""


def _summary(topic: str, v: dict[str, Any], phi: bool) -> str:
    if topic == "encounters.collected.v1":
        cov = v.get("coverage") or {}
        who = ""
        if phi:
            p = v.get("patient") or {}
            who = f"{p.get('last_name')}, {p.get('first_name')} (born {p.get('birth_date')}); "
        return (
            f"{who}{v.get('setting')} {v.get('service_start')} to {v.get('service_end')}; "
            f"payer {cov.get('payer_name')}; {len(v.get('diagnoses') or [])} diagnoses, "
            f"{len(v.get('services') or [])} services; from {v.get('source_format')}"
        )
    if topic == "encounters.coded.v1":
        dx = " ".join(d.get("code", "") for d in v.get("diagnoses") or [])
        lines = " ".join(ln.get("code", "") for ln in v.get("lines") or [])
        drg = (v.get("drg") or {}).get("code")
        return f"ICD-10-CM {dx}; lines {lines}" + (f"; MS-DRG {drg}" if drg else "")
    if topic == "coding.review.v1":
        return "; ".join(v.get("reasons") or [])
    if topic == "coding.decisions.v1":
        dx = " ".join(d.get("code", "") for d in v.get("diagnoses") or [])
        return f"{v.get('action')} by {v.get('coder_id')}" + (f": {dx}" if dx else "")
    if topic == "coding.audits.v1":
        codes = " ".join(
            f"{c.get('code')}" + (f" ({c.get('outcome')})" if c.get("outcome") else "")
            for c in v.get("codes") or []
        )
        return f"{v.get('status')} ({v.get('reason')}): {codes}"
    if topic == "coding.audit-results.v1":
        dx = " ".join(d.get("code", "") for d in v.get("diagnoses") or [])
        return f"{v.get('outcome')} by {v.get('auditor_id')}" + (f": {dx}" if dx else "")
    if topic == "encounters.validated.v1":
        hits = [e for e in v.get("edits") or [] if e.get("severity") != "info"]
        rules = ", ".join(f"{e.get('rule_id')} ({e.get('severity')})" for e in hits)
        return f"{v.get('outcome')} with pack {v.get('rule_pack_version')}" + (
            f": {rules}" if rules else ""
        )
    if topic == "claims.submitted.v1":
        kind = {"1": "original", "7": "replacement", "8": "void"}.get(str(v.get("frequency")), "?")
        return (
            f"{v.get('claim_id')} {kind} {v.get('claim_type')} to {v.get('payer_name')}: "
            f"charge {v.get('total_charge')}, expected {v.get('expected_reimbursement')}; "
            f"ISA13 {v.get('interchange_control_number')}"
        )
    if topic == "claims.rejections.v1":
        return f"{v.get('source')} {', '.join(v.get('codes') or [])}: {v.get('reason')}"
    if topic == "payer.inbound.v1":
        return f"{v.get('kind')} file {v.get('file_id')} from {v.get('payer_id')}"
    if topic == "remittance.posted.v1":
        return (
            f"{v.get('status')}: paid {v.get('paid')} of {v.get('total_charge')}, patient owes "
            f"{v.get('patient_responsibility')}, variance {v.get('variance')}"
        )
    if topic == "remittance.denials.v1":
        codes = ", ".join(f"{r.get('group')}-{r.get('carc')}" for r in v.get("reasons") or [])
        return f"{v.get('kind')} ({v.get('category')}) {codes}; at stake {v.get('at_stake')}: " + (
            v.get("next_action") or ""
        )
    if topic == "remittance.exceptions.v1":
        return f"{v.get('kind')}: " + "; ".join((v.get("errors") or [])[:2])
    if topic == "workqueue.actions.v1":
        amount = f" {v.get('amount')}" if v.get("amount") is not None else ""
        return f"{v.get('action')}{amount} by {v.get('user_id')} ({v.get('role')})"
    if topic.startswith("dlq."):
        reason = v.get("error_message") if phi else MASK
        return f"dead letter at {v.get('stage')}: {v.get('field')}: {reason}"
    return ""


def _x12_of_claim(
    value: dict[str, Any],
    registry: Registry,
    interchange: Callable[[str], StoryEvent | None] | None,
) -> str | None:
    """A claim event's 837: its own (written before the claim check), else its interchange's
    from claims.interchanges.v1, by control number; None when the console has not read it."""
    if value.get("x12"):
        return str(value["x12"])
    icn = value.get("interchange_control_number")
    found = interchange(icn) if interchange is not None and icn else None
    if found is None:
        return None
    return str(registry.decode_dict(found.topic, found.data).get("x12") or "") or None


def chapters(
    events: list[StoryEvent],
    registry: Registry,
    claim_ids: set[str],
    phi: bool,
    interchange: Callable[[str], StoryEvent | None] | None = None,
) -> list[Chapter]:
    """The story's chapters; ``interchange`` finds an interchange's record by control number."""
    out = []
    for ev in events:
        try:
            value = registry.decode_dict(ev.topic, ev.data)
        except Exception as exc:  # noqa: BLE001 - one unreadable record does not hide the rest
            value = {"unreadable": str(exc)}
        when = datetime.fromtimestamp(ev.ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        shown = value if phi else redact(registry.latest(ev.topic).schema, value)
        chapter = Chapter(
            seq=ev.seq,
            topic=ev.topic,
            title=TITLES.get(ev.topic, "Dead letter" if ev.topic.startswith("dlq.") else ev.topic),
            when=when,
            summary=_summary(ev.topic, value, phi),
            detail=json.dumps(plain(shown), indent=1, ensure_ascii=False),
        )
        try:
            x12 = (
                _x12_of_claim(value, registry, interchange)
                if ev.topic == "claims.submitted.v1"
                else None
            )
            if x12:
                segs = x12view.claim_837(x12, value["claim_id"])
                chapter.segments = segs if phi else x12view.mask(segs)
                chapter.segments_note = "this claim's loops of the interchange"
            elif ev.topic == "claims.submitted.v1" and value.get("interchange_control_number"):
                # Claim events and their interchange arrive on two topics, in either order.
                chapter.segments_note = (
                    f"the 837 (interchange {value['interchange_control_number']}) is not "
                    "read yet: claims.interchanges.v1 has not come this far; reload"
                )
            elif ev.topic == "payer.inbound.v1" and value.get("kind") == "835":
                text = bytes(value.get("body") or b"").decode("latin-1")
                segs = x12view.claim_835(text, claim_ids)
                chapter.segments = segs if phi else x12view.mask(segs)
                chapter.segments_note = "the payment header and this encounter's claim loops"
        except ValueError as exc:
            chapter.segments_note = f"the X12 could not be read: {exc}"
        out.append(chapter)
    return out
