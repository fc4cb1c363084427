"""The one X12 reader: segments of any interchange claimflow receives (835, 999, 277CA, 837).

Segments are read the way pyx12's ``X12Reader`` reads them, which takes the element
separator (ISA position 3), the component separator (ISA16) and the segment terminator
(after ISA16) from the interchange header, so a payer's own delimiters are honoured. Before
that, the ISA is checked for the fixed 106-character layout, so text that is not X12 fails
with a sentence naming what is wrong rather than a parser trace.

A well-formed interchange is split here with ``str.split`` (pyx12's reader cost remittance
a fifth of its CPU); anything its reader would refuse (an unknown version, an ISA without
16 elements, a blank segment, a trailer without its header) is read by pyx12 itself, so
the refusal is pyx12's, word for word (tests/unit/test_x12_reader.py compares the two).
``segment_rows`` gives that split as lists of elements, for a reader that makes its own
objects and a ``Segment`` only to name what it refuses (the 835 reader: 79 us a file to 59).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyx12.errors
import pyx12.segment
import pyx12.x12file

from pipeline.errors import InputError

_ISA_LEN = 106


class Segment:
    """One X12 segment: its id, elements as text, and components split on ISA16.

    The components of an element are split from its text when first asked for (most
    elements are read whole, and most readers never ask): ``sub`` is the component
    separator they are split on (None: each element is one component, as in the ISA).
    """

    __slots__ = ("id", "elements", "line", "_components", "_sub")

    def __init__(
        self,
        id: str,  # noqa: A002 - the X12 name
        elements: tuple[str, ...],
        components: tuple[tuple[str, ...], ...] | None,
        line: int,
        sub: str | None = None,
    ) -> None:
        self.id = id
        self.elements = elements
        self.line = line
        self._components = components
        self._sub = sub

    @property
    def components(self) -> tuple[tuple[str, ...], ...]:
        """Every element split into its components."""
        if self._components is None:
            sub = self._sub
            if sub is None:
                self._components = tuple([(e,) for e in self.elements])
            else:
                self._components = tuple([tuple(e.split(sub)) for e in self.elements])
        return self._components

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return (self.id, self.elements, self.line) == (other.id, other.elements, other.line) and (
            self.components == other.components
        )

    def __hash__(self) -> int:
        return hash((self.id, self.elements, self.components, self.line))

    def __repr__(self) -> str:
        return (
            f"Segment(id={self.id!r}, elements={self.elements!r}, "
            f"components={self.components!r}, line={self.line!r})"
        )

    def el(self, pos: int) -> str:
        """Element ``pos`` (1-based) as text, '' when absent."""
        return self.elements[pos - 1] if 0 < pos <= len(self.elements) else ""

    def comp(self, pos: int, sub: int) -> str:
        """Component ``sub`` (1-based) of element ``pos``, '' when absent."""
        if not 0 < pos <= len(self.elements):
            return ""
        parts = self.components[pos - 1]
        return parts[sub - 1] if 0 < sub <= len(parts) else ""

    def comps(self, pos: int) -> tuple[str, ...]:
        """Every component of element ``pos``, () when absent."""
        if not 0 < pos <= len(self.elements):
            return ()
        if self._components is None and self._sub is not None:
            # That element split alone, not all of them (an 835 reader asks for SVC01 and
            # SVC06 of a segment of seven elements): what ``components`` has at ``pos``.
            return tuple(self.elements[pos - 1].split(self._sub))
        return self.components[pos - 1]

    def ref(self, pos: int) -> str:
        """The reference designator of element ``pos``, e.g. CLP03, for error messages."""
        return f"{self.id}{pos:02d}"


def _check_isa(text: str) -> str:
    """Strip what may precede the ISA and reject text that cannot be an X12 interchange."""
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        raise InputError("ISA", "empty input: expected an X12 interchange starting with ISA")
    if not text.startswith("ISA"):
        raise InputError("ISA", f"not X12: the text starts with {text[:3]!r}, not an ISA segment")
    if len(text) < _ISA_LEN:
        raise InputError("ISA", f"the ISA segment must be {_ISA_LEN} characters, got {len(text)}")
    sep = text[3]
    if sep.isalnum() or sep.isspace():
        raise InputError("ISA", f"element separator {sep!r} at ISA position 3 is not a delimiter")
    isa = text[:_ISA_LEN]
    if isa.count(sep) != 16 or isa.rfind(sep) != _ISA_LEN - 3:
        raise InputError("ISA16", f"the ISA segment is not the fixed {_ISA_LEN}-character layout")
    if text[_ISA_LEN - 1].isalnum():
        raise InputError("ISA", f"no segment terminator after ISA16 (found {text[105]!r})")
    return text


def read_segments(text: str, *, field: str | None = None) -> Iterator[Segment]:
    """Yield the segments of an X12 interchange, honouring its ISA-declared delimiters.

    An error names the ISA element at fault, or ``field`` (the record field that carried
    the text, such as a payer file's ``body``) with the ISA detail in its reason.
    """
    if field is None:
        yield from _read(text)
        return
    try:
        yield from _read(text)
    except InputError as exc:
        raise InputError(field, f"not a readable X12 interchange: {exc}") from exc


def _read(text: str) -> Iterator[Segment]:
    text = _check_isa(text)
    fast = _split(text)
    if fast is not None:
        yield from fast
        return
    yield from _read_pyx12(text)


_VERSIONS = ("00401", "00501")
_OPENS = {"ISA": "ISA", "GS": "GS", "ST": "ST"}
_CLOSES = {"IEA": "ISA", "GE": "GS", "SE": "ST"}
_ENVELOPE = frozenset(_OPENS) | frozenset(_CLOSES)


def _split(text: str) -> list[Segment] | None:
    """The segments as pyx12's reader gives them, or None where its reader raises (or
    might): then pyx12 reads the text and says why."""
    rows = _rows(text)
    if rows is None:
        return None
    subele = text[_ISA_LEN - 2]
    # An element's text is its components joined again: only the split is left for later.
    # The ISA's elements are never split: ISA16 is the separator itself.
    return [
        Segment(row[0], tuple(row[1:]), None, number, None if row[0] == "ISA" else subele)
        for number, row in enumerate(rows, start=1)
    ]


def segment_rows(text: str) -> tuple[str, list[list[str]] | None]:
    """The interchange's segments as lists of their elements, the segment id first: what
    ``read_segments`` yields, without a ``Segment`` made for each (a reader that names a
    segment only when it refuses one reads these). Returns the text as read (what precedes
    the ISA stripped) and the rows, or None where ``read_segments`` hands the text to pyx12;
    raises InputError as ``read_segments`` does on text that is not X12."""
    text = _check_isa(text)
    return text, _rows(text)


def _rows(text: str) -> list[list[str]] | None:
    """``_split``'s segments as element lists, or None where pyx12 must read the text."""
    if text[84:89] not in _VERSIONS:
        return None
    seg_term, ele_term = text[_ISA_LEN - 1], text[3]
    parts = text.split(seg_term)
    parts.pop()  # what follows the last terminator is never read
    out: list[list[str]] = []
    append = out.append
    loops: list[str] = []
    for part in parts:
        line = part.lstrip("\n\r")
        if not line:
            break  # an empty segment ends the reading, as in pyx12
        if line[0] == " ":
            line = line.lstrip()
            if not line:
                return None  # pyx12 fails on it (IndexError)
        elems = line.split(ele_term)
        seg_id = elems[0]
        if seg_id in _ENVELOPE:
            if seg_id == "ISA":
                if len(elems) != 17:
                    return None  # pyx12: "The ISA segment must have 16 elements"
                loops.append(seg_id)
            elif seg_id in _OPENS:
                loops.append(seg_id)
            else:
                # pyx12 drops an unterminated inner loop, then reads the one outside it
                if not loops:
                    return None
                if seg_id != "SE" and loops[-1] != _CLOSES[seg_id]:
                    loops.pop()
                    if not loops:
                        return None
                loops.pop()
        append(elems)
    return out


def _read_pyx12(text: str) -> Iterator[Segment]:
    try:
        reader = pyx12.x12file.X12Reader(io.StringIO(text))
        for number, seg in enumerate(reader, start=1):
            yield _convert(seg, reader.subele_term or ":", number)
    except (pyx12.errors.X12Error, pyx12.errors.EngineError, IndexError) as exc:
        raise InputError("ISA", f"unreadable X12 envelope: {exc}") from exc


def _convert(seg: pyx12.segment.Segment, subele: str, number: int) -> Segment:
    # Read pyx12's parsed composites directly: get_value() per element costs ~4x the reading.
    comps = tuple([tuple([e.value for e in comp.elements]) for comp in seg.elements])
    values = tuple([parts[0] if len(parts) == 1 else subele.join(parts) for parts in comps])
    return Segment(seg.seg_id or "", values, comps, number)
