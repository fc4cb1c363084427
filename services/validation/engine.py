"""The scrubber's engine: rules, rule packs and the verdict.

A rule is a small check function registered with ``@rule``: an id that never changes, a
category, a severity (``error`` rejects the claim, ``warning`` lets it go with a warning,
``info`` only informs), the dates of service it applies to, the settings it applies to,
a one-sentence explanation and a fix hint. Each hit names the field (a dotted path into
the coded encounter) and, for line edits, the line.

A rule pack is an id plus the rules it runs (with optional severity overrides) and its
settings (timely-filing days per payer). The pack id is recorded on every verdict and is
part of the verdict's event id, so re-validating with another pack (a replay) yields new
events, and re-validating with the same pack yields the same ones.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar, overload

from pipeline.models import CodedEncounter, EditHit, ServiceLine, ValidatedEncounter, event_id
from pipeline.serde import model_maker
from services.refdata import ub04
from services.refdata.codesets import CodeCheck, CodeSets, MceClaim, coding_date, normalize_code
from services.refdata.payers import EMPTY_REGISTRY, ClaimType, PayerEntry, PayerRegistry

STAGE = "validation"

Severity = Literal["error", "warning", "info"]
Outcome = Literal["clean", "warnings", "rejected"]
Setting = Literal["professional", "outpatient", "inpatient"]

_SEX = {"M": 0, "F": 1}

T = TypeVar("T")


class Hit(NamedTuple):
    """One place a rule fired: the field, the message, the line (if any) and how to fix it.

    A named tuple, not a frozen dataclass: as immutable, and made in 0.24 us instead of 0.57
    (a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``); the
    stage benchmark's office visits make about two per encounter."""

    field: str
    message: str
    line: int | None = None
    fix_hint: str | None = None


class ClaimHistory(Protocol):
    """Claims already seen across the stream, for the duplicate-claim edit."""

    def earlier_duplicate(self, coded: CodedEncounter) -> str | None:
        """The encounter id of an earlier billable claim this one duplicates, if any."""
        ...


class _once(Generic[T]):  # noqa: N801 - used as a decorator, like functools.cached_property
    """``functools.cached_property`` without its lock (one runner thread works on a context):
    the value is worked out on the first look and kept in the instance, where later looks
    find it without calling the descriptor. A context lives for one encounter, so every
    look at one of its shared facts was a first look under the lock of Python 3.11."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _once[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | _once[T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class Context:
    """What every rule may look at, with the derived facts several rules share."""

    def __init__(
        self,
        coded: CodedEncounter,
        codesets: CodeSets,
        validated_at: datetime,
        pack: RulePack,
        history: ClaimHistory | None = None,
        payers: PayerRegistry = EMPTY_REGISTRY,
    ) -> None:
        self.coded = coded
        self.codesets = codesets
        self.validated_at = validated_at
        self.pack = pack
        self.history = history
        self.payers = payers
        enc = coded.encounter
        self.setting: str = enc.setting
        self.on: date = coding_date(enc.setting, enc.service_start, enc.service_end)
        """The date whose code set applies (discharge for inpatient stays)."""

    @_once
    def payer(self) -> PayerEntry | None:
        """The payer's registry entry (``CLAIMFLOW_PAYER_REGISTRY``), by id, else by name."""
        cov = self.coded.encounter.coverage
        return self.payers.find(cov.payer_id, cov.payer_name)

    @property
    def claim_type(self) -> ClaimType:
        """The 837 the encounter is billed on: professional (837P), else institutional."""
        return "professional" if self.setting == "professional" else "institutional"

    @_once
    def age(self) -> int | None:
        """Age in whole years at admission (inpatient) or at the start of service."""
        enc = self.coded.encounter
        dob = enc.patient.birth_date
        if dob is None:
            return None
        at = enc.admission_date or enc.service_start
        years = at.year - dob.year - ((at.month, at.day) < (dob.month, dob.day))
        return years if 0 <= years <= 124 else None

    @_once
    def facility_lines(self) -> list[tuple[int, ServiceLine]]:
        """(position, line) of the lines billed on a facility claim (837I), found once for
        the dozen institutional rules that ask."""
        return [
            (i, line)
            for i, line in enumerate(self.coded.lines)
            if ub04.line_claim_type(line, self.setting) == "institutional"
        ]

    @_once
    def dx_checks(self) -> list[CodeCheck]:
        """Each diagnosis checked on ``on`` (``CodeSets.icd10cm``), asked once for the two
        rules that look at every diagnosis (CF-CODE-001 invalid, CF-CODE-002 not billable)."""
        icd10cm, on = self.codesets.icd10cm, self.on
        return [icd10cm(dx.code, on) for dx in self.coded.diagnoses]

    @_once
    def line_checks(self) -> list[tuple[int, ServiceLine, CodeCheck]]:
        """(position, line, check) of each line with a CPT/HCPCS code, checked on its date
        (``CodeSets.procedure``), asked once for CF-CODE-003 and CF-CODE-005 (a facility
        line billed by its revenue code alone has none)."""
        procedure = self.codesets.procedure
        return [
            (i, line, procedure(line.code, line.service_date))
            for i, line in enumerate(self.coded.lines)
            if line.code is not None
        ]

    @_once
    def bill(self) -> ub04.TypeOfBill | None:
        """The facility claim's type of bill (UB-04 FL4) as coded, else as the encounter
        states it, else an original for the setting; None when there is none or it is not
        one. Found once for the institutional rules that ask."""
        try:
            return ub04.type_of_bill_for(
                self.setting, self.coded.type_of_bill or self.coded.encounter.type_of_bill
            )
        except ValueError:
            return None

    @_once
    def discharge_status(self) -> int | None:
        """The UB-04 discharge status as a number, or None when absent or not a number."""
        raw = (self.coded.encounter.discharge_status or "").strip()
        if not raw and (self.coded.type_of_bill or "")[-1:] in ub04.INTERIM:
            return int(ub04.STILL_A_PATIENT)  # an interim bill: the patient is still in
        return int(raw) if raw.isdigit() else None

    @_once
    def mce_patient(self) -> tuple[date, int, int, int]:
        """What the MCE is told of this claim besides its codes: the date, the patient's
        age, sex and the discharge status (the editor's defaults where one is unknown)."""
        return (
            self.on,
            self.age if self.age is not None else 0,
            _SEX.get(self.coded.encounter.patient.sex, 2),
            self.discharge_status or 1,
        )

    def mce_claim(self, pdx: str, sdx: tuple[str, ...] = (), pcs: tuple[str, ...] = ()) -> MceClaim:
        """An MCE question with this patient's age, sex and discharge status."""
        on, age, sex, discharge_status = self.mce_patient
        return MceClaim(
            on=on, age=age, sex=sex, discharge_status=discharge_status, pdx=pdx, sdx=sdx, pcs=pcs
        )

    def mce_edits(
        self, pdx: str, sdx: tuple[str, ...] = (), pcs: tuple[str, ...] = ()
    ) -> frozenset[str] | None:
        """The MCE's edits for ``mce_claim(pdx, sdx, pcs)``, asked without building it."""
        return self.codesets.mce_edits_of(*self.mce_patient, pdx, sdx, pcs)

    @_once
    def mce(self) -> frozenset[str]:
        """Edit names the Medicare Code Editor raises for the whole claim (empty if none
        or when the date is outside the tables, which CF-CODE-000 reports)."""
        dxs = [normalize_code(d.code) for d in self.coded.diagnoses]
        if not dxs or self.age is None:
            return frozenset()
        # ``mce_edits`` inlined and no generator for the (usually no) procedures: worked out
        # for every encounter, and on an answer the cache has, 3.36 us became 2.86.
        procedures = self.coded.pcs_procedures
        pcs = tuple([normalize_code(p.code) for p in procedures]) if procedures else ()
        on, age, sex, discharge_status = self.mce_patient
        edits = self.codesets.mce_edits_of(
            on, age, sex, discharge_status, dxs[0], tuple(dxs[1:]), pcs
        )
        return edits or frozenset()


Check = Callable[[Context], Iterable[Hit]]
"""A rule's check: its hits on the context, from a generator or as a sequence (``Hits``)."""

Hits = Sequence[Hit]
"""The hits of a check written as a plain function: a tuple or a list, ``NONE`` for none.
Most checks find nothing on most encounters, and a generator that yields nothing still
costs its making and a run to its end: a plain function returning ``NONE`` took 0.055 us
where the generator took 0.09 (60 empty checks: 5.4 -> 3.3 us, timeit)."""

NONE: tuple[Hit, ...] = ()

Need = Callable[[Context], object]
"""A fact of the encounter (true or false) without which a rule cannot find anything: the
rule's check is not called when it is false (``RulePack.checking``)."""


def facility_lines(ctx: Context) -> object:
    """The encounter bills lines on a facility claim (837I)."""
    return ctx.facility_lines


def facility_bill(ctx: Context) -> object:
    """The encounter has a type of bill (``Context.bill``): stated, or its facility setting's."""
    return ctx.bill is not None


def encounter_notes(ctx: Context) -> object:
    """Intake left notes on the encounter (what it could not carry)."""
    return ctx.coded.encounter.notes


def review_reasons(ctx: Context) -> object:
    """Coding asked a coder to confirm something."""
    return ctx.coded.review_reasons


def pcs_procedures(ctx: Context) -> object:
    """The encounter has ICD-10-PCS procedures."""
    return ctx.coded.pcs_procedures


def ub04_code_lists(ctx: Context) -> object:
    """The encounter has occurrence, occurrence span, value or condition codes."""
    enc = ctx.coded.encounter
    return enc.occurrence_codes or enc.occurrence_spans or enc.value_codes or enc.condition_codes


def mce_edits(ctx: Context) -> object:
    """The Medicare Code Editor raises an edit on the claim."""
    return ctx.mce


@dataclass(frozen=True)
class Rule:
    """An edit: id, category, severity, where it applies, why, how to fix, and the check."""

    id: str
    severity: Severity
    category: str
    explanation: str
    fix_hint: str | None
    check: Check
    effective_from: date | None = None
    effective_to: date | None = None
    settings: frozenset[str] | None = None
    per_claim: bool = True
    """False for a rule about the encounter as a whole (duplicate encounters): it runs once,
    not on each claim of an encounter that bills two."""
    needs: Need | None = None
    """A fact without which the check finds nothing (``Need``): not called when it is false."""

    def applies(self, ctx: Context) -> bool:
        """True when the encounter's setting and date of service are in the rule's scope."""
        if self.settings is not None and ctx.setting not in self.settings:
            return False
        if self.effective_from is not None and ctx.on < self.effective_from:
            return False
        return self.effective_to is None or ctx.on <= self.effective_to


REGISTRY: dict[str, Rule] = {}
"""Every rule any module defines, by id; packs choose among them."""


def rule(
    rule_id: str,
    severity: Severity,
    explanation: str,
    *,
    category: str,
    fix_hint: str | None = None,
    effective_from: date | None = None,
    effective_to: date | None = None,
    settings: tuple[Setting, ...] | None = None,
    per_claim: bool = True,
    needs: Need | None = None,
) -> Callable[[Check], Check]:
    """Register a check function as a rule; its id must be new. ``needs``: a fact of the
    encounter without which the check can find nothing (the rule is then not called)."""

    def register(check: Check) -> Check:
        if rule_id in REGISTRY:
            raise ValueError(f"rule {rule_id} is defined twice")
        REGISTRY[rule_id] = Rule(
            rule_id,
            severity,
            category,
            explanation,
            fix_hint,
            check,
            effective_from,
            effective_to,
            frozenset(settings) if settings is not None else None,
            per_claim,
            needs,
        )
        return check

    return register


@dataclass(frozen=True, eq=False)
class RulePack:
    """A versioned set of rules: the id goes on every verdict."""

    id: str
    rule_ids: tuple[str, ...]
    description: str
    severities: Mapping[str, Severity] = field(default_factory=dict)
    """Per-rule severity overrides (a payer that rejects what the default only warns on)."""
    timely_filing_days: Mapping[str, int] = field(default_factory=lambda: {"*": 365})
    """Days from the last date of service a payer accepts a claim; "*" for any other payer."""

    @functools.cached_property
    def rules(self) -> tuple[Rule, ...]:
        """The pack's rules in pack order (every id must be registered)."""
        missing = [r for r in self.rule_ids if r not in REGISTRY]
        if missing:
            import services.validation.rules  # noqa: F401 - importing it registers every rule

            missing = [r for r in self.rule_ids if r not in REGISTRY]
        if missing:
            raise KeyError(f"rule pack {self.id} names unknown rules: {', '.join(missing)}")
        return tuple(REGISTRY[r] for r in self.rule_ids)

    @functools.cached_property
    def _bounds(self) -> list[date]:
        """The days on which one of the pack's rules starts or stops applying: between two of
        them, whether each rule applies depends on the setting only."""
        days = {r.effective_from for r in self.rules if r.effective_from is not None}
        days |= {
            r.effective_to + timedelta(days=1)
            for r in self.rules
            if r.effective_to is not None and r.effective_to < date.max
        }
        return sorted(days)

    @functools.cached_property
    def _applying(self) -> dict[tuple[str, int], tuple[Rule, ...]]:
        return {}

    def applying(self, ctx: Context) -> tuple[Rule, ...]:
        """The pack's rules that apply to the context (``Rule.applies``), in pack order:
        worked out once per setting and span of dates between two ``_bounds``."""
        key = (ctx.setting, bisect.bisect_right(self._bounds, ctx.on))
        rules = self._applying.get(key)
        if rules is None:
            rules = tuple(r for r in self.rules if r.applies(ctx))
            if len(self._applying) < _APPLYING_KEPT:  # settings are few; any other is not kept
                self._applying[key] = rules
        return rules

    @functools.cached_property
    def _checking(
        self,
    ) -> dict[
        tuple[str, int],
        tuple[tuple[Rule, ...], tuple[Need, ...], dict[tuple[bool, ...], tuple[Rule, ...]]],
    ]:
        return {}

    def checking(self, ctx: Context) -> tuple[Rule, ...]:
        """The rules ``applying`` to the context whose ``needs`` the encounter meets, in
        pack order: the rules left out could find nothing, so the hits are those of every
        applying rule (tests/unit/test_validation_checking.py judges by ``applying``).

        Every applying rule's check was called on every encounter, and most find nothing: a
        generator made and run to its end for each of the eleven UB-04/837I rules of an
        office visit, the notes, review, procedure and MCE rules of an encounter with none
        (on the stage benchmark's office visits, 20 of the 59 applying rules). The needs
        are a few facts asked once per encounter; the rules they leave are worked out once
        per setting, span of dates and answer."""
        key = (ctx.setting, bisect.bisect_right(self._bounds, ctx.on))
        entry = self._checking.get(key)
        if entry is None:
            rules = self.applying(ctx)
            needs = tuple(dict.fromkeys(r.needs for r in rules if r.needs is not None))
            entry = (rules, needs, {})
            if len(self._checking) < _APPLYING_KEPT:
                self._checking[key] = entry
        rules, needs, by_answer = entry
        answer = tuple([not need(ctx) for need in needs])
        checked = by_answer.get(answer)
        if checked is None:
            unmet = {need for need, no in zip(needs, answer, strict=True) if no}
            checked = by_answer[answer] = tuple(r for r in rules if r.needs not in unmet)
        return checked

    def severity(self, rule: Rule) -> Severity:
        """The severity this pack gives the rule."""
        return self.severities.get(rule.id, rule.severity)

    def filing_limit_days(self, payer_id: str) -> int:
        """Timely-filing limit for the payer, in days after the last date of service."""
        return self.timely_filing_days.get(payer_id, self.timely_filing_days.get("*", 365))

    def derive(
        self,
        pack_id: str,
        *,
        description: str | None = None,
        add: tuple[str, ...] = (),
        remove: tuple[str, ...] = (),
        severities: Mapping[str, Severity] | None = None,
        timely_filing_days: Mapping[str, int] | None = None,
    ) -> RulePack:
        """A new pack from this one: rules added or removed, severities or settings changed."""
        ids = tuple(r for r in self.rule_ids if r not in remove) + tuple(
            r for r in add if r not in self.rule_ids
        )
        return RulePack(
            id=pack_id,
            rule_ids=ids,
            description=description or f"{self.id} with changes",
            severities={**self.severities, **(severities or {})},
            timely_filing_days={**self.timely_filing_days, **(timely_filing_days or {})},
        )


_APPLYING_KEPT = 256

PACKS: dict[str, RulePack] = {}


def register_pack(pack: RulePack) -> RulePack:
    """Make a pack selectable by id (CLAIMFLOW_VALIDATION__RULE_PACK, ``replay --rule-pack``)."""
    known = PACKS.get(pack.id)
    if known is not None and known is not pack:
        raise ValueError(f"rule pack {pack.id} is already registered")
    PACKS[pack.id] = pack
    return pack


def outcome_of(edits: list[EditHit]) -> Outcome:
    """rejected on any error, warnings on any warning, else clean (info never counts)."""
    severities = {e.severity for e in edits}
    if "error" in severities:
        return "rejected"
    if "warning" in severities:
        return "warnings"
    return "clean"


def run(
    coded: CodedEncounter,
    codesets: CodeSets,
    pack: RulePack,
    *,
    validated_at: datetime,
    history: ClaimHistory | None = None,
    payers: PayerRegistry = EMPTY_REGISTRY,
) -> ValidatedEncounter:
    """Run every rule of the pack that applies to the encounter and give the verdict.

    An encounter that bills two claims (a facility's 837I and its physician's 837P,
    ``ub04.claim_parts``) is judged as each claim will be written: every rule runs on each
    part as that claim sees it, so the 837P's edits (12 diagnoses, pointers, NCCI and MUE
    among professional lines, the professional billing provider …) judge the professional
    lines and the 837I's the facility lines. A hit both parts give is reported once; a
    hit of one part only says which claim (``Hit`` fields and lines keep pointing into the
    encounter). Rules about the encounter as a whole (``per_claim=False``) run once."""
    if not two_claims(coded):
        ctx = Context(coded, codesets, validated_at, pack, history, payers)
        found = [(r, hit) for r in pack.checking(ctx) for hit in r.check(ctx)]
    else:
        kinds = ub04.claim_kinds(coded)
        found = _split_hits(coded, kinds, codesets, validated_at, pack, history, payers)
    edits = [_edit(r, pack.severity(r), hit) for r, hit in found]
    return _validated(
        event_id=event_id(coded.event_id, STAGE, pack.id),
        encounter_id=coded.encounter_id,
        outcome=outcome_of(edits),
        edits=edits,
        rule_pack_version=pack.id,
        coded=coded,
        validated_at=validated_at,
    )


def two_claims(coded: CodedEncounter) -> bool:
    """Whether the encounter bills two claims: ``len(ub04.claim_kinds(coded)) == 2``, its
    lines of two claim types (``ub04.line_claim_type``), found without the set of them or a
    call per line; nearly every encounter bills one (tests/unit/test_validation_checking.py
    judges it by ``claim_kinds``)."""
    setting = coded.encounter.setting
    own: ClaimType = "professional" if setting == "professional" else "institutional"
    first = None
    for line in coded.lines:
        kind = line.claim_type
        if kind is None:
            kind = own
        if first is None:
            first = kind
        elif kind != first:
            return True
    return False


#: The verdict and its edits made unvalidated (``model_maker``): their values are the rules'
#: hits (typed strings and line numbers), the pack's and the coded encounter as decoded,
#: so validating them only cost CPU: ~2.7 of 5.3 us per verdict of the stage benchmark's
#: office visits (1.99 edits at 1.7 us and the verdict at 1.85 us validated; 0.85 made).
#: tests/unit/test_validation_makers.py judges them by the validating constructors.
_edit_hit = model_maker(EditHit)
_validated = model_maker(ValidatedEncounter)


def _edit_made(rule: Rule, severity: Severity, hit: Hit) -> EditHit:
    """The verdict's edit for a rule's hit."""
    return _edit_hit(  # type: ignore[no-any-return]
        rule_id=rule.id,
        severity=severity,
        line=hit.line,
        field=hit.field,
        message=hit.message,
        category=rule.category,
        fix_hint=hit.fix_hint or rule.fix_hint,
    )


#: The edits made so far, by their values: one (frozen) model serves every verdict with the
#: same edit, as the Avro reader shares the edits it reads (``pipeline/avro_read.py``'s
#: ``KEPT``). Edits repeat: a rule's message about a code, a payer, a table that is off (the
#: stage benchmark's 995 office verdicts: 2 edits each, 2 distinct, the NCCI and MUE tables
#: being off). Making one cost 0.88 us, finding it 0.18. Bounded: emptied when full.
_EDITS: dict[tuple[Any, ...], EditHit] = {}
_EDITS_KEPT = 4096


def _edit(rule: Rule, severity: Severity, hit: Hit) -> EditHit:
    """``_edit_made``, kept by its values (``_EDITS``)."""
    fix_hint = hit.fix_hint or rule.fix_hint
    key = (rule.id, severity, rule.category, hit.line, hit.field, hit.message, fix_hint)
    edit = _EDITS.get(key)
    if edit is None:
        edit = _edit_made(rule, severity, hit)
        if len(_EDITS) >= _EDITS_KEPT:
            _EDITS.clear()
        _EDITS[key] = edit
    return edit


_PART_NAMES: dict[ClaimType, str] = {
    "institutional": "the facility's 837I",
    "professional": "the physician's 837P",
}
_LINE_FIELD = re.compile(r"^lines\[(\d+)\]")
_PRO_BILLING = "encounter.professional_billing_provider"
_BILLING = re.compile(r"^encounter\.billing_provider")


def _split_hits(
    coded: CodedEncounter,
    kinds: list[ClaimType],
    codesets: CodeSets,
    validated_at: datetime,
    pack: RulePack,
    history: ClaimHistory | None,
    payers: PayerRegistry,
) -> list[tuple[Rule, Hit]]:
    """The hits of every rule on each claim part of a split encounter (see ``run``)."""
    whole = Context(coded, codesets, validated_at, pack, history, payers)
    found: dict[tuple[str, str, int | None, str], tuple[Rule, Hit, set[ClaimType]]] = {}

    def add(r: Rule, hit: Hit, kind: ClaimType | None) -> None:
        key = (r.id, hit.field, hit.line, hit.message)
        _, _, parts = found.setdefault(key, (r, hit, set()))
        if kind is not None:
            parts.add(kind)

    for r in pack.checking(whole):
        if not r.per_claim:
            for hit in r.check(whole):
                add(r, hit, None)
    setting = coded.encounter.setting
    pro_billing = coded.encounter.professional_billing_provider is not None
    for kind in kinds:
        part = ub04.claim_part(coded, kind, renumber=False)
        # lines[i] of the part is lines[index[i]] of the encounter
        index = [j for j, ln in enumerate(coded.lines) if ub04.line_claim_type(ln, setting) == kind]
        ctx = Context(part, codesets, validated_at, pack, history, payers)
        for r in pack.checking(ctx):
            if not r.per_claim:
                continue
            for hit in r.check(ctx):
                field = _in_encounter(hit.field, index)
                if kind == "professional" and pro_billing:
                    field = _BILLING.sub(_PRO_BILLING, field)
                add(r, Hit(field, hit.message, hit.line, hit.fix_hint), kind)
    out = []
    for r, hit, parts in found.values():
        if len(parts) == 1:  # one claim only: say which
            hit = Hit(hit.field, f"On {_PART_NAMES[next(iter(parts))]}: {hit.message}",
                      hit.line, hit.fix_hint)  # fmt: skip
        out.append((r, hit))
    return out


def _in_encounter(field: str, index: list[int]) -> str:
    """A part's ``lines[i]…`` field as the encounter's ``lines[index[i]]…``."""
    return _LINE_FIELD.sub(lambda m: f"lines[{index[int(m.group(1))]}]", field)
