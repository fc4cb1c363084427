"""The intake gateway under broker faults: a stall longer than the delivery timeout, and a
message larger than the broker takes. Each test that pauses a broker starts its own."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_client import Reader, address, mllp_exchange, msa, post, start_gateway

from pipeline.broker import EmbeddedBroker
from pipeline.serde import registry
from services.intake.gateway import Gateway
from sim.ehr import generate

pytestmark = pytest.mark.broker
REG = registry()


def healthz(gw: Gateway) -> int:
    try:
        with urllib.request.urlopen(gw.endpoints()["http"] + "/healthz", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(predicate: object, timeout: float) -> float | None:
    """Seconds until ``predicate()`` held, or None when it did not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    return None


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as broker:
        yield broker


def test_a_broker_stall_longer_than_the_delivery_timeout_is_survived_in_process(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    gw = start_gateway(
        own_broker.bootstrap,
        {"auth": False, "delivery_timeout_s": 1.5},
        topic_prefix="stall.",
        state_dir=tmp_path,
    )
    messages = list(generate(400, seed=31, fmt="hl7v2"))
    answers: dict[str, str] = {}  # control id -> MSA-1
    stop = threading.Event()

    def sender() -> None:
        with socket.create_connection(address(gw, "mllp"), timeout=30) as sock:
            for _, _, body in messages:
                if stop.is_set():
                    return
                [reply] = mllp_exchange(sock, b"\x0b" + body + b"\x1c\r", 1)
                answers[msa(reply)[2]] = msa(reply)[1]
                time.sleep(0.02)

    thread = threading.Thread(target=sender)
    try:
        assert wait_for(lambda: healthz(gw) == 200, 10) is not None
        thread.start()
        assert wait_for(lambda: "AA" in answers.values(), 20) is not None
        os.kill(own_broker.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        paused = time.monotonic()
        # Not ready while nothing can be delivered.
        assert wait_for(lambda: healthz(gw) == 503, 10) is not None
        time.sleep(max(0.0, 4.0 - (time.monotonic() - paused)))  # > 2x the delivery timeout
        failed_during = sum(1 for code in answers.values() if code == "AE")
        os.kill(own_broker.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        resumed = time.monotonic()
        aa_before = sum(1 for code in answers.values() if code == "AA")
        recovered = wait_for(
            lambda: sum(1 for code in answers.values() if code == "AA") > aa_before + 5, 20
        )
        assert recovered is not None, "the gateway did not accept again after the stall"
        assert healthz(gw) == 200
        assert gw.publisher.renewals >= 1  # the spent producer was replaced, in process
        assert failed_during >= 1, "the stall was not long enough to fail a delivery"
        print(f"accepting again {time.monotonic() - resumed:.1f}s after the broker resumed")
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(60)
        gw.stop()
        if own_broker.proc is not None:
            os.kill(own_broker.proc.pid, signal.SIGCONT)
    # Nothing acknowledged is lost: every AA's message is in intake.raw.v1.
    accepted = {cid for cid, code in answers.items() if code == "AA"}
    raw = Reader(own_broker.bootstrap, "stall.intake.raw.v1")
    try:

        def stored() -> set[str]:
            return {REG.decode("intake.raw.v1", m.value()).source_id.rsplit(":", 1)[1]
                    for m in raw.records}  # fmt: skip

        raw.wait(lambda _recs: accepted <= stored(), timeout=30)
        assert accepted - stored() == set()
    finally:
        raw.close()


def test_a_message_larger_than_the_broker_takes_is_refused_for_good(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    gw = start_gateway(
        bootstrap,
        # a body limit above what the broker takes: such a message is refused as 413 / AR
        {"auth": False, "max_body_bytes": 2_000_000},
        topic_prefix=prefix,
        state_dir=tmp_path,
        max_message_bytes=1_000_000,
    )
    try:
        header = b"MSH|^~\\&|A|FAC|C|D|20250101||ADT^A03|BIG2|P|2.5.1\r"
        big = header + b"NTE|1||" + b"x" * 1_200_000 + b"\r"
        with socket.create_connection(address(gw, "mllp"), timeout=30) as sock:
            [reply] = mllp_exchange(sock, b"\x0b" + big + b"\x1c\r", 1)
        assert msa(reply)[1:3] == ["AR", "BIG2"], reply[:300]
        assert "the broker takes up to" in msa(reply)[3]
        status, body = post(gw, "/hl7v2", big, "x-application/hl7-v2+er7", token=None)
        assert status == 413 and b"MSA|AR|BIG2|" in body
        bundle = b'{"resourceType": "Bundle", "id": "b1", "entry": [], "x": "' + b"y" * 1_200_000
        status, body = post(gw, "/fhir", bundle + b'"}', "application/fhir+json", token=None)
        assert status == 413 and b"too-long" in body
        # Under the limit: a large message is stored.
        ok = header.replace(b"BIG2", b"BIG3") + b"NTE|1||" + b"x" * 800_000 + b"\r"
        assert post(gw, "/hl7v2", ok, "x-application/hl7-v2+er7", token=None)[0] == 202
    finally:
        gw.stop()
