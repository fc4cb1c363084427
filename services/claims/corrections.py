"""Answers to a changed verdict on an encounter already billed: replacement or void.

When validation re-decides an encounter (a replay with a new rule pack, or a re-coded
encounter), the claims service must never send a second original for it. ``decide`` is
the pure rule, given the claim last submitted for the encounter (if any) and the new
verdict:

- nothing billed yet: an original (frequency 1) for a clean or warned verdict, nothing for
  a rejected one;
- a live claim (1 or 7): a rejected verdict voids it (8); a billable verdict whose outcome
  or coded content differs replaces it (7); the same outcome and content: nothing;
- a voided claim: a billable verdict bills again as an original (1), a rejected one
  nothing;
- a claim the payer's front end refused (999 or 277CA rejection): it never entered
  adjudication, so there is nothing at the payer to replace or void. A refused original
  is as if nothing were billed: the corrected, billable verdict goes out as a new original
  (1, no REF*F8). A refused void leaves the claim live (the rules of a live claim apply);
  a refused replacement leaves the claim it would have replaced live, with content that
  is no longer the last billed, so a billable verdict replaces it again (7) whatever its
  content, a rejected one voids it (8).

A replacement or void keeps the claim id (patient control number) and refers to the
original by the payer's claim control number when known, else by the original claim id.
Every claim after the first original (7, 8, or an original billed again) takes its event
id from the verdict that asked for it (``domain.claim_event_id``), so a second replacement
of the same claim is a new event while a re-read verdict gives the same event again.

``SubmittedClaims`` keeps, per encounter, the claim last submitted and the verdict it was
built from, every verdict event already answered, and the claim events a payer's front end
refused, in SQLite in the service's state folder; the runner commits it after the batch's
claims are acknowledged.

The verdict a claim was built from is kept as its encounters.validated.v1 record in base64
(``billed_text``, ``services/claims/parsed.py``): the bytes the stage received when the
claim bills the verdict as it came. The JSON older versions kept is still read.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pipeline.errors import InputError
from pipeline.models import ClaimRejection, SubmittedClaim, ValidatedEncounter
from pipeline.row_changelog import RowChangelogStore
from pipeline.state import rows_in
from services.claims.domain import (
    DEFAULT_DRG_BASE_RATE,
    PROFESSIONAL_PART,
    FeeSchedule,
    PlannedClaim,
    claim_event_id,
    claim_id_for,
    claim_parts,
    in_validated_record,
    interchange_control_number,
    plan_claim,
    submitted_claim,
    write_interchange,
)
from services.claims.parsed import STORE_PAGE_SIZE, Parsed, avro_text, read_text
from services.claims.secondary import coverages_of
from services.claims.x12_837_common import Frequency
from services.refdata.masterdata import MasterData

Kind = Literal["none", "original", "replacement", "void"]

VERDICTS = "encounters.validated.v1"
"""The topic whose schema the stored verdicts are encoded with."""


@dataclass(frozen=True)
class PriorClaim:
    """The claim last submitted for an encounter, and the verdict it was built from."""

    claim_id: str
    frequency: Frequency
    billed: ValidatedEncounter
    payer_claim_control_number: str | None = None
    rejected: bool = False
    """The payer's front end refused this claim (999 or 277CA): it is not in adjudication."""

    @property
    def reference(self) -> str:
        """What a replacement or void refers to: the payer's number, else our claim id."""
        return self.payer_claim_control_number or self.claim_id


@dataclass(frozen=True)
class Correction:
    """What to send for a verdict: the kind, the frequency, what it refers to, and the
    verdict the claim is built from (the previous one, for a void)."""

    kind: Kind
    reason: str
    frequency: Frequency | None = None
    original_reference: str | None = None
    source: ValidatedEncounter | None = None


@dataclass(frozen=True)
class Stored:
    """What a corrections store holds of one verdict's encounter, read with one query
    (``SubmittedClaims.look``): whether the verdict is answered, the submitted rows of the
    encounter's parts (as ``snapshot`` gives them), the parts whose last claim event a
    payer refused, the parts pruned after settlement, and which of the parts' claim ids
    are settled."""

    answered: bool
    rows: list[tuple[object, ...]]
    refused: frozenset[str]
    pruned: dict[str, tuple[str, float]]
    settled: frozenset[str]


def without_note(verdict: ValidatedEncounter) -> ValidatedEncounter:
    """The verdict as the claims store keeps it: no note text (an 837 carries none, and
    the store holds PHI on disk: the minimum necessary)."""
    enc = verdict.coded.encounter
    if enc.note_text is None:
        return verdict
    coded = verdict.coded.model_copy(
        update={"encounter": enc.model_copy(update={"note_text": None})}
    )
    return verdict.model_copy(update={"coded": coded})


def billed_text(kept: ValidatedEncounter, encoded: bytes | None = None) -> str:
    """How the store keeps the verdict a claim was built from: its Avro record in base64.
    ``encoded``: the bytes ``kept`` was decoded from (the record the stage received), used
    as they are instead of encoding it again."""
    return avro_text(VERDICTS, kept, encoded)


def read_billed(text: str) -> ValidatedEncounter:
    """The verdict ``billed_text`` wrote, or the JSON an older version stored."""
    return read_text(VERDICTS, ValidatedEncounter, text)


def decide(prior: PriorClaim | None, verdict: ValidatedEncounter) -> Correction:
    """The answer to a verdict, given the claim last submitted for its encounter."""
    billable = verdict.outcome != "rejected"
    if prior is not None and prior.rejected and prior.frequency == "1":
        # Never accepted into adjudication: nothing at the payer to replace or void.
        if not billable:
            return Correction("none", "rejected; the original was refused by the payer")
        why = "billable again after the payer's front end refused the original"
        return Correction("original", why, "1", None, verdict)
    if prior is None or (prior.frequency == "8" and not prior.rejected):
        if not billable:
            return Correction("none", "rejected; nothing billed")
        again = " again after the void" if prior is not None else ""
        return Correction("original", f"billable{again}", "1", None, verdict)
    # A live claim at the payer (a refused void leaves it live).
    if not billable:
        return Correction(
            "void", "the billed encounter is now rejected", "8", prior.reference, prior.billed
        )
    before = prior.billed
    # Stored claims keep no note text (older rows may): a note alone changes no claim.
    same = (
        before.outcome == verdict.outcome
        and without_note(before).coded == without_note(verdict).coded
    )
    refused_replacement = prior.rejected and prior.frequency == "7"
    if same and not refused_replacement:
        return Correction("none", "same outcome and content as the claim submitted")
    if same:
        why = "the payer's front end refused the replacement; sent again"
    elif before.outcome != verdict.outcome:
        why = f"outcome {before.outcome} -> {verdict.outcome}"
    else:
        why = "coded content changed"
    return Correction("replacement", why, "7", prior.reference, verdict)


def correction_control_number(claim_event_id: str) -> int:
    """A 9-digit ISA13 for a correction's interchange, distinct from the original's."""
    digest = hashlib.sha256(f"isa13\x1f{claim_event_id}".encode()).hexdigest()
    return int(digest, 16) % 999_999_999 + 1


def plan(
    correction: Correction,
    verdict: ValidatedEncounter,
    *,
    first_original: bool,
    fee_schedule: FeeSchedule | None = None,
    drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE,
    master: MasterData | None = None,
    claim_id: str | None = None,
) -> PlannedClaim | None:
    """The claim to write for a correction (None for "none"). The first original keeps
    the event id every original always had; later claims take theirs from the verdict that
    asked for them (``claim_event_id``), a void too, though it is built from the verdict
    billed before."""
    if correction.kind == "none" or correction.source is None or correction.frequency is None:
        return None
    planned = plan_claim(
        correction.source,
        fee_schedule=fee_schedule,
        drg_base_rate=drg_base_rate,
        master=master,
        frequency=correction.frequency,
        original_reference=correction.original_reference,
        answers=None if first_original else verdict.event_id,
        claim_id=claim_id,
    )
    if first_original:
        return planned
    return replace(
        planned,
        rule_pack_version=verdict.rule_pack_version,
        submitted_at=max(verdict.validated_at, planned.submitted_at),
    )


def write(planned: PlannedClaim, *, sender_id: str, receiver_id: str) -> SubmittedClaim:
    """One claim in its own interchange: an original under the control number derived from
    its claim id (as ``build_claim``), a correction under one derived from its event id."""
    first = planned.event_id == claim_event_id(planned.claim_id)
    icn = (
        interchange_control_number(planned.claim_id)
        if first
        else correction_control_number(planned.event_id)
    )
    try:
        x12 = write_interchange(
            [planned], sender_id=sender_id, receiver_id=receiver_id, control_number=icn
        )
    except InputError as exc:
        raise in_validated_record(exc) from exc
    return submitted_claim(planned, icn, x12)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS submitted (
    encounter_id TEXT NOT NULL,        -- the claim's part of the encounter (``claim_parts``)
    claim_id TEXT NOT NULL,            -- claim_id_for(encounter_id): the row's key
    frequency TEXT NOT NULL,
    claim_event_id TEXT NOT NULL,
    payer_claim_control_number TEXT,
    billed TEXT NOT NULL               -- the ValidatedEncounter the claim was built from:
                                       -- Avro in base64 (``billed_text``), or older JSON
);
-- Acknowledgments (277CA, 835) name the claim, not the encounter; a part is found by the
-- claim id its key gives. A file created before keeps its index here (not unique) and the
-- table's primary key on encounter_id, and is read by encounter id (``SubmittedClaims``).
CREATE UNIQUE INDEX IF NOT EXISTS submitted_by_claim_id ON submitted (claim_id);
CREATE TABLE IF NOT EXISTS answered (  -- every verdict event already answered
    verdict_event_id TEXT PRIMARY KEY,
    encounter_id TEXT NOT NULL
);
-- Claim events a payer's front end refused (999 / 277CA). Keyed by the claim event, not
-- the encounter: the next claim sent for the encounter has a new event id and is live.
CREATE TABLE IF NOT EXISTS rejected (
    claim_event_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    source TEXT NOT NULL,              -- 999 | 277CA
    rejection_event_id TEXT NOT NULL   -- the claims.rejections.v1 event
);
-- Claims remittance said are adjudicated (remittance.settled.v1), and when their stored
-- payloads may be pruned (services/claims/retention.py). A claim sent again leaves it.
CREATE TABLE IF NOT EXISTS settled (
    claim_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,              -- paid | partially_paid | denied
    settled_at REAL NOT NULL,          -- unix time remittance posted it
    prune_after REAL NOT NULL          -- unix time the retention window ends
);
CREATE INDEX IF NOT EXISTS settled_due ON settled (prune_after);
-- Encounters (parts) whose verdict was pruned after settlement: what is left of them.
CREATE TABLE IF NOT EXISTS pruned (
    encounter_id TEXT PRIMARY KEY,
    claim_id TEXT NOT NULL,
    settled_at REAL NOT NULL,
    pruned_at REAL NOT NULL
);
"""


LOOK_CHUNK = 200
"""Verdicts read by one query of ``SubmittedClaims.look_many`` (five parameters each)."""


@lru_cache(maxsize=64)
def _look_many(keys: int, events: int, claims: int, by_claim: bool = False) -> str:
    """The query of ``SubmittedClaims.look`` for ``keys`` encounter parts, ``events``
    verdict events and ``claims`` claim ids (the parts' keys are bound twice: submitted,
    then pruned). ``by_claim``: the submitted rows are found by the parts' claim ids (bound
    first, then the keys: ``SubmittedClaims.by_claim``). Its rows are (kind, ...): 0 a
    submitted row of a part (the columns ``snapshot`` reads, then whether its claim event
    was refused), 1 a pruned part, 2 the verdict answered, 3 a settled claim of a part."""

    def marks(n: int) -> str:
        return ", ".join("?" * n)

    parts = f"s.encounter_id IN ({marks(keys)})"
    if by_claim:
        parts = f"s.claim_id IN ({marks(keys)}) AND {parts}"
    return f"""
SELECT 0, s.encounter_id, s.claim_id, s.frequency, s.claim_event_id,
    s.payer_claim_control_number, s.billed, r.claim_event_id IS NOT NULL
FROM submitted s LEFT JOIN rejected r ON r.claim_event_id = s.claim_event_id
WHERE {parts}
UNION ALL SELECT 1, encounter_id, claim_id, settled_at, NULL, NULL, NULL, NULL
FROM pruned WHERE encounter_id IN ({marks(keys)})
UNION ALL SELECT 2, verdict_event_id, NULL, NULL, NULL, NULL, NULL, NULL
FROM answered WHERE verdict_event_id IN ({marks(events)})
UNION ALL SELECT 3, claim_id, NULL, NULL, NULL, NULL, NULL, NULL
FROM settled WHERE claim_id IN ({marks(claims)})
"""


_UPSERT = (
    "INSERT INTO submitted VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT({target}) DO "
    "UPDATE SET claim_id = excluded.claim_id, frequency = excluded.frequency, "
    "claim_event_id = excluded.claim_event_id, billed = excluded.billed, "
    "payer_claim_control_number = CASE WHEN excluded.frequency = '1' THEN NULL "
    "ELSE submitted.payer_claim_control_number END"
)
"""``SubmittedClaims.record``'s write of a part's row, on conflict with the row the file's
key finds (``{target}``: encounter_id, or claim_id where the rows are found by claim id)."""


class ClaimPruned(InputError):
    """A verdict or posting for a claim whose stored verdict was pruned after its retention
    window: no replacement, void or next-payer claim can be built from it any more."""

    def __init__(self, encounter_id: str, claim_id: str, settled_at: float) -> None:
        day = datetime.fromtimestamp(settled_at, UTC).date().isoformat()
        super().__init__(
            "encounter_id",
            f"{encounter_id}: claim {claim_id} was settled on {day} and its stored record "
            "pruned after the retention window (CLAIMFLOW_CLAIMS__SETTLED_RETENTION_DAYS); "
            "a correction to it must be billed by hand",
        )


def _billed_row(
    key: str, found: dict[str, tuple[str, str | None, float]]
) -> tuple[str, str] | None:
    """Part ``key``'s claim id and billed verdict as stored, from what ``billed_many`` read;
    None when nothing was billed; raises ``ClaimPruned`` for a part pruned after settlement."""
    row = found.get(key)
    if row is None:
        return None
    claim_id, billed, settled_at = row
    if billed is None:
        raise ClaimPruned(key, claim_id, settled_at)
    return claim_id, billed


class SubmittedClaims(RowChangelogStore):
    """Claims submitted per encounter, and the verdicts answered (SQLite, idempotent).

    The service keeps one per partition of encounters.validated.v1, each row change a
    record of its changelog (``changelog=True``), so it moves with its partition."""

    FILENAME = "claims-submitted.sqlite3"

    #: Verdicts kept parsed, by their stored text: the 835 of a claim comes back seconds
    #: after it was billed, and reading the verdict again cost more than the rest of it.
    #: Only those of claims with a later payer are kept (``record``): a posting reads no
    #: other back (``billed_payers``).
    PARSED_MAX = 2048

    #: The payers a billed verdict's claims go to (``coverages_of``'s payer ids, in order),
    #: by claim id and the hash of the verdict's stored text: all that most postings need
    #: of the verdict (``billed_payers``). Kept for many more claims than ``PARSED_MAX``
    #: (a few hundred bytes each): at maximum rate a claim's 835 comes back thousands of
    #: claims after it was billed, and reading the verdict again then cost ~55 us a posting
    #: (``bench claims_stage`` with postings 3,000 encounters behind: 0.112 ms a posting,
    #: 0.049-0.056 with the payers kept).
    PAYERS_MAX = 32768

    TABLES = ("submitted", "answered", "rejected", "settled", "pruned")

    def __init__(self, path: Path | str, *, changelog: bool = False) -> None:
        super().__init__(
            path,
            _SCHEMA,
            self.TABLES,
            changelog=changelog,
            bulky={"submitted": ("billed",)},
            page_size=STORE_PAGE_SIZE,
        )
        self._parsed = Parsed.of_topic(VERDICTS, ValidatedEncounter, self.PARSED_MAX)
        #: Ordered: a plain dict that drops its first key as each new one comes walks past
        #: every key dropped before it (at 32,768 keys ~8.4 us a drop against 0.35).
        self._payers: OrderedDict[tuple[str, int], tuple[str, ...]] = OrderedDict()
        self._payers_master: MasterData | None = None
        #: Whether the file's submitted rows are found by claim id (a file created since
        #: the table's primary key on encounter_id went): each part's claim id is its
        #: key's (``claim_id_for``), so the unique index on claim id finds a part, and the
        #: primary key's index was a second index keyed by a random id, one more leaf page
        #: written per claim once the table outgrows a batch. A file created before keeps
        #: its primary key and is read by encounter id, as it always was.
        self.by_claim = not any(
            row[0] == "pk"
            for row in self.db.execute("SELECT origin FROM pragma_index_list('submitted')")
        )
        self._upsert = _UPSERT.format(target="claim_id" if self.by_claim else "encounter_id")

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SubmittedClaims:
        return cls(Path(state_dir) / cls.FILENAME)

    def _part(self, alias: str = "", n: int = 1) -> str:
        """The condition finding the submitted rows of ``n`` parts (``_key`` binds them)."""
        marks = ", ".join("?" * n)
        where = f"{alias}encounter_id IN ({marks})"
        return f"{alias}claim_id IN ({marks}) AND {where}" if self.by_claim else where

    def _key(self, *keys: str) -> tuple[str, ...]:
        """The parameters of ``_part`` for the parts ``keys``."""
        return (*map(claim_id_for, keys), *keys) if self.by_claim else keys

    def look(self, verdict: ValidatedEncounter) -> Stored:
        """What the store holds of ``verdict``'s encounter (both parts' keys), in one
        query: what ``answered``, ``snapshot`` and ``prior`` read one by one."""
        keys = (verdict.encounter_id, f"{verdict.encounter_id}/{PROFESSIONAL_PART}")
        claims = (claim_id_for(keys[0]), claim_id_for(keys[1]))
        found = (*claims, *keys) if self.by_claim else keys
        rows = self.db.execute(
            _look_many(2, 1, 2, self.by_claim), (*found, *keys, verdict.event_id, *claims)
        )
        answered = False
        submitted: list[tuple[object, ...]] = []
        refused: set[str] = set()
        pruned: dict[str, tuple[str, float]] = {}
        settled: set[str] = set()
        for kind, *row in rows.fetchall():
            if kind == 0:
                submitted.append(tuple(row[:6]))
                if row[6]:
                    refused.add(row[0])
            elif kind == 1:
                pruned[row[0]] = (row[1], row[2])
            elif kind == 2:
                answered = True
            else:
                settled.add(row[0])
        return Stored(answered, submitted, frozenset(refused), pruned, frozenset(settled))

    def look_many(self, verdicts: Sequence[ValidatedEncounter]) -> list[Stored | None]:
        """``look`` of each of ``verdicts``, read together (a batch's verdicts: one query per
        ``LOOK_CHUNK`` instead of one each, which cost 4% of the claims stage's time in
        its benchmark with history). None for a verdict whose encounter or event id another
        of them shares: what it finds depends on what the one before it writes, so the
        caller looks it up in its turn. The others are answered before any of them is, and
        answering one writes only the rows of its own encounter's parts and event (its
        ``answered``, ``submitted`` and ``settled`` rows), which no other reads."""
        encounters = Counter(v.encounter_id for v in verdicts)
        events = Counter(v.event_id for v in verdicts)
        alone = [
            i
            for i, v in enumerate(verdicts)
            if encounters[v.encounter_id] == 1 and events[v.event_id] == 1
        ]
        out: list[Stored | None] = [None] * len(verdicts)
        for start in range(0, len(alone), LOOK_CHUNK):
            chunk = alone[start : start + LOOK_CHUNK]
            of_key: dict[str, int] = {}
            of_claim: dict[str, int] = {}
            of_event: dict[str, int] = {}
            for i in chunk:
                verdict = verdicts[i]
                of_event[verdict.event_id] = i
                for key in (verdict.encounter_id, f"{verdict.encounter_id}/{PROFESSIONAL_PART}"):
                    of_key[key] = i
                    of_claim[claim_id_for(key)] = i
            answered: set[int] = set()
            rows: dict[int, list[tuple[object, ...]]] = {i: [] for i in chunk}
            refused: dict[int, set[str]] = {i: set() for i in chunk}
            pruned: dict[int, dict[str, tuple[str, float]]] = {i: {} for i in chunk}
            settled: dict[int, set[str]] = {i: set() for i in chunk}
            parts = (*of_claim, *of_key) if self.by_claim else tuple(of_key)
            found = self.db.execute(
                _look_many(len(of_key), len(of_event), len(of_claim), self.by_claim),
                (*parts, *of_key, *of_event, *of_claim),
            )
            for kind, *row in found.fetchall():
                if kind == 0:
                    i = of_key[row[0]]
                    rows[i].append(tuple(row[:6]))
                    if row[6]:
                        refused[i].add(row[0])
                elif kind == 1:
                    pruned[of_key[row[0]]][row[0]] = (row[1], row[2])
                elif kind == 2:
                    answered.add(of_event[row[0]])
                else:
                    settled[of_claim[row[0]]].add(row[0])
            for i in chunk:
                out[i] = Stored(
                    i in answered, rows[i], frozenset(refused[i]), pruned[i], frozenset(settled[i])
                )
        return out

    def _prior_in(self, stored: Stored, key: str) -> PriorClaim | None:
        """``prior`` of the part ``key``, from what ``look`` read."""
        for row in stored.rows:
            if row[0] == key:
                _, claim_id, frequency, _, number, billed = row
                return PriorClaim(
                    str(claim_id),
                    frequency,  # type: ignore[arg-type]
                    self._parsed.get(str(billed)),
                    number,  # type: ignore[arg-type]
                    key in stored.refused,
                )
        gone = stored.pruned.get(key)
        if gone is not None:
            raise ClaimPruned(key, *gone)
        return None

    def prior(self, encounter_id: str) -> PriorClaim | None:
        row = self.db.execute(
            "SELECT s.claim_id, s.frequency, s.billed, s.payer_claim_control_number, "
            "r.claim_event_id IS NOT NULL FROM submitted s "
            "LEFT JOIN rejected r ON r.claim_event_id = s.claim_event_id "
            f"WHERE {self._part('s.')}",
            self._key(encounter_id),
        ).fetchone()
        if row is None:
            gone = self.db.execute(
                "SELECT claim_id, settled_at FROM pruned WHERE encounter_id = ?", (encounter_id,)
            ).fetchone()
            if gone is not None:
                raise ClaimPruned(encounter_id, gone[0], gone[1])
            return None
        return PriorClaim(row[0], row[1], self._parsed.get(row[2]), row[3], bool(row[4]))

    def billed_many(self, keys: Iterable[str]) -> dict[str, tuple[str, str | None, float]]:
        """What ``prior`` reads of each part of ``keys`` that a claim to a next payer needs,
        read together: by part, (claim id, the verdict it was built from as stored, 0.0),
        or, for a part pruned after settlement, (claim id, None, settled at); no entry when
        nothing was billed. ``billed_of`` answers from it as ``prior`` would. A batch of
        postings read each part's row with a query of its own, with columns the next
        payer's claim does not use (the payer's number, the refusal)."""
        keys = list(keys)
        out: dict[str, tuple[str, str | None, float]] = {}
        pruned = (
            "SELECT encounter_id, claim_id, settled_at FROM pruned WHERE encounter_id IN ({marks})"
        )
        for key, claim_id, settled_at in rows_in(self.db, pruned, keys):
            out[key] = (claim_id, None, settled_at)
        # Found by claim id where the file finds rows so, and kept only for the keys asked
        # (two parts' claim ids could only meet by a hash collision).
        column, ids = (
            ("claim_id", map(claim_id_for, keys)) if self.by_claim else ("encounter_id", keys)
        )
        submitted = (
            f"SELECT encounter_id, claim_id, billed FROM submitted WHERE {column} IN ({{marks}})"
        )
        wanted = set(keys)
        for key, claim_id, billed in rows_in(self.db, submitted, list(ids)):
            if key in wanted:
                out[key] = (claim_id, billed, 0.0)  # a submitted row first, as ``prior``
        return out

    def billed_payers(
        self, key: str, found: dict[str, tuple[str, str | None, float]], master: MasterData | None
    ) -> tuple[str, tuple[str, ...]] | None:
        """From what ``billed_many`` read: the claim id of part ``key`` and the payer ids of
        ``coverages_of`` its verdict with ``master``, when they were kept as it was billed
        (else None: ``billed_of`` reads the verdict); raises ``ClaimPruned`` as ``prior``."""
        row = _billed_row(key, found)
        if row is None or master is not self._payers_master:
            return None
        claim_id, billed = row
        payers = self._payers.get((claim_id, hash(billed)))
        return None if payers is None else (claim_id, payers)

    def _keep_payers(
        self, claim_id: str, text: str, verdict: ValidatedEncounter, master: MasterData | None
    ) -> tuple[str, ...] | None:
        """The payer ids a posting for ``claim_id`` will look for, kept while ``verdict``
        (billed as ``text``) is at hand; None when ``coverages_of`` refuses it (the posting
        then reads the verdict, and is refused as before)."""
        if master is not self._payers_master:
            self._payers.clear()
            self._payers_master = master
        try:
            payers = tuple(c.payer_id for c in coverages_of(verdict, master))
        except InputError:
            return None
        kept = self._payers
        kept[(claim_id, hash(text))] = payers
        if len(kept) > self.PAYERS_MAX:
            kept.popitem(last=False)  # the oldest
        return payers

    def billed_of(
        self, key: str, found: dict[str, tuple[str, str | None, float]]
    ) -> tuple[str, ValidatedEncounter] | None:
        """From what ``billed_many`` read: the claim id of part ``key`` and the verdict it
        was built from, None when nothing was billed; raises ``ClaimPruned`` as ``prior``."""
        row = _billed_row(key, found)
        return None if row is None else (row[0], self._parsed.get(row[1]))

    def holds(self, claim_id: str) -> bool:
        """Whether a claim under this id was submitted for an encounter of this store."""
        row = self.db.execute("SELECT 1 FROM submitted WHERE claim_id = ?", (claim_id,))
        return row.fetchone() is not None

    def answered(self, verdict_event_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM answered WHERE verdict_event_id = ?", (verdict_event_id,)
        ).fetchone()
        return row is not None

    def record(
        self,
        verdict: ValidatedEncounter,
        correction: Correction,
        planned: PlannedClaim | None,
        *,
        key: str | None = None,
        settled: bool = True,
        encoded: bytes | None = None,
        master: MasterData | None = None,
    ) -> None:
        """Remember the verdict as answered and, when a claim is sent, the claim (under
        ``key``, the claim's part of the encounter: ``claim_parts``). A new original gets
        its own payer claim control number: the previous claim's is dropped. ``settled``
        False: the caller knows the claim has no settlement to drop. ``encoded``: the
        bytes ``verdict`` was decoded from, kept as they are when the claim is built from
        ``verdict`` itself; ``master``: what the claim's payers are billed with
        (``billed_payers``)."""
        self.db.execute(
            "INSERT OR IGNORE INTO answered VALUES (?, ?)", (verdict.event_id, verdict.encounter_id)
        )
        if planned is None or correction.source is None:
            return
        if settled:
            # Sent again (a replacement, a void, a new original): not settled until its 835.
            self.db.execute("DELETE FROM settled WHERE claim_id = ?", (planned.claim_id,))
        kept = without_note(correction.source)
        text = billed_text(kept, encoded if kept is verdict else None)
        payers = self._keep_payers(planned.claim_id, text, kept, master)
        if payers is None or len(payers) > 1:
            # Kept parsed only where a posting may read it back: a next payer's claim is
            # built from it. Each verdict kept pushes out the oldest once PARSED_MAX are
            # kept, whose models were then freed long after they were built (in a
            # long-running stage ~10 us a keep, against ~2 us in one not yet full).
            self._parsed.keep(text, kept)
        self.db.execute(
            self._upsert,
            (
                key or verdict.encounter_id,
                planned.claim_id,
                planned.claim.frequency,
                planned.event_id,
                text,
            ),
        )

    def snapshot(self, encounter_id: str) -> list[tuple[object, ...]]:
        """The encounter's submitted rows (one per claim it bills) as they are now, for
        ``restore``."""
        rows = self.db.execute(
            "SELECT encounter_id, claim_id, frequency, claim_event_id, "
            "payer_claim_control_number, billed FROM submitted WHERE " + self._part("", 2),
            self._key(encounter_id, f"{encounter_id}/{PROFESSIONAL_PART}"),
        ).fetchall()
        return [tuple(row) for row in rows]

    def restore(
        self,
        verdict: ValidatedEncounter,
        snapshot: list[tuple[object, ...]],
        *,
        keep: Collection[str] = (),
    ) -> None:
        """Undo ``claims_for`` for a verdict whose claim never reached the payer (a dead
        letter): the verdict is not answered, so re-sending it bills again, and the encounter's
        last submitted claims are what they were before, except the claims in ``keep``
        (claim ids), which did go out: when one of an encounter's two claims is refused, the
        other stays recorded as sent, so the verdict sent again bills only the refused one."""
        self.db.execute("DELETE FROM answered WHERE verdict_event_id = ?", (verdict.event_id,))
        for key in (verdict.encounter_id, f"{verdict.encounter_id}/{PROFESSIONAL_PART}"):
            if claim_id_for(key) in keep:
                continue
            self.db.execute(f"DELETE FROM submitted WHERE {self._part()}", self._key(key))
            self.db.executemany(
                "INSERT INTO submitted VALUES (?, ?, ?, ?, ?, ?)",
                [row for row in snapshot if row[0] == key],
            )

    # --- retention (services/claims/retention.py decides; these only read and write) -----

    def settle(self, claim_id: str, status: str, settled_at: float, prune_after: float) -> None:
        """Remittance posted the claim's adjudication: its payloads may go after
        ``prune_after``. A later settlement (a corrected payment) moves the window."""
        self.db.execute(
            "INSERT INTO settled VALUES (?, ?, ?, ?) ON CONFLICT(claim_id) DO UPDATE SET "
            "status = excluded.status, settled_at = excluded.settled_at, "
            "prune_after = excluded.prune_after",
            (claim_id, status, settled_at, prune_after),
        )

    def reopen(self, claim_id: str) -> None:
        """A reversal: the claim is open again, nothing of it is pruned until it settles."""
        self.db.execute("DELETE FROM settled WHERE claim_id = ?", (claim_id,))

    def due(self, now: float) -> list[tuple[str, str, float]]:
        """(encounter part, claim id, settled at) of the stored verdicts whose claim's window
        has ended by ``now``."""
        rows = self.db.execute(
            "SELECT s.encounter_id, s.claim_id, t.settled_at FROM submitted s "
            "JOIN settled t ON t.claim_id = s.claim_id WHERE t.prune_after <= ?",
            (now,),
        )
        return [(str(k), str(c), float(t)) for k, c, t in rows.fetchall()]

    def window_ended(self, claim_ids: Sequence[str], now: float) -> bool:
        """Whether every one of ``claim_ids`` is settled and past its window."""
        for claim_id in claim_ids:
            row = self.db.execute(
                "SELECT prune_after FROM settled WHERE claim_id = ?", (claim_id,)
            ).fetchone()
            if row is None or row[0] > now:
                return False
        return True

    def prune(self, encounter_id: str, claim_id: str, settled_at: float, now: float) -> None:
        """Drop the stored verdict (demographics, diagnoses, lines) of a settled encounter
        part; ids and times stay, so a late correction is refused with the reason."""
        self.db.execute(f"DELETE FROM submitted WHERE {self._part()}", self._key(encounter_id))
        self.db.execute(
            "INSERT OR REPLACE INTO pruned VALUES (?, ?, ?, ?)",
            (encounter_id, claim_id, settled_at, now),
        )

    def set_payer_claim_control_number(self, claim_id: str, number: str) -> None:
        """The payer's number for a claim (from a 277CA or 835), for later 7s and 8s."""
        self.set_payer_claim_control_numbers([(claim_id, number)])

    def set_payer_claim_control_numbers(self, numbers: Iterable[tuple[str, str]]) -> None:
        """(claim id, the payer's number) of several claims. A number the claim already has
        is not written again (the 835 repeats the 277CA's): no change record for it."""
        rows = [(number, claim_id, number) for claim_id, number in numbers]
        if rows:  # a 999 names none: no statement
            self.db.executemany(
                "UPDATE submitted SET payer_claim_control_number = ? WHERE claim_id = ? "
                "AND payer_claim_control_number IS NOT ?",
                rows,
            )

    def record_rejection(
        self, rejection: ClaimRejection, claim_event_ids: Sequence[str] = ()
    ) -> None:
        """A claim the payer's front end refused, so that a corrected verdict bills it as a
        new original (or, for a refused 7 or 8, corrects the claim still live) instead of
        replacing a claim the payer never took. ``claim_event_ids``: the refused claim
        events when known (a 999 names the interchange, hence its claims); without them (a
        277CA names only the patient control number) the claim last submitted under the
        claim id. In the batch's transaction, like every other write here."""
        ids = list(claim_event_ids)
        if not ids:
            row = self.db.execute(
                "SELECT claim_event_id FROM submitted WHERE claim_id = ?", (rejection.claim_id,)
            ).fetchone()
            if row is None:
                return  # not a claim this store sent (another instance's, or before the store)
            ids = [row[0]]
        self.db.executemany(
            "INSERT OR IGNORE INTO rejected VALUES (?, ?, ?, ?)",
            [(eid, rejection.claim_id, rejection.source, rejection.event_id) for eid in ids],
        )

    def claims_for(
        self,
        verdict: ValidatedEncounter,
        *,
        fee_schedule: FeeSchedule | None = None,
        drg_base_rate: Decimal = DEFAULT_DRG_BASE_RATE,
        master: MasterData | None = None,
        stored: Stored | None = None,
        encoded: bytes | None = None,
    ) -> list[PlannedClaim]:
        """The claims a verdict asks for (none, an original, a replacement or a void),
        remembered in the batch's transaction; a verdict already answered asks for none.
        ``stored``: what ``look`` read of the verdict just before (the caller's snapshot);
        ``encoded``: the Avro record ``verdict`` was decoded from, if at hand."""
        if stored is None:
            stored = self.look(verdict)
        if stored.answered:
            return []
        out: list[PlannedClaim] = []
        for key, part in claim_parts(verdict):
            prior = self._prior_in(stored, key)
            correction = decide(prior, part)
            first = prior is None and correction.kind == "original"
            planned = plan(
                correction,
                part,
                first_original=first,
                fee_schedule=fee_schedule,
                drg_base_rate=drg_base_rate,
                master=master,
                claim_id=claim_id_for(key),
            )
            settled = planned is not None and planned.claim_id in stored.settled
            self.record(
                part,
                correction,
                planned,
                key=key,
                settled=settled,
                encoded=encoded if part is verdict else None,
                master=master,
            )
            if planned is not None:
                out.append(planned)
        return out
