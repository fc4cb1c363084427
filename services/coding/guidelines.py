"""Problem lists coded by the ICD-10-CM Official Guidelines, with the reason for every code.

A problem list ("HTN", "DM2", "CKD 3b", "h/o MI", "FHx colon ca", "r/o PNA") is coded the
way the guidelines and the Alphabetic Index direct, not one line at a time:

1. Each line is split where a new context begins ("chest pain, r/o MI") and each part is
   read for its context: family history, personal history, status, uncertain, negated,
   or a current condition (``Context``).
2. A current condition is read for the facts the guideline combinations need: diabetes
   (type, complications), hypertension, chronic kidney disease (stage), heart failure
   (type, acuity), dialysis and long-term insulin use. Anything else is looked up in the
   tabular's terms (``terms.TermIndex``) and coded only on a full, sure match.
3. The combinations the classification presumes are then made across the whole list
   (``RULES``): I.A.15 "with" (diabetes with CKD, neuropathy, retinopathy, ...), I.C.9.a
   hypertension with heart disease (I11), with CKD (I12), with both (I13), each with the
   codes for the stage and the type of heart failure.
4. History, family history and status become Z codes (I.C.21.c.3, c.4, c.8), never the
   disease: ``HISTORY`` and ``FAMILY`` map the condition's category to its Z code as the
   Alphabetic Index's "History" entries do.
5. Uncertain diagnoses follow the setting: outpatient and professional visits code the
   signs and symptoms instead (IV.H); inpatient stays code the condition as if established
   (II.H, III.C).

Whatever cannot be decided by rule is returned as a hold (a reason a coder must read), never
guessed. Sources: ICD-10-CM Official Guidelines for Coding and Reporting FY2026 (sections
cited beside each rule), the FY2026 tabular (simple-icd-10-cm) and the Alphabetic Index
entries named beside each table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.coding import conventions
from services.coding.terms import TermIndex, normalize, stems_of
from services.refdata.icd10cm_index import AlphabeticIndex

Context = Literal["current", "history", "family", "status", "uncertain", "negated"]
Setting = Literal["professional", "outpatient", "inpatient"]

SURE = 0.9
"""A tabular match below this confidence is not coded from a problem list."""
CONFIDENCE_RULE = 0.97
"""A code a guideline rule assigned from facts the text states."""


@dataclass(frozen=True)
class Assigned:
    """One code and why: the words it came from and the index entry or guideline."""

    code: str  # no dot
    why: str
    problems: tuple[int, ...]  # which lines of the list it codes
    confidence: float = CONFIDENCE_RULE


@dataclass(frozen=True)
class Sources:
    """The official CMS index files, when the reference folder has them (else the tables)."""

    index: AlphabeticIndex | None = None  # icd10cm_index_YYYY.xml
    neoplasms: AlphabeticIndex | None = None  # icd10cm_neoplasm_YYYY.xml


NO_SOURCES = Sources()


@dataclass
class Coded:
    """What a problem list comes to: codes with their reasons, and reasons to hold."""

    codes: list[Assigned] = field(default_factory=list)
    holds: list[tuple[int, str]] = field(default_factory=list)  # (line, why a coder must look)
    suggested: list[Assigned] = field(default_factory=list)  # nearest codes of held lines


# --- 1. context ------------------------------------------------------------------------

_FAMILY = re.compile(
    r"^(?:family (?:medical )?(?:history|hx)|fam(?:ily)? hx|f/?hx|fh|f/h)\b\s*(?:of\b|:|-)?\s*"
    r"|^(?:mother|father|mom|dad|sister|brother|parent|sibling|grand(?:mother|father))s?\b"
    r"\s*(?:with|has|had|w/|hx of|history of|:|-)\s*"
)
_HISTORY = re.compile(
    r"^(?:personal (?:history|hx)|past (?:medical )?history|history|hx|h/o|pmh|prior|"
    r"previous|remote|former|ex-)(?:\b|(?<=-))\s*(?:of\b|:|-)?\s*"
)
_STATUS = re.compile(r"^(?:s/p|status post|sp|post)\b\s*")
_STATUS_TAIL = re.compile(r"\s*\b(?:in place|status|present)$")
_UNCERTAIN = re.compile(
    r"^(?:r/o|rule out|possible|possibly|probable|probably|suspected|suspect|suspicion of|"
    r"likely|questionable|query|presumed|presumptive|\?)\s*(?:of\b|for\b)?\s*"
    r"|\s+(?:vs\.?|versus)\s+"
)
_NEGATED = re.compile(r"^(?:no|denies|negative for|without|resolved)\b")
# A comma part that starts a new context: "chest pain, r/o MI", "DM2, h/o MI".
_SPLIT = re.compile(
    r"[,;]\s*(?=(?:r/o|rule out|possible|probable|suspected|likely|questionable|\?|h/o|hx\b|"
    r"history of|s/p|status post|family history|fhx?\b|on\s))"
)
_ON = re.compile(r"^(?:on|long[ -]term(?: use of)?|chronic use of)\s+")


@dataclass(frozen=True)
class Part:
    """One statement of a problem line, its context removed."""

    line: int
    text: str  # as written
    core: str  # the condition, context words removed, lower case
    context: Context


def parts(problems: Sequence[str]) -> list[Part]:
    """Every statement of the list with its context (guidelines I.C.21.c, II.H, IV.H)."""
    out: list[Part] = []
    for i, line in enumerate(problems):
        for raw in _SPLIT.split(line.strip()):
            text = raw.strip(" .;,-")
            if not text:
                continue
            lower = re.sub(r"\s+", " ", text.lower())
            out.append(Part(i, text, *_context(lower)))
    return out


def _context(lower: str) -> tuple[str, Context]:
    if m := _FAMILY.match(lower):
        return lower[m.end() :], "family"
    if _NEGATED.match(lower):
        return lower, "negated"
    if m := _UNCERTAIN.search(lower):
        return (lower[m.end() :] if m.start() == 0 else lower), "uncertain"
    if m := _HISTORY.match(lower):
        return lower[m.end() :], "history"
    if m := _STATUS.match(lower):
        return lower[m.end() :], "status"
    if m := _STATUS_TAIL.search(lower):
        return lower[: m.start()], "status"
    return lower, "current"


# --- 2. facts of a current condition ---------------------------------------------------

_NOT_DM = re.compile(
    r"insipidus|pre-?diabet|borderline|gestational|pregnan|steroid|drug[- ]induced"
)
_DIABETES = re.compile(r"\bdiabet")
_DM_TYPE = (
    (re.compile(r"type 1\b|juvenile"), "E10"),
    (re.compile(r"type 2\b|adult[- ]onset"), "E11"),
)
_DM_HOLD = re.compile(r"secondary|due to underlying|other specified|type 3|mody|lada")
# Alphabetic Index: Diabetes, diabetic, by type, "with" subterms (FY2026), as
# (words, code suffix, index entry). I.A.15 links them even when listed apart.
DM_WITH: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"chronic kidney disease|diabetic kidney disease|\bckd\b|end stage renal"),
        ".22",
        "Diabetes, by type, with, chronic kidney disease",
    ),
    (re.compile(r"nephropathy"), ".21", "Diabetes, by type, with, nephropathy"),
    (
        re.compile(r"polyneuropathy|peripheral neuropathy"),
        ".42",
        "Diabetes, by type, with, polyneuropathy",
    ),
    (
        re.compile(r"gastroparesis|autonomic (?:poly)?neuropathy"),
        ".43",
        "Diabetes, by type, with, gastroparesis / autonomic (poly)neuropathy",
    ),
    (re.compile(r"neuropathy"), ".40", "Diabetes, by type, with, neuropathy"),
    (
        re.compile(r"retinopathy"),
        ".319",
        "Diabetes, by type, with, retinopathy (without macular edema)",
    ),
    (
        re.compile(
            r"peripheral (?:vascular|arterial) disease|peripheral angiopathy|\bpvd\b|\bpad\b"
        ),
        ".51",
        "Diabetes, by type, with, peripheral angiopathy",
    ),
    (
        re.compile(r"hyperglyc|poorly controlled|out of control|inadequately controlled"),
        ".65",
        "Diabetes, by type, with, hyperglycemia (poorly controlled: see with hyperglycemia)",
    ),
    (re.compile(r"hypoglyc"), ".649", "Diabetes, by type, with, hypoglycemia"),
    (re.compile(r"ketoacidosis|\bdka\b"), ".10", "Diabetes, by type, with, ketoacidosis"),
    (re.compile(r"cataract"), ".36", "Diabetes, by type, with, cataract"),
    (
        re.compile(r"gangrene"),
        ".52",
        "Diabetes, by type, with, peripheral angiopathy, with gangrene",
    ),
)
_HTN = re.compile(r"\bhypertension\b|high blood pressure")
_HTN_NOT = re.compile(
    r"pulmonary|portal|intracranial|ocular|gestational|pregnan|pre-?eclamp|white coat|"
    r"secondary|renovascular|urgency|emergency|crisis|elevated|without (?:a )?diagnosis"
)
_HTN_HEART = re.compile(r"hypertensive heart")
_HTN_KIDNEY = re.compile(r"hypertensive (?:chronic )?(?:kidney|renal|nephro|ckd)|nephrosclerosis")

_CKD = re.compile(
    r"chronic kidney disease|chronic renal (?:disease|failure|insufficiency)|\bckd\b|"
    r"diabetic kidney disease|end stage (?:renal|kidney)"
)
_STAGE = re.compile(
    r"(?:stage|ckd|disease)\s*(1|2|3a|3b|3|4|5|iiia|iiib|iv|v|iii|ii|i)\b"
    r"|\b(1|2|3a|3b|3|4|5)\s*(?:ckd|chronic kidney)"
)
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iiia": "3a", "iiib": "3b", "iv": "4", "v": "5"}
CKD_STAGE = {
    "1": "N181",
    "2": "N182",
    "3": "N1830",
    "3a": "N1831",
    "3b": "N1832",
    "4": "N184",
    "5": "N185",
    "esrd": "N186",
    None: "N189",
}

_HF = re.compile(
    r"heart failure|\bchf\b|cardiac failure|\bhf\b|\bhfref\b|\bhfpef\b|ventricular failure|"
    r"reduced (?:ejection fraction|ef)|preserved (?:ejection fraction|ef)"
)
_HF_HOLD = re.compile(
    r"right|mid-?range|mildly reduced|hfmref|biventricular|high output|end stage|"
    r"postprocedural|rheumatic|newborn|neonatal"
)
_HF_TYPE = (
    (re.compile(r"combined|systolic and diastolic|diastolic and systolic"), "I504"),
    (re.compile(r"systolic|hfref|reduced (?:ejection fraction|ef)"), "I502"),
    (re.compile(r"diastolic|hfpef|preserved (?:ejection fraction|ef)"), "I503"),
)
_HF_ACUITY = (
    (re.compile(r"acute on chronic|decompensated|exacerbation"), "3"),
    (re.compile(r"\bacute\b"), "1"),
    (re.compile(r"\bchronic\b"), "2"),
)

_DIALYSIS = re.compile(r"dialysis|\bhd\b|hemodialysis")
_INSULIN = re.compile(r"\binsulin\b(?!\s*(?:resistance|pump|reaction|overdose))|\biddm\b")


@dataclass
class Facts:
    """What one current condition says, in the terms the combination rules need."""

    part: Part
    codes: list[tuple[str, str]] = field(default_factory=list)  # (code, why)
    dm: str | None = None  # E10 / E11
    dm_with: list[tuple[str, str]] = field(default_factory=list)  # (suffix, index entry)
    htn: Literal["plain", "heart", "kidney"] | None = None
    ckd: str | None = None  # N18.x
    hf: str | None = None  # I50.x
    links: list[tuple[str, str]] = field(default_factory=list)  # a diabetes "with" named apart
    suggest: list[tuple[str, float, str]] = field(default_factory=list)  # (code, confidence, why)
    keep_own: bool = False  # linked, and its own code is coded too (use additional code)
    hold: str | None = None


def _read(part: Part, index: TermIndex) -> Facts:
    """The facts of a current condition: rule concepts first, else the tabular's words."""
    text = normalize(_laterality(part.core))
    facts = Facts(part)
    if _UNRELATED.search(text):
        facts.hold = (
            f"{part.text!r} says the conditions are unrelated: the 'with' presumption does not "
            "apply (I.A.15); a coder must code them"
        )
        return facts
    said_dm = bool(_DIABETES.search(text)) and not _NOT_DM.search(text)
    if said_dm:
        _read_diabetes(text, facts)
    if _HTN_HEART.search(text):
        facts.htn = "heart"
    elif _HTN_KIDNEY.search(text):
        facts.htn = "kidney"
    elif _HTN.search(text) and not _HTN_NOT.search(text):
        facts.htn = "plain"
    if _CKD.search(text):
        facts.ckd = _ckd_stage(text)
    if _HF.search(text):
        if _HF_HOLD.search(text):
            facts.hold = f"{part.text!r}: this form of heart failure is not coded by rule"
        else:
            facts.hf = _hf_code(text)
    if _DIALYSIS.search(text) and (facts.ckd or "depend" in text or "status" in text):
        facts.codes.append(("Z992", "Dependence on renal dialysis (I.C.14.a.2; Z99.2)"))
    if _INSULIN.search(text) and said_dm:
        facts.codes.append(
            ("Z794", "Long term (current) use of insulin with type 2 diabetes (I.C.4.a.3)")
        )
    if said_dm or facts.htn or facts.ckd or facts.hf or facts.hold:
        _other_condition(text, index, facts)
        return facts
    # A "with" complication listed on its own line: linked to diabetes if the list has it.
    facts.links = [(s, e) for p, s, e in DM_WITH if s not in (".22", ".10") and p.search(text)]
    if any(s in (".42", ".43") for s, _ in facts.links):
        facts.links = [(s, e) for s, e in facts.links if s != ".40"]
    return _tabular(part, text, index, facts)


# What the combination rules code themselves: diabetes and its "with" conditions,
# hypertension, CKD, heart failure, dialysis and insulin status.
_RULE_DOMAIN = (
    "E08",
    "E09",
    "E10",
    "E11",
    "E13",
    "I10",
    "I11",
    "I12",
    "I13",
    "I15",
    "I16",
    "N18",
    "I50",
    "Z99",
    "Z79",
    "R73",
    "E16",
    "G62",
    "G60",
    "G90",
    "K3184",
    "I73",
    "H35",
    "R03",
)


def _other_condition(text: str, index: TermIndex, facts: Facts) -> None:
    """A rule concept's line that names another condition too ("anemia in CKD"): the other
    condition's code is added when the tabular names it surely; the line is held when the
    tabular reads a condition the rules do not code but not surely."""
    if facts.hold:
        return
    for hit in index.match(text):
        if hit.code.startswith(_RULE_DOMAIN):
            continue
        if hit.confidence >= SURE:
            facts.codes.append((hit.code, f"tabular term {hit.term.text!r}"))
        else:
            facts.hold = (
                f"{facts.part.text!r} may also name {_dot(hit.code)} {hit.term.text!r} "
                f"(confidence {hit.confidence:.2f}); a coder must code the line"
            )
            return


def _read_diabetes(text: str, facts: Facts) -> None:
    if _DM_HOLD.search(text):
        facts.hold = (
            f"{facts.part.text!r}: the type of diabetes or its control cannot be coded by rule "
            "(Alphabetic Index: Diabetes, uncontrolled -> by type, with hyperglycemia or with "
            "hypoglycemia); a coder must query or choose"
        )
        return
    if "uncontrolled" in text and not re.search(r"hyperglyc|hypoglyc", text):
        facts.hold = (
            f"{facts.part.text!r}: 'uncontrolled' diabetes means hyperglycemia or hypoglycemia "
            "(Alphabetic Index: Diabetes, uncontrolled); a coder must query which"
        )
        return
    dm = next((code for pattern, code in _DM_TYPE if pattern.search(text)), None)
    facts.dm = dm or "E11"  # I.C.4.a.2: type not documented -> type 2 (E11.-)
    for pattern, suffix, entry in DM_WITH:
        if pattern.search(text) and not any(s == suffix for s, _ in facts.dm_with):
            if suffix == ".40" and any(s in (".42", ".43") for s, _ in facts.dm_with):
                continue
            facts.dm_with.append((suffix, entry))
    if facts.dm == "E10":
        facts.codes = [c for c in facts.codes if c[0] != "Z794"]


def _ckd_stage(text: str) -> str:
    if "end stage" in text:
        return CKD_STAGE["esrd"]  # I.C.14.a.1: ESRD (and CKD 5 with ESRD) is N18.6
    m = _STAGE.search(text)
    stage = (m.group(1) or m.group(2)) if m else None
    return CKD_STAGE[_ROMAN.get(stage or "", stage)]


def _hf_code(text: str) -> str:
    kind = next((code for pattern, code in _HF_TYPE if pattern.search(text)), None)
    if kind is None:
        return "I509"  # Failure, heart, congestive / NOS: I50.9
    acuity = next((a for pattern, a in _HF_ACUITY if pattern.search(text)), "0")
    return kind + acuity


_SIDE = re.compile(
    r"\b(r|l|rt|lt)\.?\s+(?=(?:lower |upper )?(?:knee|hip|shoulder|leg|arm|foot|ankle|hand|"
    r"wrist|elbow|eye|ear|breast|thigh|calf|heel|toe|finger|thumb|kidney|lung)s?\b)"
)
_BOTH = re.compile(r"\bboth (knee|hip|shoulder|ankle|wrist|elbow|hand|foot|eye|ear|leg|arm)s?\b")


def _laterality(text: str) -> str:
    """R/L before a body site spelled out, "both knees" as the tabular's "bilateral knee"."""
    text = _SIDE.sub(lambda m: "right " if m.group(1).startswith("r") else "left ", text)
    return _BOTH.sub(lambda m: f"bilateral {m.group(1)}", text)


_LATERAL = re.compile(r"\b(right|left|bilateral)\b")
_UNRELATED = re.compile(r"unrelated|not related|not due to|not caused by")
# The index sends a limb's parts to the limb where no code names the part ("Cellulitis, leg
# - see Cellulitis, lower limb"): tried only when the words as written match nothing surely.
_LIMB = (
    (re.compile(r"\b(?:lower leg|leg|calf|shin|thigh)\b"), "lower limb"),
    (re.compile(r"\b(?:forearm|upper arm|arm)\b"), "upper limb"),
)


def _tabular(part: Part, text: str, index: TermIndex, facts: Facts) -> Facts:
    """Any other condition: coded from the tabular's terms only on a sure, full match."""
    hits = index.match(text)
    sure = [h for h in hits if h.confidence >= SURE]
    if not sure or len(sure) != len(hits):
        for pattern, limb in _LIMB:
            widened = pattern.sub(limb, text)
            if widened != text:
                wider = index.match(widened)
                if wider and all(h.confidence >= SURE for h in wider):
                    hits = sure = wider
                    break
    if not sure or len(sure) != len(hits):
        near = ", ".join(f"{_dot(h.code)} ({h.confidence:.2f})" for h in hits[:3])
        facts.suggest = [
            (h.code, h.confidence, f"nearest tabular term {h.term.text!r}") for h in hits
        ]
        facts.hold = (
            f"{part.text!r} matches no tabular term fully"
            + (f" (nearest {near})" if near else "")
            + "; a coder must assign the code"
        )
        return facts
    said = set(_LATERAL.findall(text))
    for h in sure:
        title = h.term.text.lower()
        named = set(_LATERAL.findall(title))
        if said and named and said != named:
            facts.hold = f"{part.text!r} names {', '.join(said)} but {_dot(h.code)} does not"
            return facts
        if said and not named and "unspecified" in title:
            facts.hold = (
                f"{part.text!r} names the side, but {_dot(h.code)} {h.term.text!r} does not; "
                "a coder must choose the lateral code"
            )
            return facts
        facts.codes.append((h.code, f"tabular term {h.term.text!r}"))
    return facts


# --- 4. history, family history, status ------------------------------------------------

# Alphabetic Index "History, personal (of)" and "History, family (of)" entries, keyed by the
# current condition's code prefix (longest prefix wins). I.C.21.c.4: history codes, never
# the disease; I.C.2.d: a malignancy excised with no further treatment is Z85.-.
HISTORY: tuple[tuple[str, str], ...] = (
    ("C18", "Z85038"),
    ("C19", "Z85048"),
    ("C20", "Z85048"),
    ("C15", "Z8501"),
    ("C16", "Z85028"),
    ("C22", "Z8505"),
    ("C25", "Z8507"),
    ("C34", "Z85118"),
    ("C43", "Z85820"),
    ("C50", "Z853"),
    ("C53", "Z8541"),
    ("C54", "Z8542"),
    ("C56", "Z8543"),
    ("C61", "Z8546"),
    ("C62", "Z8547"),
    ("C64", "Z85528"),
    ("C67", "Z8551"),
    ("C73", "Z85850"),
    ("C81", "Z8571"),
    ("C91", "Z856"),
    ("C92", "Z856"),
    ("C95", "Z856"),
    ("I21", "I252"),  # History, myocardial infarction: I25.2 (old myocardial infarction)
    ("I22", "I252"),
    ("I63", "Z8673"),
    ("I64", "Z8673"),
    ("G45", "Z8673"),
    ("I26", "Z86711"),
    ("I80", "Z86718"),
    ("I82", "Z86718"),
    ("N20", "Z87442"),
    ("N21", "Z87442"),
    ("N39", "Z87440"),
    ("N30", "Z87440"),
    ("K635", "Z860100"),
    ("D12", "Z860100"),
    ("J18", "Z8701"),
    ("J15", "Z8701"),
    ("F17", "Z87891"),
    ("O244", "Z8632"),
    ("K25", "Z8711"),
    ("K26", "Z8711"),
    ("K27", "Z8711"),
    ("A41", "Z8619"),
    ("T14", "Z8781"),
)
FAMILY: tuple[tuple[str, str], ...] = (
    *((f"C{n:02d}", "Z800") for n in range(15, 27)),
    ("C33", "Z801"),
    ("C34", "Z801"),
    ("C50", "Z803"),
    ("C56", "Z8041"),
    ("C61", "Z8042"),
    ("C62", "Z8043"),
    ("C64", "Z8051"),
    ("C67", "Z8052"),
    ("C43", "Z808"),
    *((f"C{n:02d}", "Z806") for n in range(91, 96)),
    ("C81", "Z807"),
    ("C82", "Z807"),
    ("C83", "Z807"),
    ("C85", "Z807"),
    ("C90", "Z807"),
    ("E10", "Z833"),
    ("E11", "Z833"),
    ("E13", "Z833"),
    ("I60", "Z823"),
    ("I61", "Z823"),
    ("I63", "Z823"),
    ("I64", "Z823"),
    ("I20", "Z8249"),
    ("I21", "Z8249"),
    ("I25", "Z8249"),
    ("I10", "Z8249"),
    ("I50", "Z8249"),
    ("J45", "Z825"),
    ("M81", "Z8262"),
    ("N18", "Z841"),
    ("G30", "Z820"),
    ("G40", "Z820"),
    ("F10", "Z811"),
    ("F32", "Z818"),
    ("F33", "Z818"),
    ("K635", "Z8371"),
    ("D12", "Z8371"),
    ("E78", "Z83438"),
    ("H40", "Z83511"),
)
# Site words a clinician writes for a malignancy, as the tabular words the C-code titles
# (Neoplasm Table, "Malignant, primary" column).
CANCER_SITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"colon|colorectal|large (?:bowel|intestine)"), "C189"),
    (re.compile(r"rect(?:um|al)"), "C20"),
    (re.compile(r"esophag"), "C159"),
    (re.compile(r"stomach|gastric"), "C169"),
    (re.compile(r"liver|hepatocellular"), "C220"),
    (re.compile(r"pancrea"), "C259"),
    (re.compile(r"lung|bronch"), "C3490"),
    (re.compile(r"melanoma"), "C439"),
    (re.compile(r"breast"), "C5091"),
    (re.compile(r"cervi(?:x|cal)"), "C539"),
    (re.compile(r"endometri|uter"), "C549"),
    (re.compile(r"ovar"), "C5690"),
    (re.compile(r"prostat"), "C61"),
    (re.compile(r"testi"), "C6290"),
    (re.compile(r"kidney|renal cell"), "C6490"),
    (re.compile(r"\bbladder\b"), "C679"),
    (re.compile(r"thyroid"), "C73"),
    (re.compile(r"hodgkin"), "C8190"),
    (re.compile(r"leuk"), "C9590"),
)
_CANCER = re.compile(r"cancer|\bca\b|carcinoma|malignan|adenocarcinoma|melanoma|leukemia|hodgkin")
_POLYP = re.compile(r"colon(?:ic)? polyp|polyps? of (?:the )?colon|adenomatous polyp")
# I.C.21.c.3 status codes: (words, code by side right/left/bilateral/unspecified, title).
STATUS: tuple[tuple[re.Pattern[str], tuple[str, str, str, str], str], ...] = (
    (
        re.compile(r"\bcabg\b|coronary (?:artery )?bypass|aortocoronary"),
        ("Z951",) * 4,
        "Presence of aortocoronary bypass graft",
    ),
    (
        re.compile(r"coronary (?:artery )?stent|\bpci\b|\bptca\b|angioplasty"),
        ("Z955",) * 4,
        "Presence of coronary angioplasty implant and graft",
    ),
    (
        re.compile(r"\baicd\b|defibrillator|\bicd\b"),
        ("Z95810",) * 4,
        "Presence of automatic (implantable) cardiac defibrillator",
    ),
    (re.compile(r"pacemaker|\bppm\b"), ("Z950",) * 4, "Presence of cardiac pacemaker"),
    (
        re.compile(
            r"(?:valve replacement|prosthetic (?:heart )?valve|mechanical valve|\b[am]vr\b)"
        ),
        ("Z952",) * 4,
        "Presence of prosthetic heart valve",
    ),
    (
        re.compile(r"knee (?:replacement|arthroplasty)|\btk[ar]\b"),
        ("Z96651", "Z96652", "Z96653", "Z96659"),
        "Presence of artificial knee joint",
    ),
    (
        re.compile(r"hip (?:replacement|arthroplasty)|\bth[ar]\b"),
        ("Z96641", "Z96642", "Z96643", "Z96649"),
        "Presence of artificial hip joint",
    ),
    (
        re.compile(r"shoulder (?:replacement|arthroplasty)"),
        ("Z96611", "Z96612", "Z96613", "Z96619"),
        "Presence of artificial shoulder joint",
    ),
    (re.compile(r"dialysis"), ("Z992",) * 4, "Dependence on renal dialysis"),
    (re.compile(r"kidney transplant|renal transplant"), ("Z940",) * 4, "Kidney transplant status"),
    (re.compile(r"liver transplant"), ("Z944",) * 4, "Liver transplant status"),
    (re.compile(r"heart transplant"), ("Z941",) * 4, "Heart transplant status"),
    (re.compile(r"\binsulin\b"), ("Z794",) * 4, "Long term (current) use of insulin"),
    (
        re.compile(r"anticoagula|coumadin|warfarin|apixaban|eliquis|rivaroxaban|xarelto|doac"),
        ("Z7901",) * 4,
        "Long term (current) use of anticoagulants",
    ),
    (re.compile(r"\baspirin\b|\basa\b"), ("Z7982",) * 4, "Long term (current) use of aspirin"),
    (re.compile(r"colostomy"), ("Z933",) * 4, "Colostomy status"),
    (re.compile(r"tracheostomy"), ("Z930",) * 4, "Tracheostomy status"),
)
_SMOKER = re.compile(r"\b(?:smoker|smoking|tobacco use|cigarette)")


def _side(text: str) -> int:
    if "bilateral" in text or "both" in text:
        return 2
    if re.search(r"\b(?:right|rt|r)\b", text):
        return 0
    if re.search(r"\b(?:left|lt|l)\b", text):
        return 1
    return 3


def _status(part: Part) -> tuple[str, str] | None:
    core = _ON.sub("", part.core)
    for pattern, codes, title in STATUS:
        if pattern.search(core):
            code = codes[_side(core)]
            return code, f"status: {title} (I.C.21.c.3; {_dot(code)})"
    return None


# Conditions the History entries name whose tabular terms are too specific to match the
# words as written (Thrombosis, vein, deep -> I82.4-; Accident, cerebrovascular -> I63.9).
HISTORY_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"deep vein|deep venous|\bdvt\b|venous thrombo"), "I82"),
    (re.compile(r"\bcva\b|cerebrovascular accident|\bstroke\b|cerebral infarct"), "I63"),
    (re.compile(r"\btia\b|transient ischemic"), "G45"),
    (re.compile(r"\bmi\b|myocardial infarction|heart attack"), "I21"),
    (re.compile(r"kidney stone|renal stone|nephrolithiasis|renal calcul"), "N20"),
)


def _current_code_of(core: str, index: TermIndex, sources: Sources) -> str | None:
    """The code of the condition a history/family line names, for the History tables."""
    for pattern, code in HISTORY_WORDS:
        if pattern.search(core):
            return code
    if _CANCER.search(core):
        site = next((c for pattern, c in CANCER_SITES if pattern.search(core)), None)
        if site is None and sources.neoplasms is not None:
            # Table of Neoplasms, "Malignant, primary" column, for the site as written.
            words = _CANCER.sub(" ", core)
            words = re.sub(r"\b(?:of|the|primary|malignant|neoplasm)\b", " ", words).strip()
            found = sources.neoplasms.neoplasm(words) if words else None
            site = found.replace(".", "") if found and found[0] == "C" else None
        return site
    if _POLYP.search(core):
        return "K635"
    text = normalize(core)
    if _DIABETES.search(text) and not _NOT_DM.search(text):
        return "E11"
    if _SMOKER.search(text):
        return "F17"
    hits = index.match(text)
    if len(hits) == 1 and hits[0].confidence >= SURE:
        return hits[0].code
    return None


def _lookup(table: tuple[tuple[str, str], ...], code: str) -> str | None:
    best = max((p for p, _ in table if code.startswith(p)), key=len, default=None)
    return dict(table)[best] if best else None


def _history(part: Part, index: TermIndex, sources: Sources) -> tuple[str, str] | str:
    """A history or family-history line: its Z code and why, or the reason to hold."""
    family = part.context == "family"
    core = part.core
    if not family and re.search(r"\bsmok|tobacco|cigarette", core):
        return "Z87891", "History, personal, nicotine dependence (I.C.21.c.4; Z87.891)"
    code = _current_code_of(core, index, sources)
    target = _lookup(FAMILY if family else HISTORY, code) if code else None
    kind = "family" if family else "personal"
    if target is None:
        return (
            f"{part.text!r}: no {kind}-history code is known by rule for "
            f"{_dot(code) if code else 'this condition'}; a coder must assign it"
        )
    section = "I.C.21.c.4" if not target.startswith("I25") else "I.C.9.e.4"
    return target, f"History, {kind}, of {_dot(code or '')} -> {_dot(target)} ({section})"


# --- 3. the combinations ---------------------------------------------------------------

RULES: tuple[tuple[str, str], ...] = (
    (
        "I.A.15",
        "'With': a condition the index lists under 'with' is coded as linked, even "
        "when documented apart, unless the documentation says it is unrelated",
    ),
    (
        "I.C.4.a",
        "Diabetes: as many E08-E13 codes as needed for its complications; "
        "type not documented -> E11 (I.C.4.a.2); long-term insulin -> Z79.4 (I.C.4.a.3)",
    ),
    (
        "I.C.9.a.1",
        "Hypertension with heart disease (I50.-, I51.4-I51.7, I51.89, I51.9): I11, "
        "with an additional I50.- for the heart failure",
    ),
    ("I.C.9.a.2", "Hypertension with chronic kidney disease: I12, with N18.- for the stage"),
    ("I.C.9.a.3", "Hypertension with heart disease and CKD: I13, with I50.- and N18.-"),
    ("I.C.14.a.1", "CKD stage and ESRD both documented: N18.6"),
)


def code_problems(
    problems: Sequence[str],
    setting: Setting,
    index: TermIndex,
    sources: Sources = NO_SOURCES,
) -> Coded:
    """Code a problem list by the guidelines; every code with its reason, or a hold."""
    out = Coded()
    all_parts = parts(problems)
    facts: list[Facts] = []
    uncertain: list[Part] = []
    for part in all_parts:
        if part.context == "negated":
            continue
        if part.context == "uncertain":
            if setting == "inpatient":
                # II.H / III.C: coded as if established at discharge.
                f = _read(part, index)
                f.codes = [
                    (c, f"{w}; uncertain at discharge, coded as if established (II.H)")
                    for c, w in f.codes
                ]
                facts.append(f)
            else:
                uncertain.append(part)
            continue
        if part.context in ("history", "family"):
            got = _history(part, index, sources)
            if isinstance(got, str):
                out.holds.append((part.line, got))
            else:
                out.codes.append(Assigned(got[0], f"{part.text!r}: {got[1]}", (part.line,)))
            continue
        if part.context == "status" or _ON.match(part.core):
            got_status = _status(part)
            if got_status is not None:
                out.codes.append(
                    Assigned(got_status[0], f"{part.text!r}: {got_status[1]}", (part.line,))
                )
                continue
            if part.context == "status":
                out.holds.append((part.line, f"{part.text!r}: no status code is known by rule"))
                continue
        facts.append(_read(part, index))
    if sources.index is not None:
        _index_links(facts, sources.index)
    _hold_doubtful_combinations(facts)
    absorbed: set[int] = set()
    out.codes += _combine([f for f in facts if not f.hold or f.links], absorbed)
    for f in facts:
        if f.hold and (id(f) not in absorbed or f.keep_own):
            out.holds.append((f.part.line, f.hold))
            line = (f.part.line,)
            out.suggested += [
                Assigned(c, f"{f.part.text!r}: {w}", line, p) for c, p, w in f.suggest
            ]
    if uncertain:
        _uncertain_outpatient(uncertain, out)
    out.codes = _dedupe(out.codes)
    _symptoms_beside_definitive(out)
    return out


# Diabetes codes for "other specified complication": the tabular asks for an additional code
# naming the complication, so the separate line keeps its own code beside the combination.
_DM_OTHER = ("59", "618", "628", "638", "69", "8")


def _index_links(facts: list[Facts], alpha: AlphabeticIndex) -> None:
    """I.A.15 from the official index: a line whose words are exactly a "with" subterm of
    the list's diabetes (Diabetes, diabetic > type 2 > with > osteomyelitis) is linked."""
    dm = next((f.dm for f in facts if f.dm), None)
    if dm is None:
        return
    kind = {"E10": "type 1", "E11": "type 2"}[dm]
    subterms = alpha.subterms("diabetes", kind, "with")
    for f in facts:
        if f.dm or f.links or f.htn or f.ckd or f.hf:
            continue
        said = stems_of(f.part.core)
        for entry in subterms:
            code = (entry.code or "").replace(".", "")
            if code.startswith(dm) and said and stems_of(entry.path[-1]) == said:
                f.links = [(code, f"Alphabetic Index {entry.text()}")]
                if code[len(dm) :] in _DM_OTHER:
                    f.keep_own = True  # "use additional code to identify complication"
                else:
                    f.hold = None
                break


_RELATED = re.compile(
    r"heart|cardi|kidney|renal|nephr|ckd|neuro|retin|eye|vascular|angiopath|ulcer|gangren|"
    r"glyc|arthropath|skin|foot|unrelated"
)


def _hold_doubtful_combinations(facts: list[Facts]) -> None:
    """A combination is coded only when every line it could take in is understood.

    Diabetes or hypertension beside a line that a coder must read and that may be one of
    their "with" conditions (or says "unrelated", the I.A.15 exception) is held as well.
    """
    doubtful = [f for f in facts if f.hold and not f.links and _RELATED.search(f.part.core)]
    if not doubtful:
        return
    for f in facts:
        if (f.dm or f.htn) and not f.hold:
            f.hold = (
                f"{f.part.text!r}: its guideline combination (I.A.15, I.C.9.a) depends on "
                f"{doubtful[0].part.text!r}, which a coder must code first"
            )


def _combine(facts: list[Facts], absorbed: set[int]) -> list[Assigned]:
    """The guideline combinations across the list, then the remaining codes.

    ``absorbed`` gets the ids of the facts a combination code took in whole.
    """
    out: list[Assigned] = []
    dm = [f for f in facts if f.dm]
    htn = [f for f in facts if f.htn]
    ckd = [f for f in facts if f.ckd]
    hf = [f for f in facts if f.hf]
    heart_dx = [
        f
        for f in facts
        if any(c.startswith(("I514", "I515", "I516", "I517", "I5189", "I519")) for c, _ in f.codes)
    ]
    stage = _worst_stage([f.ckd for f in ckd if f.ckd])
    # Diabetes, I.A.15 and I.C.4.a.
    for f in dm:
        dm_type = f.dm or "E11"
        withs = list(f.dm_with)
        lines = [f.part.line]
        for other in facts:
            if other is f or other.dm:
                continue
            for suffix, entry in other.links:
                absorbed.add(id(other))
                lines.append(other.part.line)
                if not any(s == suffix for s, _ in withs):
                    withs.append((suffix, entry))
            if other.ckd and not any(s == ".22" for s, _ in withs):
                withs.append((".22", DM_WITH[0][2]))
                lines.append(other.part.line)
        if not withs:
            out.append(
                Assigned(
                    dm_type + "9",
                    f"{f.part.text!r}: Diabetes, {_dm_name(dm_type)} "
                    f"-> {_dot(dm_type + '9')} (I.C.4.a; type not documented -> "
                    "type 2, I.C.4.a.2)",
                    (f.part.line,),
                )
            )
        for suffix, entry in withs:
            code = suffix if suffix.startswith("E") else dm_type + suffix.replace(".", "")
            if suffix == ".10" and dm_type == "E11":
                code = "E1110"
            out.append(
                Assigned(
                    code,
                    f"{' + '.join(repr(facts_text(facts, n)) for n in lines)}: "
                    f"{entry} -> {_dot(code)} (I.A.15, I.C.4.a)",
                    tuple(sorted(set(lines))),
                )
            )
    # Hypertension, I.C.9.a.
    if htn:
        heart = bool(hf or heart_dx or any(f.htn == "heart" for f in htn))
        kidney = bool(ckd or any(f.htn == "kidney" for f in htn))
        htn_lines = tuple(sorted({f.part.line for f in htn + hf + ckd + heart_dx}))
        said = " + ".join(repr(facts_text(facts, n)) for n in htn_lines)
        late = stage in ("N185", "N186")
        if heart and kidney:
            with_hf = ("I132" if late else "I130") if hf else None
            code = with_hf or ("I1311" if late else "I1310")
            section = "I.C.9.a.3"
        elif kidney:
            code, section = ("I120" if late else "I129"), "I.C.9.a.2"
        elif heart:
            code, section = ("I110" if hf else "I119"), "I.C.9.a.1"
        else:
            code, section = "I10", "I.C.9.a (Hypertension, essential)"
        out.append(
            Assigned(
                code, f"{said}: Hypertension, hypertensive -> {_dot(code)} ({section})", htn_lines
            )
        )
        if kidney and not ckd:
            out.append(
                Assigned(
                    "N189",
                    f"{said}: stage of CKD not documented -> N18.9 "
                    f"(I12/I13 'use additional code to identify the stage')",
                    htn_lines,
                )
            )
    if stage:
        ckd_lines = tuple(sorted({f.part.line for f in ckd}))
        out.append(
            Assigned(
                stage,
                f"{' + '.join(repr(facts_text(facts, n)) for n in ckd_lines)}: "
                f"Disease, kidney, chronic -> {_dot(stage)} (stage; I.C.14.a)",
                ckd_lines,
            )
        )
    for f in hf:
        out.append(
            Assigned(
                f.hf or "I509",
                f"{f.part.text!r}: Failure, heart -> {_dot(f.hf or 'I509')}"
                + (" (with I11/I13, I.C.9.a.1)" if htn else ""),
                (f.part.line,),
            )
        )
    for f in facts:
        for code, why in f.codes:
            if id(f) in absorbed and not f.keep_own:
                continue  # coded by the diabetes combination (I.A.15)
            if code.startswith(("I514", "I515", "I516", "I517", "I5189", "I519")) and htn:
                continue  # named by the I11/I13 combination
            out.append(
                Assigned(
                    code,
                    f"{f.part.text!r}: {why}",
                    (f.part.line,),
                    CONFIDENCE_RULE if "tabular" not in why else SURE,
                )
            )
    return out


def facts_text(facts: list[Facts], line: int) -> str:
    return next((f.part.text for f in facts if f.part.line == line), str(line))


def _worst_stage(stages: list[str]) -> str | None:
    order = ["N189", "N181", "N182", "N1830", "N1831", "N1832", "N184", "N185", "N186"]
    known = [s for s in stages if s in order]
    if not known:
        return None
    best = max(known, key=order.index)
    if best == "N1830" and {"N1831", "N1832"} & set(known):
        return max({"N1831", "N1832"} & set(known), key=order.index)
    return best


def _dm_name(code: str) -> str:
    return {"E10": "type 1", "E11": "type 2"}.get(code, code)


def _uncertain_outpatient(uncertain: list[Part], out: Coded) -> None:
    """IV.H: outside an inpatient stay an uncertain diagnosis is not coded; its signs and
    symptoms are. With no symptom documented there is nothing certain to code for it."""
    if any(a.code.startswith("R") for a in out.codes):
        return
    for part in uncertain:
        out.holds.append(
            (
                part.line,
                f"{part.text!r}: uncertain diagnosis, not coded for an outpatient visit (IV.H), "
                "and no sign or symptom is documented in its place; a coder must code the "
                "reason for the visit",
            )
        )


def _dedupe(codes: list[Assigned]) -> list[Assigned]:
    seen: dict[str, Assigned] = {}
    for a in codes:
        if a.code not in seen:
            seen[a.code] = a
    # E1x.9 ("without complications") cannot stand beside another code of its category.
    for code in list(seen):
        if code in ("E109", "E119") and any(c[:3] == code[:3] and c != code for c in seen):
            del seen[code]
    return list(seen.values())


def _symptoms_beside_definitive(out: Coded) -> None:
    """I.B.5: a symptom is not coded beside a definitive diagnosis of its body system."""
    definitive = {a.code[0] for a in out.codes} - {"R", "Z"}
    out.codes = [
        a
        for a in out.codes
        if not (a.code.startswith("R") and conventions.symptom_chapters(a.code) & definitive)
    ]


def _dot(code: str) -> str:
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


# Codes for a "with" condition of diabetes when sent on their own (I.A.15): the suffix of the
# combination code that names it.
_DM_APART = {
    "N18": ".22",
    "G629": ".42",
    "K3184": ".43",
    "I739": ".51",
    "R739": ".65",
    "E162": ".649",
    "H3500": ".319",
}


def combinations_missed(codes: Sequence[str]) -> list[str]:
    """Codes sent apart that a guideline combination joins (for structured EHR codes)."""
    found: list[str] = []
    dm = [c for c in codes if c[:3] in ("E10", "E11")]
    for c in codes:
        suffix = _DM_APART.get(c) or _DM_APART.get(c[:3])
        for d in dm:
            combo = d[:3] + suffix.replace(".", "") if suffix else None
            if combo and combo not in codes:
                found.append(
                    f"{_dot(d)} and {_dot(c)} are linked by 'with' (I.A.15): "
                    f"{_dot(combo)} is the combination code"
                )
    ckd = any(c.startswith("N18") for c in codes)
    hf = any(c.startswith("I50") for c in codes)
    if "I10" in codes and (ckd or hf):
        what = "I13.-" if ckd and hf else "I12.-" if ckd else "I11.0"
        found.append(
            f"I10 with {'CKD' if ckd else ''}{' and ' if ckd and hf else ''}"
            f"{'heart failure' if hf else ''} is coded {what} (I.C.9.a)"
        )
    return found
