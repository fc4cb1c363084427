"""X12 made readable on a page: one claim's part of an 837 or 835, segment by segment,
with patient identifiers masked for roles that may not see PHI.

A claims.submitted.v1 event carries the whole interchange that delivered it, and an 835
answers many claims: showing either whole would show other patients. So a page shows the
envelope and headers, plus only the loops of the claim asked for (837: the subscriber and
patient HL loops that hold its CLM, with their billing-provider parent; 835: the CLP loop).
The trailer counts then describe the whole interchange, and the page says it is an excerpt.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.x12.reader import read_segments

MASK = "•••"
# NM101 entity codes that name a person whose data is PHI: insured/subscriber, patient,
# corrected patient, other subscriber.
_PERSON_ENTITIES = {"IL", "QC", "74", "QD"}
# REF qualifiers that carry a person's identifier: SSN, member id, medical record number,
# patient account number held by the payer, health insurance claim number.
_PERSON_REFS = {"SY", "1W", "EA", "IG", "HJ", "F6", "Y4", "1L"}
_REF_KEYS = {(q,) for q in _PERSON_REFS}


@dataclass(frozen=True)
class Segment:
    tag: str
    elements: tuple[str, ...]  # without the tag
    masked: bool = False

    def text(self, element_sep: str = "*") -> str:
        return element_sep.join((self.tag, *self.elements))


def split(x12: str) -> list[Segment]:
    """Segments of an interchange, read by the project's one X12 reader (the delimiters the
    ISA declares); a text that is not X12 is a ValueError (``InputError``) saying why."""
    return [Segment(seg.id, seg.elements) for seg in read_segments(x12, field="x12")]


def _sets(segs: list[Segment]) -> tuple[list[Segment], list[list[Segment]], list[Segment]]:
    """The envelope before the first ST, each transaction set (ST..SE), the envelope after."""
    before: list[Segment] = []
    sets: list[list[Segment]] = []
    after: list[Segment] = []
    inside = False
    for seg in segs:
        if seg.tag == "ST":
            inside = True
            sets.append([])
        if inside:
            sets[-1].append(seg)
        elif sets:
            after.append(seg)
        else:
            before.append(seg)
        if seg.tag == "SE":
            inside = False
    return before, sets, [s for s in after if s.tag in ("GE", "IEA")]


def claim_837(x12: str, claim_id: str) -> list[Segment]:
    """The envelope and the HL loops that carry the claim ``claim_id`` (CLM01)."""
    before, sets, after = _sets(split(x12))
    for tx in sets:
        head = [s for s in tx if s.tag != "SE"]
        first_hl = next((i for i, s in enumerate(head) if s.tag == "HL"), len(head))
        blocks: list[list[Segment]] = []
        for seg in head[first_hl:]:
            if seg.tag == "HL":
                blocks.append([])
            blocks[-1].append(seg)
        by_id = {b[0].elements[0]: b for b in blocks if b[0].elements}
        wanted: list[list[Segment]] = []
        for block in blocks:
            if not any(s.tag == "CLM" and s.elements[:1] == (claim_id,) for s in block):
                continue
            chain = [block]
            parent = block[0].elements[1] if len(block[0].elements) > 1 else ""
            while parent in by_id and by_id[parent] not in chain:
                chain.append(by_id[parent])
                hl = by_id[parent][0].elements
                parent = hl[1] if len(hl) > 1 else ""
            wanted += [b for b in reversed(chain) if b not in wanted]
        if wanted:
            body = [s for b in wanted for s in _claim_only(b, claim_id)]
            return before + head[:first_hl] + body + [s for s in tx if s.tag == "SE"] + after
    return []


def _claim_only(block: list[Segment], claim_id: str) -> list[Segment]:
    """A subscriber/patient block cut to the claim asked for (a block may hold several)."""
    out: list[Segment] = []
    keep = True
    for seg in block:
        if seg.tag == "CLM":
            keep = bool(seg.elements) and seg.elements[0] == claim_id
        if keep:
            out.append(seg)
    return out


def claim_835(x12: str, claim_ids: str | set[str]) -> list[Segment]:
    """The 835's header (payer, payee, payment) and the CLP loops of ``claim_ids``."""
    wanted = {claim_ids} if isinstance(claim_ids, str) else claim_ids
    segs = split(x12)
    out: list[Segment] = []
    in_header = True
    keep = False
    for seg in segs:
        if seg.tag in ("LX", "CLP"):
            in_header = False
        if seg.tag == "CLP":
            keep = bool(seg.elements) and seg.elements[0] in wanted
        elif seg.tag in ("LX", "SE", "PLB"):
            keep = False
        if in_header and seg.tag not in ("SE", "GE", "IEA") or keep:
            out.append(seg)
    return out if any(s.tag == "CLP" for s in out) else []


def mask(segments: list[Segment]) -> list[Segment]:
    """Patient and subscriber names, addresses, birth dates and identifiers replaced."""
    out = []
    person = False  # inside a person's NM1 (until the next NM1 or HL)
    for seg in segments:
        if seg.tag in ("NM1", "HL", "CLM", "CLP", "LX", "SV1", "SV2", "SVC"):
            person = seg.tag == "NM1" and bool(seg.elements) and seg.elements[0] in _PERSON_ENTITIES
        hide: tuple[int, ...] = ()
        if seg.tag == "NM1" and person:
            hide = (2, 3, 4, 5, 6, 8)  # NM103-NM107 names, NM109 the identifier
        elif seg.tag in ("N3", "N4", "DMG", "PER") and person:
            hide = tuple(range(len(seg.elements)))
        elif seg.tag == "DMG" or (seg.tag == "REF" and seg.elements[:1] in _REF_KEYS):
            hide = tuple(range(1, len(seg.elements)))
        elif seg.tag == "PAT" and len(seg.elements) > 5:
            hide = tuple(range(4, len(seg.elements)))  # PAT05-PAT08: death date, weight
        if hide:
            elements = tuple(MASK if i in hide and e else e for i, e in enumerate(seg.elements))
            out.append(Segment(seg.tag, elements, masked=True))
        else:
            out.append(seg)
    return out
