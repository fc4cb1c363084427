"""Coding builds its outputs without the frozen dataclass's ``__init__`` (``app._out``) and
asks the types of its inputs in another order (``CodingStage.handle``). The judge is the
stage as it was: ``Out(...)`` for every output, and ``handle`` with the old order of
isinstance checks, on both simulator mixes (each encounter, then its by-patient record, as
the live service reads them), must give equal outputs, field for field."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sim_corpus

from pipeline.models import (
    AuditResult,
    ClaimSettled,
    CodedEncounter,
    CoderDecision,
    Encounter,
    Model,
)
from pipeline.serde import registry
from pipeline.stage import PATIENT_KEY_HEADER, Incoming, Out
from services.coding import app
from services.coding.app import CodingStage, partitioned_risk
from services.coding.audit import AuditPolicy, AuditStore
from services.coding.review import BY_PATIENT, CODED, Output, ReviewStore

REG = registry()


def outs_before(outs: Iterable[Output], read: Incoming | None = None) -> list[Out]:
    """``app._outs`` as it was: ``Out(...)``."""
    return [
        Out(
            topic,
            key,
            value,
            {PATIENT_KEY_HEADER: app._patient_key(value)},
            raw=app._forwarded(value, read),
        )
        if topic == CODED
        else Out(topic, key, value)
        for topic, key, value in outs
    ]


def handle_before(self: CodingStage, msg: Incoming) -> Iterable[Out]:
    """``CodingStage.handle`` as it was: the rare inputs' types asked first."""
    if isinstance(msg.value, ClaimSettled):
        with self.audits.atomic():
            self.audits.settle(msg.value)
        self._prune()
        return []
    if isinstance(msg.value, CodedEncounter):
        assert self.risk is not None
        history = self.risk.get(msg.partition)
        return outs_before(self.flow.risk(msg.value, history, atomic=history.atomic), read=msg)
    if isinstance(msg.value, CoderDecision):
        with self._atomic():
            outs = self.flow.decision(msg.value)
    elif isinstance(msg.value, AuditResult):
        with self._atomic():
            outs = self.flow.audit_result(msg.value)
    else:
        assert isinstance(msg.value, Encounter)
        outs = self.flow.encounter(msg.value, now=sim_corpus.RECEIVED_AT, atomic=self._atomic)
    return outs_before(outs)


def _fields(out: Out) -> dict[str, Any]:
    return {f.name: getattr(out, f.name) for f in dataclasses.fields(Out)}


def _run(tmp: Path, mix: str) -> list[Any]:
    """Every output of the mix's encounters and of their by-patient records, as fields with
    each model as JSON, and dead letters as their messages."""
    st = CodingStage(
        sim_corpus.coder(),
        ReviewStore(tmp / "review.sqlite3"),
        AuditStore(tmp / "audit.sqlite3", AuditPolicy(share=0.2)),
        partitioned_risk(tmp),
    )
    for stores in st.partitioned_stores():
        stores.open(0)
    seen: list[Any] = []
    pending = [
        Incoming("encounters.collected.v1", e.encounter_id, e, b"", {}, 0, 0, 0)
        for e in sim_corpus.encounters(mix)
    ]
    while pending:
        msg = pending.pop(0)
        try:
            outs = list(st.handle(msg))
        except Exception as exc:  # noqa: BLE001 - a dead letter: compared by its message
            seen.append(repr(exc))
            continue
        for out in outs:
            fields = _fields(out)
            assert isinstance(out.value, Model)
            fields["value"] = out.value.model_dump_json()
            seen.append(fields)
            if out.topic == BY_PATIENT:
                raw = REG.encode(BY_PATIENT, out.value)
                read = REG.decode(BY_PATIENT, raw)
                pending.insert(0, Incoming(BY_PATIENT, out.key, read, raw, {}, 0, 0, 0))
    st.store.close()
    st.audits.close()
    for stores in st.partitioned_stores():
        stores.close_all()
    return seen


def test_out_is_the_dataclass() -> None:
    value = sim_corpus.coded("office")[0]
    for headers, raw in (({}, None), ({PATIENT_KEY_HEADER: b"k"}, b"\x00")):
        made = app._out(CODED, "key", value, headers, raw)
        judged = Out(CODED, "key", value, headers, raw=raw)
        assert made == judged and vars(made) == vars(judged)
        assert type(made) is Out
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.key = "other"  # type: ignore[misc]


@pytest.mark.parametrize("mix", sim_corpus.MIXES)
def test_outputs_are_the_stages_as_it_was(
    mix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "utcnow", lambda: sim_corpus.RECEIVED_AT)
    now = _run(tmp_path / "now", mix)
    monkeypatch.setattr(CodingStage, "handle", handle_before)
    before = _run(tmp_path / "before", mix)
    assert now == before
    topics = {o["topic"] for o in now if isinstance(o, dict)}
    assert {BY_PATIENT, CODED, "coding.audits.v1"} <= topics
    assert any(isinstance(o, dict) and o["raw"] is not None for o in now)  # forwarded bytes
    # Each output's headers are its own dict, as the dataclass's default gives.
    made = [o for o in now if isinstance(o, dict)]
    assert len({id(o["headers"]) for o in made}) == len(made)
