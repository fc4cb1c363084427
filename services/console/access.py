"""Who may use the console and what each role may see and do; the access log.

Roles (minimum necessary, HIPAA 45 CFR 164.502(b)):

| role | sees PHI | works |
|---|---|---|
| coder | yes: the documentation it codes from | coder review (confirm / amend) |
| biller | yes: the claim data it corrects | corrections, denials, remittance exceptions |
| manager | no | denials (appeal, write off), exceptions; KPIs; the access log |
| viewer | no | nothing: KPIs and the queues, read only |

Users are kept in a JSON file (name -> role and a salted password hash from werkzeug) that
``claimflow console user add`` writes. The access log is an append-only SQLite table in the
console's state folder (it is not part of the rebuilt view): one row per page that showed a
patient's record, with who, their role, what, and whether PHI was on the page (HIPAA
164.312(b), audit controls). It names ids, never patient data.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from werkzeug.security import check_password_hash, generate_password_hash

from pipeline.state import private_dir, private_sqlite

Role = Literal["coder", "biller", "manager", "viewer"]
ROLES: tuple[Role, ...] = ("coder", "biller", "manager", "viewer")
PHI_ROLES = frozenset({"coder", "biller"})
# What each role may do (the verbs the pages check).
CAN: dict[str, frozenset[str]] = {
    "coder": frozenset({"review"}),
    "biller": frozenset({"correct", "denials", "exceptions"}),
    "manager": frozenset({"denials", "exceptions", "access_log"}),
    "viewer": frozenset(),
}


def sees_phi(role: str) -> bool:
    return role in PHI_ROLES


def may(role: str, verb: str) -> bool:
    return verb in CAN.get(role, frozenset())


@dataclass(frozen=True)
class User:
    name: str
    role: Role


class Users:
    """The users file: ``{"name": {"role": "...", "password": "<werkzeug hash>"}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a JSON object of users")
        return data

    def names(self) -> list[str]:
        return sorted(self._read())

    def add(self, name: str, role: str, password: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
        if not name or not name.isprintable() or len(name) > 64:
            raise ValueError("name: 1 to 64 printable characters")
        if len(password) < 12:
            raise ValueError("password: at least 12 characters")
        with self._lock:
            users = self._read()
            users[name] = {"role": role, "password": generate_password_hash(password)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(users, indent=1))
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)

    def check(self, name: str, password: str) -> User | None:
        """The user when the password is right, else None (same answer for an unknown name)."""
        entry = self._read().get(name)
        if entry is None:
            check_password_hash(_dummy_hash(), password)  # the same work as for a known name
            return None
        if not check_password_hash(entry["password"], password):
            return None
        role = entry.get("role")
        return User(name, role) if role in ROLES else None  # type: ignore[arg-type]


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown names against, made on first use: every claimflow command
    imports this module, and a scrypt hash at import cost each of them about a second."""
    return generate_password_hash(secrets.token_hex(8))


def first_users(users: Users) -> dict[str, str]:
    """On a first start with no users: one per role with a random password, returned once."""
    if users.names():
        return {}
    made: dict[str, str] = {}
    for role in ROLES:
        password = secrets.token_urlsafe(12)
        users.add(role, role, password)
        made[role] = password
    return made


class SignInThrottle:
    """At most ``attempts`` failed sign-ins per name in ``window_s``; then refused a while."""

    def __init__(self, attempts: int = 5, window_s: float = 900.0) -> None:
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if now - t < self.window_s]
            self._failures[name] = recent
            return len(recent) >= self.attempts

    def failed(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(time.monotonic())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_log (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    page TEXT NOT NULL,        -- story, review, correction, denial, exception
    encounter_id TEXT,
    claim_id TEXT,
    phi_shown INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_encounter ON access_log (encounter_id);
"""


class AccessLog:
    """Every view of a patient's record: who, when, which record, with or without PHI."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            private_dir(Path(path).parent)
        self.db = sqlite3.connect(
            private_sqlite(path), check_same_thread=False, isolation_level=None
        )
        self.db.row_factory = sqlite3.Row
        self.db.executescript(_LOG_SCHEMA)
        self._lock = threading.Lock()

    def record(
        self,
        user: User,
        page: str,
        encounter_id: str | None,
        claim_id: str | None = None,
    ) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO access_log (at_ms, user_id, role, page, encounter_id, claim_id,"
                " phi_shown) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    int(time.time() * 1000),
                    user.name,
                    user.role,
                    page,
                    encounter_id,
                    claim_id,
                    int(sees_phi(user.role)),
                ),
            )

    def recent(self, limit: int = 200, encounter_id: str | None = None) -> list[sqlite3.Row]:
        with self._lock:
            if encounter_id:
                return self.db.execute(
                    "SELECT * FROM access_log WHERE encounter_id = ? ORDER BY id DESC LIMIT ?",
                    (encounter_id, limit),
                ).fetchall()
            return self.db.execute(
                "SELECT * FROM access_log ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
