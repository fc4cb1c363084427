"""Bill the next payer once a payer's adjudication is posted (coordination of benefits).

An encounter's coverages are in order (``coverage`` the primary, then ``other_coverages``).
When remittance posts a payer's 835 for one of the encounter's claims (remittance.posted.v1),
``next_claim`` decides what follows:

- the payer forwarded the claim itself (a crossover: CLP02 19/20/21, or NM1*TT): nothing is
  billed; the next payer's 835 will come on its own, and is posted as that payer's;
- the payer was the last coverage, or left nothing to the patient: nothing is billed, and
  what it left (if anything) is the patient's only now;
- otherwise the claim goes to the next payer: the same encounter, the next coverage in the
  2000B (SBR01 S, then T), and every payer before it in 2320/2330 with its adjudication
  (``cob.py``), as an original under the claim id ``<primary claim id>-<position>``.

A reversal is not a new adjudication and bills nothing; a payer that is not one of the
encounter's coverages bills nothing (noted). ``CobLedger`` keeps each payer's posting per
encounter and position (but the last payer's, from which no claim is built), and which
positions were billed, in the claims stage's state folder, so a redelivered posting bills
nothing twice and a tertiary claim finds the primary's and the secondary's adjudications.
It keeps a posting as its remittance.posted.v1 record in base64
(``services/claims/parsed.py``): the bytes the stage received; the JSON older versions kept
is still read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipeline.models import Coverage, RemittancePosting, ValidatedEncounter
from pipeline.row_changelog import RowChangelogStore
from pipeline.state import rows_in
from services.claims.cob import SEQUENCE_CODES, prior_payer
from services.claims.domain import (
    PROFESSIONAL_PART,
    PlannedClaim,
    billed_coverages,
    claim_event_id,
    claim_id_for,
    claim_type_for,
)
from services.claims.parsed import STORE_PAGE_SIZE, Parsed, avro_text
from services.claims.x12_837_common import ClaimInput
from services.refdata.masterdata import MasterData

NO_CONTRACT = "none: no contract with the payer after the primary"

POSTINGS = "remittance.posted.v1"
"""The topic whose schema the stored postings are encoded with (that of the postings the
stage reads, claims.postings-by-encounter.v1: the same bytes re-keyed)."""


def claim_id_at(primary_claim_id: str, position: int) -> str:
    """The claim id of the claim to the payer at ``position`` (1 is the primary's own)."""
    return primary_claim_id if position == 1 else f"{primary_claim_id}-{position}"


def primary_claim_id(claim_id: str) -> str:
    """The primary's claim id of a claim to a later payer (``<id>-2`` -> ``<id>``)."""
    base, _, suffix = claim_id.rpartition("-")
    return base if base and suffix in ("2", "3") else claim_id


def part_key(encounter_id: str, claim_id: str) -> str | None:
    """Which part of the encounter a primary claim id bills: the encounter (its one claim,
    or a facility stay's 837I) or the physician's 837P beside it; None when neither."""
    for key in (encounter_id, f"{encounter_id}/{PROFESSIONAL_PART}"):
        if claim_id_for(key) == claim_id:
            return key
    return None


def coverages_of(verdict: ValidatedEncounter, master: MasterData | None = None) -> list[Coverage]:
    """The encounter's coverages in coordination-of-benefits order, as each is billed (the
    payer registry's electronic id and filing indicator for the claim type, when it knows
    the payer): what the payers' 835s and the 2320/2330 loops name."""
    enc = verdict.coded.encounter
    coverages = [enc.coverage, *enc.other_coverages]
    return billed_coverages(master, coverages, claim_type_for(enc.setting))


def position_of(payer_id: str, coverages: Sequence[Coverage]) -> int | None:
    """1-based place of the payer among the coverages; None when it is none of them."""
    return position_among(payer_id, [coverage.payer_id for coverage in coverages])


def position_among(payer_id: str, payers: Sequence[str]) -> int | None:
    """``position_of`` by the coverages' payer ids (``SubmittedClaims.billed_payers``)."""
    for position, payer in enumerate(payers, start=1):
        if payer == payer_id:
            return position
    return None


def bills_none(posting: RemittancePosting, position: int, coverages: Sequence[object]) -> bool:
    """Whether ``next_claim`` answers a posting by the payer at ``position`` with no claim
    whatever the earlier payers' adjudications are (a reversal, a crossover, the last payer,
    nothing left to the patient): the caller need not read them (most postings bill no
    one: 688 of 775 in the claims stage benchmark)."""
    return no_claim(posting, position, coverages) is not None


def last_payer(position: int, coverages: Sequence[object]) -> bool:
    """Whether the payer at ``position`` is the last one billed (the last coverage, or the
    third): no payer's claim comes after it, so no claim is ever built from its posting."""
    return position >= min(len(coverages), len(SEQUENCE_CODES))


@dataclass(frozen=True)
class NextClaim:
    """What a posting asks of the claims stage: a claim to the next payer, or why none."""

    planned: PlannedClaim | None
    reason: str
    position: int | None = None  # the posting payer's place among the coverages
    #: The next payer is owed a claim, but the adjudications of the payers before this one
    #: are not all in the ledger: a claim that should go out and does not (warned, counted).
    missing: bool = False


def next_claim(
    posting: RemittancePosting,
    verdict: ValidatedEncounter,
    primary_claim_id: str,
    earlier: Sequence[RemittancePosting] = (),
    master: MasterData | None = None,
    coverages: Sequence[Coverage] | None = None,
) -> NextClaim:
    """The claim to the payer after the one that posted, or why there is none.

    ``earlier``: the postings of the payers before this one, in order (the primary's for a
    tertiary claim); ``master``: the payer registry (how each payer is billed, and whether
    it takes secondary claims electronically); ``coverages``: ``coverages_of(verdict,
    master)`` when the caller has worked them out.
    """
    if coverages is None:
        coverages = coverages_of(verdict, master)
    position = position_of(posting.payer_id, coverages)
    if position is None:
        return NextClaim(None, f"payer {posting.payer_id} is none of the encounter's coverages")
    if (none := no_claim(posting, position, coverages)) is not None:
        return none
    if len(earlier) != position - 1:
        return NextClaim(
            None, f"the adjudications of payers 1..{position - 1} are missing", missing=True
        )
    coverage = coverages[position]
    registered = master.payers.find(coverage.payer_id) if master is not None else None
    if registered is not None and not registered.secondary_electronic:
        return NextClaim(None, f"payer {coverage.payer_id} takes secondary claims on paper only")
    priors = tuple(prior_payer(p, coverages[i], i + 1) for i, p in enumerate([*earlier, posting]))
    coded = verdict.coded
    enc = coded.encounter
    claim_id = claim_id_at(primary_claim_id, position + 1)
    planned = PlannedClaim(
        event_id=claim_event_id(claim_id),
        claim=ClaimInput(
            claim_id,
            coded,
            billed_coverage=coverage,
            prior_payers=priors,
            later_payers=tuple(coverages[position + 1 : len(SEQUENCE_CODES)]),
        ),
        claim_type=claim_type_for(enc.setting),
        encounter_id=verdict.encounter_id,
        payer_id=coverage.payer_id,
        payer_name=coverage.payer_name,
        total_charge=sum((line.charge for line in coded.lines), Decimal("0")),
        expected=None,
        expected_basis=NO_CONTRACT,
        line_count=len(coded.lines),
        service_start=enc.service_start,
        service_end=enc.service_end,
        rule_pack_version=verdict.rule_pack_version,
        submitted_at=posting.posted_at,
    )
    return NextClaim(planned, f"billed to payer {position + 1}", position)


def no_claim(
    posting: RemittancePosting, position: int, coverages: Sequence[object]
) -> NextClaim | None:
    """Why the posting of the payer at ``position`` bills no one whatever the encounter and
    the earlier payers' adjudications are (``bills_none``), or None. ``coverages``: the
    encounter's coverages, or their payer ids (only how many there are counts here)."""
    if posting.status == "reversed":
        return NextClaim(None, "a reversal: no new adjudication", position)
    if posting.crossover_payer:
        return NextClaim(
            None, f"crossed over to {posting.crossover_payer}: its 835 will come", position
        )
    if last_payer(position, coverages):
        return NextClaim(None, "the last payer: what is left is the patient's", position)
    if posting.patient_responsibility <= 0:
        return NextClaim(None, "nothing left for the next payer", position)
    return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cob_postings (
    encounter_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    posting TEXT NOT NULL,          -- the RemittancePosting: Avro in base64, or older JSON
    PRIMARY KEY (encounter_id, position)
);
CREATE TABLE IF NOT EXISTS cob_billed (
    encounter_id TEXT NOT NULL,
    position INTEGER NOT NULL,      -- the payer billed
    claim_id TEXT NOT NULL,
    PRIMARY KEY (encounter_id, position)
);
"""


class CobLedger(RowChangelogStore):
    """Each payer's adjudication per encounter, and the claims billed to later payers.

    The service keeps one per partition of encounters.validated.v1 (``changelog=True``)."""

    FILENAME = "claims-cob.sqlite3"
    TABLES = ("cob_postings", "cob_billed")

    #: Postings kept parsed, by their stored text: a later payer's claim reads the earlier
    #: payers' postings back soon after they were recorded.
    PARSED_MAX = 2048

    def __init__(self, path: Path | str, *, changelog: bool = False) -> None:
        super().__init__(path, _SCHEMA, self.TABLES, changelog=changelog, page_size=STORE_PAGE_SIZE)
        self._parsed = Parsed.of_topic(POSTINGS, RemittancePosting, self.PARSED_MAX)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> CobLedger:
        return cls(Path(state_dir) / cls.FILENAME)

    def record(
        self,
        encounter_id: str,
        position: int,
        posting: RemittancePosting,
        encoded: bytes | None = None,
        *,
        read_soon: bool = True,
    ) -> None:
        """Keep the payer's latest adjudication that is not a reversal (``encoded``: the
        record it was decoded from, kept as it is). ``read_soon`` False: no later payer is
        billed from it (``bills_none``), so it is stored without being kept parsed too
        (``earlier`` parses it if it is ever read)."""
        if posting.status == "reversed":
            return
        text = avro_text(POSTINGS, posting, encoded)
        if read_soon:
            self._parsed.keep(text, posting)
        self.db.execute(
            "INSERT INTO cob_postings VALUES (?, ?, ?) ON CONFLICT (encounter_id, position) "
            "DO UPDATE SET posting = excluded.posting",
            (encounter_id, position, text),
        )

    def earlier(self, encounter_id: str, position: int) -> list[RemittancePosting]:
        """The adjudications of the payers before ``position``, in order."""
        rows = self.db.execute(
            "SELECT posting FROM cob_postings WHERE encounter_id = ? AND position < ? "
            "ORDER BY position",
            (encounter_id, position),
        ).fetchall()
        return [self._parsed.get(row[0]) for row in rows]

    def billed(self, encounter_id: str, position: int) -> str | None:
        """The claim id already billed to the payer at ``position``, if any."""
        row = self.db.execute(
            "SELECT claim_id FROM cob_billed WHERE encounter_id = ? AND position = ?",
            (encounter_id, position),
        ).fetchone()
        return str(row[0]) if row else None

    def billed_many(self, encounter_ids: Iterable[str]) -> set[tuple[str, int]]:
        """(encounter, position) of every payer already billed for ``encounter_ids``: what
        ``billed`` answers for each, read together (a batch of postings read its own each)."""
        sql = "SELECT encounter_id, position FROM cob_billed WHERE encounter_id IN ({marks})"
        return {(str(e), int(p)) for e, p in rows_in(self.db, sql, encounter_ids)}

    def later_claims(self, encounter_id: str) -> list[str]:
        """The claim ids billed to the payers after the first, for retention: a verdict is
        kept until every payer's claim built from it is settled."""
        rows = self.db.execute(
            "SELECT claim_id FROM cob_billed WHERE encounter_id = ? ORDER BY position",
            (encounter_id,),
        )
        return [str(row[0]) for row in rows.fetchall()]

    def mark_billed(self, encounter_id: str, position: int, claim_id: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO cob_billed VALUES (?, ?, ?)", (encounter_id, position, claim_id)
        )

    def unmark_billed(self, encounter_id: str, position: int) -> None:
        """The claim never reached the payer (a dead letter): bill it when asked again."""
        self.db.execute(
            "DELETE FROM cob_billed WHERE encounter_id = ? AND position = ?",
            (encounter_id, position),
        )
