"""PHI at rest: state folders and files are their owner's only, whatever the umask, and
wider modes left behind are narrowed; the gateway's token is stable across restarts."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.state import BatchStore, StateError
from pipeline.supervisor import prune_runs
from services.intake.gateway import configured_token
from services.intake.settings import GatewayOptions, GatewaySettings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable (0666 / 0777)."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_store_is_created_owner_only_even_under_an_open_umask(
    tmp_path: Path, open_umask: None
) -> None:
    store = BatchStore(
        tmp_path / "state" / "deep" / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v TEXT);"
    )
    with store.atomic():
        store.db.execute("INSERT INTO t VALUES ('Gonzalez')")
    store.commit()
    files = sorted((tmp_path / "state" / "deep").iterdir())
    assert {f.name for f in files} >= {"x.sqlite3", "x.sqlite3-wal", "x.sqlite3-shm"}
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(tmp_path / "state") == mode(tmp_path / "state" / "deep") == 0o700
    store.close()


def test_wider_modes_left_by_an_older_version_are_narrowed(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db = folder / "x.sqlite3"
    BatchStore(db, "CREATE TABLE IF NOT EXISTS t (v TEXT);").close()
    for path in (db, Path(f"{db}-wal")):
        if path.exists():
            path.chmod(0o644)
    BatchStore(db, "CREATE TABLE IF NOT EXISTS t (v TEXT);").close()
    assert mode(folder) == 0o700
    assert all(mode(p) == 0o600 for p in folder.iterdir())


def test_a_state_folder_that_cannot_be_used_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the state folder should be")
    with pytest.raises(StateError, match=r"^state folder .*taken: Not a directory"):
        BatchStore(tmp_path / "taken" / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v TEXT);")


def test_a_token_file_is_read_and_a_missing_one_stops_the_gateway(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-token-from-a-mounted-secret\n")
    assert configured_token(GatewaySettings(gateway=GatewayOptions(token_file=secret))) == (
        "s3cret-token-from-a-mounted-secret"
    )
    assert (
        configured_token(GatewaySettings(gateway=GatewayOptions(token=SecretStr("direct"))))
        == "direct"
    )
    with pytest.raises(SystemExit, match="CLAIMFLOW_GATEWAY__TOKEN_FILE .*missing"):
        configured_token(GatewaySettings(gateway=GatewayOptions(token_file=tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SystemExit, match="is empty"):
        configured_token(GatewaySettings(gateway=GatewayOptions(token_file=tmp_path / "empty")))


def test_old_run_folders_are_deleted_and_nothing_else(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    names = [f"202612{d:02d}T093000" for d in range(1, 6)]
    for name in names:
        (runs / name / "state").mkdir(parents=True)
        (runs / name / "intake.log").write_text("log")
    (runs / "notes").mkdir()  # not a run folder: kept
    (runs / "20261201T093000.txt").write_text("not a folder: kept")
    deleted = prune_runs(runs, keep=2)
    assert [p.name for p in deleted] == names[:3]
    assert sorted(p.name for p in runs.iterdir()) == [
        "20261201T093000.txt", *names[3:], "notes",
    ]  # fmt: skip
    assert prune_runs(tmp_path / "missing", keep=1) == []


def test_the_embedded_brokers_log_is_owner_only(tmp_path: Path, open_umask: None) -> None:
    """The broker's log lies in the run folder beside the services' logs."""
    from pipeline.broker import EmbeddedBroker

    log_file = tmp_path / "run" / "broker.log"
    with EmbeddedBroker(log_file=log_file):
        pass
    assert mode(log_file) == 0o600 and mode(log_file.parent) == 0o700
