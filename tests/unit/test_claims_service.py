"""The claims stage without a broker: batching per payer, durable control numbers, delivery
through payer adapters with retries and dead letters, and 999/277CA rejections."""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_claims_837 import COVERAGE, coded_encounter, validated
from test_claims_837i import inpatient, outpatient, rev_line

from pipeline.models import Coverage, DeadLetter, PayerFile, SubmittedClaim, event_id
from pipeline.serde import registry
from pipeline.settings import Settings
from pipeline.stage import Incoming, Out
from services.claims.adapters import (
    AdapterContext,
    DeliveryError,
    DeliveryMeta,
    PermanentDeliveryError,
    Receipt,
    Router,
    available,
    build_router,
)
from services.claims.adapters.filedrop import FileDropAdapter
from services.claims.adapters.http import HttpPostAdapter
from services.claims.app import ADAPTER_HEADER, ClaimsStage
from services.claims.control import ClaimRef, ControlNumbers, ControlNumbersExhausted, owner
from services.claims.delivery import RetryPolicy, deliver_with_retries
from services.claims.settings import ClaimsOptions, ClaimsSettings
from services.x12.validate import validate_x12

REG = registry()
INTERCHANGES = "claims.interchanges.v1"
AETNA = Coverage(
    payer_id="60054", payer_name="Aetna", plan_type="CI", member_id="W987654321", group_number="G1"
)


# --- helpers ---------------------------------------------------------------------------------


class Recorder:
    """An adapter that records what it was given and fails the first ``failures`` times."""

    def __init__(self, name: str = "recorder", failures: int = 0, permanent: bool = False) -> None:
        self.name = name
        self.failures = failures
        self.permanent = permanent
        self.calls: list[DeliveryMeta] = []
        self.delivered: list[tuple[bytes, DeliveryMeta]] = []

    def deliver(self, interchange: bytes, meta: DeliveryMeta) -> Receipt:
        self.calls.append(meta)
        if self.failures:
            self.failures -= 1
            if self.permanent:
                raise PermanentDeliveryError("payer refused the file")
            raise DeliveryError("gateway timeout")
        self.delivered.append((interchange, meta))
        return Receipt(self.name, f"#{len(self.delivered)}")


def incoming(value: Any, offset: int, topic: str = "encounters.validated.v1") -> Incoming:
    raw = REG.encode(topic, value)
    key = getattr(value, "encounter_id", None) or getattr(value, "file_id", "")
    return Incoming(topic, key, value, raw, {}, 0, offset, 0)


def encounters(n: int, coverage: Coverage = COVERAGE, start: int = 0) -> list[Incoming]:
    return [
        incoming(validated(coded_encounter(f"ENC-{coverage.payer_id}-{i}", coverage=coverage)), i)
        for i in range(start, start + n)
    ]


def stage(
    tmp_path: Path, adapter: Recorder | None = None, **options: Any
) -> tuple[ClaimsStage, Recorder]:
    adapter = adapter or Recorder()
    settings = ClaimsSettings(
        state_dir=tmp_path,
        claims=ClaimsOptions(routes={"*": adapter.name}, **options),
    )
    router = Router(settings.claims.routes, {adapter.name: adapter})
    return ClaimsStage(settings, None, router, sleep=lambda _: None), adapter


def submitted(outs: list[Out]) -> list[SubmittedClaim]:
    """The claim events, each with the text of the interchange it names (a claim check:
    the events carry its control number, the interchange is published once beside them)."""
    texts = {
        o.value.interchange_control_number: o.value.x12 for o in outs if o.topic == INTERCHANGES
    }
    claims = [o.value for o in outs if o.topic == "claims.submitted.v1"]
    assert all(c.x12 is None for c in claims)
    return [c.model_copy(update={"x12": texts[c.interchange_control_number]}) for c in claims]


def dead(outs: list[Out]) -> list[DeadLetter]:
    return [o.value for o in outs if o.topic == "dlq.claims.v1"]


ACKS = "claims.acks-by-interchange.v1"


def numbers(count: int, partition: int = 0) -> list[int]:
    """The first control numbers a partition allocates (``control.owner``: from 10^8, the
    numbers whose owner is the partition)."""
    out, n = [], 100_000_000
    while len(out) < count:
        if owner(n, 3) == partition:
            out.append(n)
        n += 1
    return out


N = numbers(5)


def forwarded(claims_stage: ClaimsStage, outs: list[Out]) -> tuple[list[Out], list[Incoming]]:
    """The stage's output without the payer files it forwarded, and those files as the
    broker carries them: on the partition of the interchange each answers, bytes unchanged."""
    acks = [o for o in outs if o.topic == ACKS]
    assert all(o.raw is not None for o in acks)
    moved = [
        Incoming(ACKS, o.key, o.value, o.raw or b"", dict(o.headers),
                 owner(int(o.key), claims_stage.partitions), 900 + n, 0)
        for n, o in enumerate(acks)
    ]  # fmt: skip
    return [o for o in outs if o.topic != ACKS], moved


def answered(claims_stage: ClaimsStage, msgs: list[Incoming]) -> list[Out]:
    """A batch with payer files, then the files it forwarded to their interchanges' partitions."""
    outs, moved = forwarded(claims_stage, list(claims_stage.handle_batch(msgs)))
    return outs + (list(claims_stage.handle_batch(moved)) if moved else [])


# --- batching ----------------------------------------------------------------------------------


def test_a_batch_becomes_one_interchange_per_payer_bounded_by_size(tmp_path: Path) -> None:
    claims_stage, adapter = stage(tmp_path, max_claims_per_interchange=25)
    batch = encounters(30) + encounters(4, AETNA)
    outs = list(claims_stage.handle_batch(batch))
    claims = submitted(outs)
    assert len(claims) == 34 and not dead(outs)
    sizes = Counter((c.payer_id, c.interchange_control_number) for c in claims)
    assert sorted(sizes.values()) == [4, 5, 25]
    assert [m.control_number for m in adapter.calls] == N[:3]
    assert {m.payer_id for m in adapter.calls} == {COVERAGE.payer_id, AETNA.payer_id}
    # Each event carries the interchange that delivered it, and that interchange is valid.
    by_icn = {c.interchange_control_number: c.x12 for c in claims}
    assert {m.control_number for _, m in adapter.delivered} == {int(i) for i in by_icn}
    for x12 in by_icn.values():
        assert validate_x12(x12) == []
    for claim in claims:
        assert f"CLM*{claim.claim_id}*" in claim.x12
        assert f"*{int(claim.interchange_control_number)}*X*005010X222A1~" in claim.x12
    assert all(o.headers[ADAPTER_HEADER] == b"recorder" for o in outs if o.topic != INTERCHANGES)
    assert len({c.event_id for c in claims}) == 34
    # Each interchange once, before its claims, listing them.
    records = [o.value for o in outs if o.topic == INTERCHANGES]
    assert [r.interchange_control_number for r in records] == sorted(by_icn)
    for r in records:
        assert sorted(r.claim_ids) == sorted(
            c.claim_id
            for c in claims
            if c.interchange_control_number == r.interchange_control_number
        )
        assert r.adapter == "recorder" and r.x12 == by_icn[r.interchange_control_number]


def test_professional_and_institutional_claims_travel_in_separate_interchanges(
    tmp_path: Path,
) -> None:
    claims_stage, adapter = stage(tmp_path)
    hospital = inpatient("IP-1", encounter={"coverage": COVERAGE})
    outs = list(claims_stage.handle_batch([*encounters(2), incoming(validated(hospital), 9)]))
    claims = submitted(outs)
    assert {c.claim_type for c in claims} == {"professional", "institutional"}
    assert sorted(m.transaction for m in adapter.calls) == ["837I", "837P"]
    (ip,) = [c for c in claims if c.claim_type == "institutional"]
    assert "005010X223A2" in ip.x12 and validate_x12(ip.x12) == []


def test_a_claim_that_cannot_be_written_is_set_aside_and_the_rest_go(tmp_path: Path) -> None:
    claims_stage, adapter = stage(tmp_path)
    good = encounters(3)
    bad_coded = coded_encounter("ENC-BAD", coverage=COVERAGE)
    bad_coded = bad_coded.model_copy(
        update={"lines": [bad_coded.lines[0].model_copy(update={"code": "99*13"})]}
    )
    outs = list(claims_stage.handle_batch([*good, incoming(validated(bad_coded), 7)]))
    assert len(submitted(outs)) == 3
    (letter,) = dead(outs)
    assert letter.key == "ENC-BAD" and letter.field == "coded.lines[0].code"
    assert adapter.calls[0].control_number == N[0]  # the failed attempt used no number up
    assert len(adapter.calls[0].claim_ids) == 3


def test_a_rejected_encounter_is_not_billed(tmp_path: Path) -> None:
    claims_stage, adapter = stage(tmp_path)
    verdict = validated(coded_encounter("ENC-R"), outcome="rejected")
    assert list(claims_stage.handle_batch([incoming(verdict, 0)])) == []
    assert adapter.calls == []


# --- control numbers -----------------------------------------------------------------------------


def test_control_numbers_are_never_reused_across_a_restart(tmp_path: Path) -> None:
    first, adapter = stage(tmp_path, max_claims_per_interchange=2)
    before = submitted(list(first.handle_batch(encounters(6))))
    first.close()  # the service stops (or dies: every allocation is committed on its own)
    second, adapter2 = stage(tmp_path, max_claims_per_interchange=2)
    after = submitted(list(second.handle_batch(encounters(4, start=6))))
    numbers_before = {c.interchange_control_number for c in before}
    numbers_after = {c.interchange_control_number for c in after}
    assert numbers_before == {f"{n:09d}" for n in N[:3]}
    assert numbers_after == {f"{n:09d}" for n in N[3:5]}
    second.close()


def test_a_replayed_batch_reuses_its_interchange_and_is_not_sent_again(tmp_path: Path) -> None:
    first, adapter = stage(tmp_path)
    batch = encounters(5)
    original = submitted(list(first.handle_batch(batch)))
    first.close()
    # The process died after delivering, before committing its offsets: the batch comes back,
    # this time split differently and with a new encounter in it.
    second, adapter2 = stage(tmp_path)
    replay = submitted(list(second.handle_batch([*batch[3:], *encounters(2, start=5)])))
    replay += submitted(list(second.handle_batch(batch[:3])))
    again = {c.claim_id: c for c in replay}
    for claim in original:
        assert again[claim.claim_id] == claim  # same event, same number, same bytes
    assert [m.control_number for m in adapter2.calls] == [N[1]]  # only the new claims are sent
    assert len(adapter2.calls[0].claim_ids) == 2


def test_an_interchange_whose_delivery_died_is_tried_again_under_its_number(
    tmp_path: Path,
) -> None:
    first, _ = stage(tmp_path, Recorder(failures=99), delivery_attempts=2)
    batch = encounters(2)
    outs = list(first.handle_batch(batch))
    assert len(dead(outs)) == 2 and not submitted(outs)
    first.on_batch_done()  # the dead letters were acknowledged: the batch is done
    first.close()
    # Sent again (from the dead-letter topic, once the payer's gateway is back), the verdicts
    # are billed: a claim that never reached the payer was not answered.
    second, adapter = stage(tmp_path)
    claims = submitted(list(second.handle_batch(batch)))
    assert {c.interchange_control_number for c in claims} == {f"{N[0]:09d}"}
    assert [m.control_number for m in adapter.calls] == [N[0]]


def test_the_store_survives_reopening_and_a_failed_build_uses_no_number(tmp_path: Path) -> None:
    path = tmp_path / "cn.sqlite3"
    store = ControlNumbers(path)
    refs = [ClaimRef("e1", "C1", "ENC-1")]
    a = store.allocate(refs, payer_id="P", claim_type="professional", adapter="x", build=str)
    with pytest.raises(ValueError):
        store.allocate(
            [ClaimRef("e2", "C2", "ENC-2")],
            payer_id="P",
            claim_type="professional",
            adapter="x",
            build=lambda n: int("not a number"),  # type: ignore[arg-type,return-value]
        )
    store.close()
    store = ControlNumbers(path)
    b = store.allocate(
        [ClaimRef("e2", "C2", "ENC-2")],
        payer_id="P",
        claim_type="professional",
        adapter="x",
        build=str,
    )
    assert (a.icn, a.text, b.icn) == (1, "1", 2)
    assert store.assigned({"e1": "C1", "e2": "C2", "e3": "C3"}) == {"e1": 1, "e2": 2}
    assert store.encounter_of("C2") == "ENC-2" and store.claims_of(1)[0].claim_id == "C1"
    store.close()


def test_each_block_has_its_own_range_and_an_exhausted_one_refuses(tmp_path: Path) -> None:
    store = ControlNumbers(tmp_path / "b3.sqlite3", block=3)
    first = store.allocate([], payer_id="P", claim_type="p", adapter="x", build=str)
    assert first.icn == 300_000_000
    store.db.execute("UPDATE counter SET last = ?", (store.last,))
    with pytest.raises(ControlNumbersExhausted, match="CONTROL_NUMBER_BLOCK"):
        store.allocate([], payer_id="P", claim_type="p", adapter="x", build=str)
    store.close()


# --- delivery ------------------------------------------------------------------------------------


def test_retries_back_off_exponentially_then_deliver(tmp_path: Path) -> None:
    waits: list[float] = []
    adapter = Recorder(failures=2)
    meta = DeliveryMeta("P", 7, "professional", ("C1",), "CLAIMFLOW", "CH")
    outcome = deliver_with_retries(adapter, b"ISA", meta, RetryPolicy(), sleep=waits.append)
    assert outcome.delivered and outcome.attempts == 3 and len(adapter.delivered) == 1
    assert 0.5 <= waits[0] <= 0.55 and 1.0 <= waits[1] <= 1.1
    assert RetryPolicy(max_s=3).delay(10) <= 3.3


def test_a_permanent_failure_is_not_retried() -> None:
    adapter = Recorder(failures=1, permanent=True)
    meta = DeliveryMeta("P", 7, "professional", ("C1",), "CLAIMFLOW", "CH")
    outcome = deliver_with_retries(adapter, b"ISA", meta, RetryPolicy(), sleep=lambda _: None)
    assert not outcome.delivered and outcome.attempts == 1
    assert "payer refused the file" in outcome.reason()


def test_after_the_last_try_the_claims_are_dead_letters_with_the_reason(tmp_path: Path) -> None:
    claims_stage, adapter = stage(tmp_path, Recorder(failures=99), delivery_attempts=3)
    outs = list(claims_stage.handle_batch(encounters(2)))
    letters = dead(outs)
    assert not submitted(outs) and len(adapter.calls) == 3
    assert {d.key for d in letters} == {"ENC-87726-0", "ENC-87726-1"}
    assert all(d.error_class == "DeliveryFailed" for d in letters)
    assert (
        "not delivered after 3 attempt(s): DeliveryError: gateway timeout"
        in letters[0].error_message
    )
    assert claims_stage.numbers(0).interchange(N[0]).status == "dead"  # type: ignore[union-attr]


def test_file_drop_is_atomic_and_a_retry_overwrites_the_same_file(tmp_path: Path) -> None:
    adapter = FileDropAdapter(AdapterContext("filedrop", {"directory": str(tmp_path / "out")}))
    meta = DeliveryMeta("MEDICARE B/NC", 42, "institutional", ("C1",), "CLAIMFLOW", "CH")
    first = adapter.deliver(b"ISA*first~", meta)
    again = adapter.deliver(b"ISA*first~", meta)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["MEDICARE_B_NC.837I.000000042.x12"]  # no temporary file is left behind
    assert first.reference == again.reference
    assert (tmp_path / "out" / files[0]).read_bytes() == b"ISA*first~"


def test_file_drop_defaults_to_an_outbox_in_the_state_folder(tmp_path: Path) -> None:
    adapter = FileDropAdapter(AdapterContext("sftp-gw", {}, tmp_path))
    meta = DeliveryMeta("P1", 1, "professional", ("C1",), "CLAIMFLOW", "CH")
    receipt = adapter.deliver(b"ISA~", meta)
    assert receipt.reference == str(tmp_path / "outbox" / "sftp-gw" / "P1.837P.000000001.x12")


class _Payer(http.server.BaseHTTPRequestHandler):
    """A payer gateway that answers 503 twice, then accepts; it keeps files by idempotency key."""

    failures = 2
    accepted: dict[str, bytes] = {}
    requests: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(dict(self.headers))
        if type(self).failures:
            type(self).failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        key = self.headers["Idempotency-Key"]
        type(self).accepted.setdefault(key, body)
        self.send_response(201)
        self.send_header("Location", f"/claims/files/{key}")
        self.end_headers()
        self.wfile.write(b'{"status": "accepted"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def payer_gateway() -> Iterator[tuple[str, type[_Payer]]]:
    handler = type("Payer", (_Payer,), {"failures": 2, "accepted": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/claims", handler
    server.shutdown()
    server.server_close()


def test_http_adapter_that_fails_twice_then_succeeds_delivers_exactly_once(
    tmp_path: Path, payer_gateway: tuple[str, type[_Payer]]
) -> None:
    url, payer = payer_gateway
    adapter = HttpPostAdapter(AdapterContext("http", {"url": url, "token": "t0k3n"}))
    settings = ClaimsSettings(state_dir=tmp_path, claims=ClaimsOptions(routes={"*": "http"}))
    claims_stage = ClaimsStage(
        settings,
        None,
        Router({"*": "http"}, {"http": adapter}),
        sleep=lambda _: None,
    )
    outs = list(claims_stage.handle_batch(encounters(3)))
    claims = submitted(outs)
    assert len(claims) == 3 and not dead(outs)
    assert len(payer.requests) == 3  # 503, 503, 201
    first = f"{N[0]:09d}"
    assert {r["Idempotency-Key"] for r in payer.requests} == {first}
    assert payer.requests[0]["Authorization"] == "Bearer t0k3n"
    assert payer.requests[0]["Content-Type"] == "application/edi-x12"
    assert list(payer.accepted) == [first]
    assert payer.accepted[first].decode() == claims[0].x12
    assert f"201 /claims/files/{first}" in claims_stage.numbers(0).interchange(N[0]).detail  # type: ignore[union-attr]
    # The process dies before committing; the batch comes back to a new process, which sends
    # nothing more: the interchange is recorded as delivered.
    claims_stage.close()
    again = ClaimsStage(
        settings,
        None,
        Router({"*": "http"}, {"http": adapter}),
        sleep=lambda _: None,
    )
    assert submitted(list(again.handle_batch(encounters(3)))) == claims
    assert len(payer.requests) == 3
    again.close()


def test_http_client_errors_are_permanent(payer_gateway: tuple[str, type[_Payer]]) -> None:
    url, _ = payer_gateway
    adapter = HttpPostAdapter(AdapterContext("http", {"url": url + "/../nowhere"}))
    meta = DeliveryMeta("P", 1, "professional", ("C1",), "CLAIMFLOW", "CH")
    with pytest.raises(DeliveryError):  # 503 from the gateway: retryable
        adapter.deliver(b"ISA", meta)
    bad = HttpPostAdapter(AdapterContext("http", {"url": "http://127.0.0.1:9/"}))
    with pytest.raises(DeliveryError) as err:
        bad.deliver(b"ISA", meta)
    assert not isinstance(err.value, PermanentDeliveryError)


# --- routing and settings -------------------------------------------------------------------------


def test_routes_pick_the_adapter_by_payer_id_with_a_default(tmp_path: Path) -> None:
    router = build_router(
        {"MEDICARE_B": "filedrop", "ACME": "acme", "*": "simulator"},
        {"acme": {"kind": "http", "url": "https://acme.example/837"}},
        tmp_path,
    )
    assert router.adapter_for("MEDICARE_B").name == "filedrop"  # type: ignore[union-attr]
    assert isinstance(router.adapter_for("ACME"), HttpPostAdapter)
    assert router.adapter_for("87726").name == "simulator"  # type: ignore[union-attr]
    assert Router({"X": "filedrop"}, {}).adapter_for("Y") is None
    with pytest.raises(SystemExit, match="not installed"):
        build_router({"*": "carrier-pigeon"}, {}, tmp_path)
    with pytest.raises(SystemExit, match="needs a url"):
        build_router({"*": "http"}, {}, tmp_path)


def test_the_built_in_adapters_are_registered_as_entry_points() -> None:
    import importlib.metadata

    names = {e.name for e in importlib.metadata.entry_points(group="claimflow.payer_adapters")}
    assert {"filedrop", "http", "simulator"} <= names
    assert {"filedrop", "http", "simulator"} <= set(available())


def test_a_payer_without_a_route_is_a_dead_letter_that_says_how_to_fix_it(
    tmp_path: Path,
) -> None:
    claims_stage, adapter = stage(tmp_path)
    claims_stage.router = Router({"60054": "recorder"}, {"recorder": adapter})
    outs = list(claims_stage.handle_batch(encounters(1)))
    (letter,) = dead(outs)
    assert "CLAIMFLOW_CLAIMS__ROUTES" in letter.error_message


def test_claims_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAIMFLOW_CLAIMS__ROUTES", '{"MEDICARE_B": "filedrop", "*": "simulator"}')
    monkeypatch.setenv("CLAIMFLOW_CLAIMS__ADAPTERS", '{"filedrop": {"directory": "/srv/out"}}')
    monkeypatch.setenv("CLAIMFLOW_CLAIMS__DRG_BASE_RATE", "6500.00")
    settings = ClaimsSettings.from_base(Settings(topic_prefix="t."))
    assert settings.topic_prefix == "t."
    assert settings.claims.routes == {"MEDICARE_B": "filedrop", "*": "simulator"}
    assert settings.claims.adapters["filedrop"] == {"directory": "/srv/out"}
    assert str(settings.claims.drg_base_rate) == "6500.00"
    assert ClaimsSettings().claims.routes == {"MEDICARE_B": "filedrop", "*": "simulator"}


# --- acknowledgments ----------------------------------------------------------------------------


def payer_file(kind: str, body: str, file_id: str = "F1") -> PayerFile:
    return PayerFile(
        event_id=event_id("P", file_id),
        payer_id=COVERAGE.payer_id,
        file_id=file_id,
        kind=kind,  # type: ignore[arg-type]
        body=body.encode(),
        received_at=validated(coded_encounter()).validated_at,
    )


def test_999_and_277ca_rejections_become_claim_rejections(tmp_path: Path) -> None:
    claims_stage, _ = stage(tmp_path)
    claims = submitted(list(claims_stage.handle_batch(encounters(3))))
    icn = int(claims[0].interchange_control_number)
    rejected_999 = (
        "ISA*00*          *00*          *ZZ*CH             *ZZ*CLAIMFLOW      *260302*1200*^*00501"
        "*000000901*0*P*:~GS*FA*CH*CLAIMFLOW*20260302*1200*901*X*005010X231A1~"
        f"ST*999*0001*005010X231A1~AK1*HC*{icn}*005010X222A1~AK2*837*0001*005010X222A1~"
        "IK3*HI*20**8~IK4*2:1*1270*7*XYZ~IK5*R*5~AK9*R*1*1*0~SE*8*0001~GE*1*901~"
        "IEA*1*000000901~"
    )
    first = claims[0].claim_id
    rejected_277 = (
        "ISA*00*          *00*          *ZZ*CH             *ZZ*CLAIMFLOW      *260302*1200*^*00501"
        "*000000902*0*P*:~GS*HN*CH*CLAIMFLOW*20260302*1200*902*X*005010X214~"
        "ST*277*0001*005010X214~BHT*0085*08*1*20260302*1200*TH~HL*1**20*1~"
        "NM1*PR*2*UHC*****PI*87726~TRN*1*1~DTP*050*D8*20260302~DTP*009*D8*20260302~"
        f"HL*2*1*21*1~NM1*41*2*CLAIMFLOW*****46*CLAIMFLOW~TRN*2*{icn:09d}0001~"
        "STC*A1:19*20260302*WQ*300~"
        "HL*3*2*19*1~NM1*85*2*GROUP*****XX*1234567893~TRN*1*1~STC*A1:19:PR*20260302*WQ*300~"
        f"HL*4*3*PT~NM1*QC*1*DOE*JOHN****MI*W123~TRN*2*{first}~STC*A3:164:IL*20260302*U*100~"
        "DTP*472*D8*20260227~SE*20*0001~GE*1*902~IEA*1*000000902~"
    )
    outs = answered(
        claims_stage,
        [
            incoming(payer_file("999", rejected_999, "999-1"), 20, "payer.inbound.v1"),
            incoming(payer_file("277CA", rejected_277, "277-1"), 21, "payer.inbound.v1"),
            incoming(payer_file("835", "ISA~", "835-1"), 22, "payer.inbound.v1"),
        ],
    )
    found = [o.value for o in outs if o.topic == "claims.rejections.v1"]
    by_source = Counter(r.source for r in found)
    assert by_source == {"999": 3, "277CA": 1}
    r999 = [r for r in found if r.source == "999"]
    assert {r.claim_id for r in r999} == {c.claim_id for c in claims}
    assert r999[0].codes == ["IK5:R:5", "IK3:HI:20:8", "IK4:2:1:1270:7"]
    assert "invalid code value 'XYZ'" in r999[0].reason and r999[0].encounter_id == "ENC-87726-0"
    (r277,) = [r for r in found if r.source == "277CA"]
    assert r277.claim_id == first and r277.codes == ["A3:164:IL"]
    assert r277.encounter_id == claims[0].encounter_id
    assert "contract/member number (subscriber)" in r277.reason
    assert all(o.key == o.value.claim_id for o in outs)


def _277ca(claim_id: str, status: str, icn: int) -> str:
    """A 277CA about one claim of interchange ``icn``: accepted (A2:20, with the payer's
    number) or rejected."""
    accepted = status.startswith("A2")
    claim = f"STC*{status}*20260302*{'WQ' if accepted else 'U'}*100~" + (
        "REF*1K*2226123456789~" if accepted else ""
    )
    return (
        "ISA*00*          *00*          *ZZ*CH             *ZZ*CLAIMFLOW      *260302*1200*^*00501"
        "*000000902*0*P*:~GS*HN*CH*CLAIMFLOW*20260302*1200*902*X*005010X214~"
        "ST*277*0001*005010X214~BHT*0085*08*1*20260302*1200*TH~HL*1**20*1~"
        "NM1*PR*2*UHC*****PI*87726~TRN*1*1~DTP*050*D8*20260302~DTP*009*D8*20260302~"
        f"HL*2*1*21*1~NM1*41*2*CLAIMFLOW*****46*CLAIMFLOW~TRN*2*{icn:09d}~"
        "STC*A1:19*20260302*WQ*300~"
        "HL*3*2*19*1~NM1*85*2*GROUP*****XX*1234567893~TRN*1*1~STC*A1:19:PR*20260302*WQ*300~"
        f"HL*4*3*PT~NM1*QC*1*DOE*JOHN****MI*W123~TRN*2*{claim_id}~{claim}"
        "DTP*472*D8*20260227~SE*20*0001~GE*1*902~IEA*1*000000902~"
    )


def _999_rejecting(group: str) -> str:
    return (
        "ISA*00*          *00*          *ZZ*CH             *ZZ*CLAIMFLOW      *260302*1200*^*00501"
        "*000000901*0*P*:~GS*FA*CH*CLAIMFLOW*20260302*1200*901*X*005010X231A1~"
        f"ST*999*0001*005010X231A1~AK1*HC*{group}*005010X222A1~AK2*837*0001*005010X222A1~"
        "IK3*NM1*8**8~IK4*9*67*7*W123~IK5*R*5~AK9*R*1*1*0~SE*8*0001~GE*1*901~"
        "IEA*1*000000901~"
    )


@pytest.mark.parametrize("same_batch", [False, True])
@pytest.mark.parametrize("answer", ["277CA rejected", "999 rejected", "277CA accepted"])
def test_the_fix_of_a_claim_refused_at_the_front_end_is_a_new_original(
    tmp_path: Path, answer: str, same_batch: bool
) -> None:
    claims_stage, adapter = stage(tmp_path)
    [msg] = encounters(1)
    [original] = submitted(list(claims_stage.handle_batch([msg])))
    claims_stage.on_batch_done()
    kind, outcome = answer.split()
    body = (
        _999_rejecting(str(int(original.interchange_control_number)))
        if kind == "999"
        else _277ca(
            original.claim_id,
            "A3:164:IL" if outcome == "rejected" else "A2:20",
            int(original.interchange_control_number),
        )
    )
    ack = incoming(payer_file(kind, body, f"{kind}-1"), 10, "payer.inbound.v1")
    verdict = msg.value
    coverage = verdict.coded.encounter.coverage.model_copy(update={"member_id": "W555000111"})
    encounter = verdict.coded.encounter.model_copy(update={"coverage": coverage})
    fixed = verdict.model_copy(
        update={
            "event_id": f"{verdict.event_id}-fixed",
            "coded": verdict.coded.model_copy(update={"encounter": encounter}),
        }
    )
    # The payer file goes to the partition of the interchange it answers; there it is handled
    # in the same batch as the fixed verdict, or in the batch before.
    outs, moved = forwarded(claims_stage, list(claims_stage.handle_batch([ack])))
    batches = [[*moved, incoming(fixed, 11)]] if same_batch else [moved, [incoming(fixed, 11)]]
    for batch in batches:
        outs += claims_stage.handle_batch(batch)
        claims_stage.on_batch_done()
    rejected = [o.value for o in outs if o.topic == "claims.rejections.v1"]
    [claim] = submitted(outs)
    assert claim.claim_id == original.claim_id and claim.event_id != original.event_id
    assert "W555000111" in claim.x12
    if outcome == "rejected":
        assert [r.claim_id for r in rejected] == [original.claim_id]
        assert (claim.frequency, claim.original_reference) == ("1", None)
        assert "REF*F8" not in claim.x12 and ":B:1*" in claim.x12
    else:  # accepted into adjudication: the fix replaces the payer's claim
        assert rejected == []
        assert (claim.frequency, claim.original_reference) == ("7", "2226123456789")
        assert "REF*F8*2226123456789~" in claim.x12 and ":B:7*" in claim.x12
    assert validate_x12(claim.x12) == []
    assert len(adapter.delivered) == 2


def test_one_claim_of_an_encounter_refused_by_the_writer_leaves_the_other_sent(
    tmp_path: Path,
) -> None:
    """An ED visit bills the facility's 837I and the physician's 837P. The physician's line
    points at no diagnosis, which an 837I line need not and an 837P line must: the 837P
    goes to the dead-letter topic naming itself, the 837I goes out and stays recorded, so
    the verdict sent again (as it is, or fixed) never bills the facility's claim twice."""
    claims_stage, adapter = stage(tmp_path)
    visit = outpatient("ENC-ED-SPLIT")

    def with_physician(pointers: list[int]) -> Any:
        line = rev_line(4, "", "310.00", "99284", claim_type="professional",
                        revenue_code=None, dx_pointers=pointers)  # fmt: skip
        return visit.model_copy(update={"lines": [*visit.lines, line]})

    verdict = validated(with_physician([]))
    outs = list(claims_stage.handle_batch([incoming(verdict, 0)]))
    [sent] = submitted(outs)
    [letter] = dead(outs)
    assert sent.claim_type == "institutional" and sent.encounter_id == "ENC-ED-SPLIT"
    assert len(adapter.delivered) == 1
    assert letter.field == "coded.lines[3].dx_pointers"  # the encounter's 4th line
    assert "professional claim CF" in letter.error_message
    assert sent.claim_id not in letter.error_message  # it names the refused one
    store = claims_stage.submitted
    facility = store.prior("ENC-ED-SPLIT")
    assert facility is not None and facility.claim_id == sent.claim_id
    assert store.prior("ENC-ED-SPLIT/professional") is None
    # Sent again as it is: the 837P is refused again, the 837I is not billed twice.
    again = list(claims_stage.handle_batch([incoming(verdict, 1)]))
    assert submitted(again) == [] and len(dead(again)) == 1
    assert len(adapter.delivered) == 1
    # Fixed: the 837P goes out as an original; the 837I, unchanged, is not sent again.
    fixed = validated(with_physician([1])).model_copy(
        update={"event_id": event_id("ENC-ED-SPLIT", "validation", "fixed")}
    )
    [claim] = submitted(list(claims_stage.handle_batch([incoming(fixed, 2)])))
    assert (claim.claim_type, claim.frequency) == ("professional", "1")
    assert store.prior("ENC-ED-SPLIT/professional") is not None


def test_an_unreadable_payer_file_is_a_dead_letter(tmp_path: Path) -> None:
    claims_stage, _ = stage(tmp_path)
    outs = list(
        claims_stage.handle_batch([incoming(payer_file("999", "nonsense"), 1, "payer.inbound.v1")])
    )
    (letter,) = dead(outs)
    assert letter.source_topic == "payer.inbound.v1" and letter.field == "body"


# --- the demo's accounting --------------------------------------------------------------------


def test_a_claim_the_payer_rejected_is_accounted_for_not_lost(tmp_path: Path) -> None:
    from pipeline.models import ClaimRejection
    from pipeline.tracker import Ledger

    ledger = Ledger()
    claims_stage, _ = stage(tmp_path)
    batch = encounters(2)
    for msg in batch:
        ledger.sent.add(f"src-{msg.key}")
        ledger.add("encounters.collected.v1", msg.key, msg.value.coded.encounter)
        ledger.add("encounters.validated.v1", msg.key, msg.value)
    claims = submitted(list(claims_stage.handle_batch(batch)))
    for claim in claims:
        ledger.add("claims.submitted.v1", claim.claim_id, claim)
    assert ledger.summary()["lost"] == 2
    rejected = ClaimRejection(
        event_id="e",
        claim_id=claims[0].claim_id,
        encounter_id=claims[0].encounter_id,
        payer_id=claims[0].payer_id,
        source="277CA",
        file_id="277CA.1",
        codes=["A7:164:IL"],
        reason="277CA: claim rejected",
        rejected_at=claims[0].submitted_at,
    )
    ledger.add("claims.rejections.v1", rejected.claim_id, rejected)
    summary = ledger.summary()
    assert summary["payer_rejected"] == 1 and summary["lost"] == 1
    assert {"encounters_sent", "submitted", "posted", "dlq", "lost"} <= set(summary)


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("999", "ISA*00*bad", "body"),  # the X12 reader's own error
        ("999", "ISA*00*\u00e9", "body"),  # not ASCII
        ("277CA", "", "body"),
        # Readable, but no AK1 names the group it answers: refused where the reader stops.
        (
            "999",
            "ISA*00*          *00*          *ZZ*CH             *ZZ*CLAIMFLOW      *260302*1200*^"
            "*00501*000000901*0*P*:~GS*FA*CH*CLAIMFLOW*20260302*1200*901*X*005010X231A1~"
            "ST*999*0001*005010X231A1~AK9*A*0*0*0~SE*3*0001~GE*1*901~IEA*1*000000901~",
            "AK9",
        ),
    ],
)
def test_an_acknowledgment_that_names_no_interchange_is_a_dead_letter_naming_the_field(
    tmp_path: Path, kind: str, body: str, field: str
) -> None:
    claims_stage, _ = stage(tmp_path)
    file = payer_file(kind, "").model_copy(update={"body": body.encode()})
    outs = list(claims_stage.handle_batch([incoming(file, 0, "payer.inbound.v1")]))
    assert [(o.topic, o.value.field) for o in outs] == [("dlq.claims.v1", field)]
