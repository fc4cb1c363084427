"""The risk step reads a member's year once and deletes nothing for a new encounter.

``RiskHistory.year_of`` gives the member's codes from other encounters (judge:
``history``, the query before) and whether the encounter has codes recorded (judge: a
query for its rows); ``record_risk(..., recorded=False)`` after it leaves the store and
its change records as the general ``record_risk`` does. Over random members, years and
encounters, with replays, empty contributions and encounters recorded again. A change
record is what ``json.dumps`` writes of the codes, whatever they hold.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from services.coding.risk_history import (
    ONE_STATEMENT_ROWS,
    RiskHistory,
    change_record,
    writes_in_one_statement,
)

CODES = ["E119", "I10", "I5022", "N184", "J449", "E785", "F329", "C50911"]


def rows(store: RiskHistory) -> list[tuple[object, ...]]:
    return store.db.execute("SELECT * FROM risk_dx ORDER BY 1, 2, 3, 4").fetchall()


def test_year_of_and_record_risk_are_the_general_paths(tmp_path: Path) -> None:
    rng = random.Random(11)
    fast = RiskHistory(tmp_path / "fast.sqlite3", changelog=True)
    judge = RiskHistory(tmp_path / "judge.sqlite3", changelog=True)
    news = 0
    for n in range(3000):
        key, year = f"member-{rng.randrange(60)}", rng.choice([2025, 2026])
        encounter_id = f"ENC-{rng.randrange(900)}"
        earlier, recorded = fast.year_of(key, year, encounter_id)
        assert earlier == judge.history(key, year, encounter_id)
        own = judge.db.execute(
            "SELECT 1 FROM risk_dx WHERE patient_key = ? AND year = ? AND encounter_id = ?",
            (key, year, encounter_id),
        ).fetchone()
        assert recorded == (own is not None)
        news += not recorded
        codes = rng.sample(CODES, rng.randrange(4)) * rng.randrange(1, 3)
        fast.record_risk(key, year, encounter_id, codes, recorded=recorded)
        judge.record_risk(key, year, encounter_id, codes)
        if n % 100 == 0:
            assert rows(fast) == rows(judge)
            assert fast.take_changes() == judge.take_changes()
            fast.commit()
            judge.commit()
    assert rows(fast) == rows(judge)
    assert fast.take_changes() == judge.take_changes()
    assert 100 < news < 3000


def test_change_records_are_json_dumps() -> None:
    rng = random.Random(5)
    odd = [
        "",
        "E11.9",
        'a"b',
        "back\\slash",
        "tab\tnew\nline",
        "é",
        "\u2028",
        "\ud800",
        "😀",
        "\x00\x1f",
    ]
    lists = [[], ["E119"], CODES, odd] + [
        rng.sample(CODES + odd, rng.randrange(6)) for _ in range(500)
    ]
    for codes in lists:
        assert change_record(codes) == json.dumps(codes).encode(), codes


def test_insert_in_one_statement_writes_the_rows_executemany_writes(tmp_path: Path) -> None:
    """``_insert`` writes up to ``ONE_STATEMENT_ROWS`` codes in one INSERT (judge: one
    INSERT per row, as before), rows already there ignored the same way."""
    rng = random.Random(3)
    fast = RiskHistory(tmp_path / "fast.sqlite3")
    judge = RiskHistory(tmp_path / "judge.sqlite3")
    many = [f"C{i:04d}" for i in range(ONE_STATEMENT_ROWS + 5)]
    sizes = [0, 1, 2, ONE_STATEMENT_ROWS, ONE_STATEMENT_ROWS + 1, ONE_STATEMENT_ROWS + 5]
    for n in range(400):
        key, year, encounter_id = f"m{rng.randrange(20)}", 2026, f"E{rng.randrange(50)}"
        size = sizes[n] if n < len(sizes) else rng.randrange(6)
        codes = sorted(set(rng.sample(many if size > len(CODES) else CODES, size)))
        fast._insert(key, year, encounter_id, codes)
        judge.db.executemany(
            "INSERT OR IGNORE INTO risk_dx VALUES (?, ?, ?, ?)",
            [(key, year, encounter_id, c) for c in codes],
        )
    assert rows(fast) == rows(judge)
    assert len(rows(fast)) > 2 * ONE_STATEMENT_ROWS


def test_one_statement_is_a_new_encounter_with_codes_for_one_insert() -> None:
    assert writes_in_one_statement([], recorded=False)
    assert writes_in_one_statement(["E119", "E119", "I10"], recorded=False)
    assert writes_in_one_statement(["X"] * (ONE_STATEMENT_ROWS + 1), recorded=False)
    assert not writes_in_one_statement(["E119"], recorded=True)
    assert not writes_in_one_statement(
        [f"C{i}" for i in range(ONE_STATEMENT_ROWS + 1)], recorded=False
    )


def test_year_of_without_a_query_for_a_year_with_no_row(tmp_path: Path) -> None:
    """A changelogged store answers a member's year whose bit is not set without SQLite
    (``_years``); judged by the query on every answer, as the store is written, rolled back,
    reopened (the bits from the file) and rebuilt from its change records."""
    rng = random.Random(23)
    path = tmp_path / "bits.sqlite3"
    store = RiskHistory(path, changelog=True)
    changes = []

    def judged(store: RiskHistory, key: str, year: int, encounter_id: str) -> None:
        rows = store.db.execute(
            "SELECT encounter_id, code FROM risk_dx WHERE patient_key = ? AND year = ?",
            (key, year),
        ).fetchall()
        earlier = sorted({code for eid, code in rows if eid != encounter_id})
        recorded = any(eid == encounter_id for eid, _ in rows)
        assert store.year_of(key, year, encounter_id) == (earlier, recorded)

    for n in range(2000):
        key, year = f"member-{rng.randrange(400)}", rng.choice([2025, 2026])
        encounter_id = f"ENC-{rng.randrange(3000)}"
        judged(store, key, year, encounter_id)
        earlier, recorded = store.year_of(key, year, encounter_id)
        codes = rng.sample(CODES, rng.randrange(4))
        store.record_risk(key, year, encounter_id, codes, recorded=recorded)
        if n % 97 == 0:
            store.rollback()  # the batch's writes undone: their bits stay set
            store.take_changes()
        elif n % 10 == 0:
            changes += store.take_changes()
            store.commit()
        if n % 500 == 499:
            changes += store.take_changes()
            store.commit()
            store.close()
            store = RiskHistory(path, changelog=True)
    assert store._years is not None and any(store._years)
    changes += store.take_changes()
    store.commit()
    rebuilt = RiskHistory(tmp_path / "rebuilt.sqlite3", changelog=True)
    for key, value in changes:
        rebuilt.apply(key, value)
    for _ in range(2000):
        key, year = f"member-{rng.randrange(450)}", rng.choice([2024, 2025, 2026])
        encounter_id = f"ENC-{rng.randrange(3000)}"
        judged(store, key, year, encounter_id)
        judged(rebuilt, key, year, encounter_id)
    assert rows(rebuilt) == rows(store)
