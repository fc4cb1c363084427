"""Metrics ports the supervisor hands its services: out of the way of outgoing connections,
and another one for a restart when the old one was taken meanwhile (a service that cannot
bind its port exits at start-up; restarting it on the same port would fail the same way)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline import broker
from pipeline.broker import free_port, port_free
from pipeline.supervisor import Child, Supervisor


def test_a_free_port_is_picked_below_the_ephemeral_range(tmp_path: Path) -> None:
    low = broker._ephemeral_low()
    if low <= 11000:
        pytest.skip(f"the kernel's ephemeral range starts at {low}: nothing below to pick from")
    for _ in range(20):
        port = free_port()
        assert low - 10000 <= port < low
        assert port_free(port)


def test_the_ephemeral_range_unknown_falls_back_to_the_kernels_pick(tmp_path: Path) -> None:
    assert broker._ephemeral_low(str(tmp_path / "absent")) == 0
    (tmp_path / "range").write_text("32768\t60999\n")
    assert broker._ephemeral_low(str(tmp_path / "range")) == 32768


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_free(sock.getsockname()[1])


def test_a_restart_gets_another_port_when_its_own_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[int] = []
    sup = Supervisor("127.0.0.1:1", tmp_path, services=())
    monkeypatch.setattr(sup, "_spawn", lambda child: spawned.append(child.metrics_port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup.children["coding"] = Child("coding", port, tmp_path / "coding.log")
        sup.respawn("coding")
        moved = sup.children["coding"].metrics_port
        assert moved != port and port_free(moved)
        assert spawned == [moved]
    # a port still free is kept: the metrics address stays put across ordinary restarts
    sup.respawn("coding")
    assert spawned[-1] == moved == sup.children["coding"].metrics_port
