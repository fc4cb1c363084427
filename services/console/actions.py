"""What the console's buttons publish, built and checked here with no Kafka import.

- A coder's confirm or amend: a ``CoderDecision`` for ``coding.decisions.v1``.
- A corrected encounter: the encounter as collected, with the fields the user changed, in
  the project's JSON encounter format for ``intake.raw.v1`` (intake reads it like any EHR
  message, so the correction is coded, scrubbed and billed the way every encounter is). It
  gets a new source id, so its event ids are new and nothing downstream drops it as a repeat.
- Every other closing action (appeal, write off, resubmit, resolve): a ``WorkAction`` for
  ``workqueue.actions.v1``, which the console's view reads back like any other record.
- A write-off also goes to remittance as a ``ClaimWrittenOff`` on ``console.writeoffs.v1``
  (keyed by claim id): the claim is settled from then on (``written_off``), so the stages'
  retention windows start without waiting for an 835 that may never come.

Every refusal is an ``InputError`` naming the field and the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import ValidationError

from pipeline.errors import InputError
from pipeline.models import (
    AuditDiagnosis,
    AuditResult,
    ClaimWrittenOff,
    CoderDecision,
    DecidedDiagnosis,
    Encounter,
    WorkAction,
    event_id,
    utcnow,
)

# Set by intake from the transport, never by the sender (the JSON encounter format).
RESERVED = ("event_id", "source_id", "source_format", "received_at")
_ICD10CM = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.?[0-9A-TV-Z]{1,4})?$")
_ICD10PCS = re.compile(r"^[0-9A-HJ-NP-Z]{7}$")
_POA = {"Y", "N", "U", "W", "1"}


def diagnosis_list(text: str) -> list[tuple[str, str | None]]:
    """``CODE[:POA]`` items (one per line or comma), principal first, each checked."""
    found: list[tuple[str, str | None]] = []
    for i, item in enumerate(t for t in re.split(r"[\s,;]+", text) if t):
        code, _, poa = item.partition(":")
        code, poa = code.strip().upper(), poa.strip().upper()
        if not _ICD10CM.match(code):
            raise InputError(f"diagnoses[{i}]", f"{code!r} is not an ICD-10-CM code")
        if poa and poa not in _POA:
            raise InputError(f"diagnoses[{i}].poa", f"{poa!r} is not one of Y, N, U, W, 1")
        found.append((code, poa or None))
    if not found:
        raise InputError("diagnoses", "name every diagnosis, principal first")
    return found


def audit_result(
    encounter_id: str, auditor: str, outcome: str, diagnoses: str = "", note: str | None = None
) -> AuditResult:
    """A coder's audit of automatic codes: agree, or every diagnosis as it should be."""
    if outcome not in ("agree", "corrected"):
        raise InputError("outcome", "must be agree or corrected")
    codes = diagnosis_list(diagnoses) if outcome == "corrected" else []
    audited_at = utcnow()
    return AuditResult(
        event_id=event_id(
            encounter_id, auditor, outcome, audited_at.isoformat(), *(c for c, _ in codes)
        ),
        encounter_id=encounter_id,
        auditor_id=auditor,
        outcome=outcome,  # type: ignore[arg-type]
        diagnoses=[AuditDiagnosis(code=c, poa=p) for c, p in codes],
        note=(note or "").strip() or None,
        audited_at=audited_at,
    )


def decision(
    encounter_id: str,
    coder: str,
    action: str,
    diagnoses: str = "",
    pcs: str = "",
    note: str | None = None,
) -> CoderDecision:
    """A coder's decision; ``diagnoses``: one ``CODE[:POA]`` per line or comma, principal first."""
    if action not in ("confirm", "amend"):
        raise InputError("action", "must be confirm or amend")
    decided: list[DecidedDiagnosis] = []
    procedures: list[str] = []
    if action == "amend":
        decided = [DecidedDiagnosis(code=c, poa=p) for c, p in diagnosis_list(diagnoses)]
        for i, code in enumerate(t.strip().upper() for t in re.split(r"[\s,;]+", pcs) if t):
            if not _ICD10PCS.match(code):
                raise InputError(f"pcs_procedures[{i}]", f"{code!r} is not an ICD-10-PCS code")
            procedures.append(code)
    decided_at = utcnow()
    content = [encounter_id, coder, action, decided_at.isoformat()]
    content += [f"{d.code}:{d.poa or ''}" for d in decided] + procedures
    return CoderDecision(
        event_id=event_id(*content),
        encounter_id=encounter_id,
        coder_id=coder,
        action=action,  # type: ignore[arg-type]
        diagnoses=decided,
        pcs_procedures=procedures,
        note=(note or "").strip() or None,
        decided_at=decided_at,
    )


def work_action(
    queue: Literal["review", "corrections", "denials", "exceptions"],
    item_id: str,
    action: Literal["appeal", "write_off", "resubmit", "resolve"],
    user: str,
    role: str,
    *,
    encounter_id: str | None = None,
    claim_id: str | None = None,
    amount: str | Decimal | None = None,
    note: str | None = None,
) -> WorkAction:
    money: Decimal | None = None
    if amount not in (None, ""):
        try:
            money = Decimal(str(amount).replace(",", "").lstrip("$"))
        except InvalidOperation:
            raise InputError("amount", f"{amount!r} is not an amount") from None
        if not money.is_finite() or money < 0 or money > Decimal("9999999999.99"):
            raise InputError("amount", "must be between 0 and 9,999,999,999.99")
    acted_at = utcnow()
    return WorkAction(
        event_id=event_id(queue, item_id, action, user, acted_at.isoformat()),
        queue=queue,
        item_id=item_id,
        encounter_id=encounter_id,
        claim_id=claim_id,
        action=action,
        user_id=user,
        role=role,
        amount=money,
        note=(note or "").strip() or None,
        acted_at=acted_at,
    )


def written_off(action: WorkAction, payer_id: str) -> ClaimWrittenOff:
    """The write-off of a denied claim as remittance reads it (``console.writeoffs.v1``):
    the claim counts as settled from then on."""
    if action.action != "write_off" or not action.claim_id:
        raise InputError("action", "only a write-off of a claim settles it")
    return ClaimWrittenOff(
        event_id=event_id(action.event_id, "console.writeoffs.v1"),
        claim_id=action.claim_id,
        encounter_id=action.encounter_id,
        payer_id=payer_id,
        amount=action.amount,
        action_event_id=action.event_id,
        user_id=action.user_id,
        written_off_at=action.acted_at,
    )


# --- corrections -------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A decoded record as JSON-ready values (dates as ISO text, money as strings, bytes as
    their length: what a page shows of them)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def editable(collected: dict[str, Any]) -> dict[str, Any]:
    """The collected encounter as the JSON encounter format a sender would write."""
    return {k: v for k, v in plain(collected).items() if k not in RESERVED}


_STEP = re.compile(r"([A-Za-z_]+)(?:\[(\d+)\])?")


def encounter_path(edit_field: str | None) -> str | None:
    """Where in the encounter an edit's field (a path into the coded encounter) lives."""
    if not edit_field:
        return None
    if edit_field.startswith("encounter."):
        return edit_field.removeprefix("encounter.")
    line = re.fullmatch(r"lines\[(\d+)\]\.(charge|units|modifiers|code|service_date)", edit_field)
    if line:
        return f"services[{line.group(1)}].{line.group(2)}"
    if re.fullmatch(r"diagnoses\[\d+\]\.code", edit_field):
        return edit_field
    if edit_field in ("service_end", "service_start"):
        return edit_field
    return None


def get_path(data: Any, path: str) -> Any:
    """The value at a dotted path (``services[0].charge``); KeyError when it is not there."""
    node = data
    for part in path.split("."):
        m = _STEP.fullmatch(part)
        if not m:
            raise KeyError(path)
        node = node[m.group(1)] if isinstance(node, dict) else None
        if m.group(2) is not None:
            if not isinstance(node, list) or int(m.group(2)) >= len(node):
                raise KeyError(path)
            node = node[int(m.group(2))]
        if node is None and part != path.split(".")[-1]:
            raise KeyError(path)
    return node


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node: Any = data
    for part in parts[:-1]:
        m = _STEP.fullmatch(part)
        if not m:
            raise InputError(path, "not a field path")
        node = node.setdefault(m.group(1), {})
        if m.group(2) is not None:
            node = node[int(m.group(2))]
    m = _STEP.fullmatch(parts[-1])
    if not m:
        raise InputError(path, "not a field path")
    if m.group(2) is not None:
        node[m.group(1)][int(m.group(2))] = value
    else:
        node[m.group(1)] = value


def _typed(old: Any, text: str) -> Any:
    """The user's text as the kind of value the field held (list, number or text)."""
    text = text.strip()
    if isinstance(old, list):
        return [t for t in re.split(r"[\s,]+", text) if t]
    if text == "" and old is None:
        return None
    if isinstance(old, bool):
        return text.lower() in ("1", "true", "yes", "y")
    if isinstance(old, int | float) and not isinstance(old, bool):
        try:
            return float(text) if "." in text else int(text)
        except ValueError:
            return text  # the model names the field
    return text


def corrected_encounter(
    collected: dict[str, Any],
    changes: dict[str, str],
    whole: str | None = None,
    *,
    attempt: str,
) -> tuple[str, bytes]:
    """The corrected encounter (source id, JSON bytes) after the user's changes.

    ``changes`` maps encounter paths to the text typed in; ``whole``, when given, is the
    user's edit of the entire encounter as JSON and is applied first. ``attempt`` makes the
    source id unique to this correction (so intake and every stage after it see new events).
    """
    data = editable(collected)
    if whole and whole.strip():
        try:
            parsed = json.loads(whole)
        except ValueError as exc:
            raise InputError("encounter", f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InputError("encounter", "expected a JSON object")
        for name in RESERVED:
            parsed.pop(name, None)
        if parsed.get("encounter_id") != data.get("encounter_id"):
            raise InputError("encounter.encounter_id", "a correction keeps the encounter id")
        data = parsed
    for path, text in changes.items():
        try:
            old = get_path(data, path)
        except (KeyError, TypeError, IndexError):
            old = None
        set_path(data, path, _typed(old, text))
    encounter_id = str(data.get("encounter_id") or "")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    source_id = f"console:{encounter_id}:{attempt}:{digest}"
    try:
        Encounter.model_validate(
            {
                **data,
                "event_id": "check",
                "source_id": source_id,
                "source_format": "json",
                "received_at": utcnow(),
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise InputError(f"encounter{where}", str(first["msg"])) from None
    return source_id, json.dumps(data).encode()
