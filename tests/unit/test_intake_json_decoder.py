"""Intake decodes JSON with msgspec first and the standard decoder as judge and fallback
(``services.intake.domain._loads``): for every text, the same value (types, order, Decimal
digits) or the same refusal as ``json.loads`` with intake's hooks.

Held on chosen edge cases, on every body of both simulator mixes, on JSON generated and
formatted at random, on random cuts and insertions in it (mostly invalid), and at the
nesting depths where Python's recursion limit stops one decoder and not yet the other.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from services.intake import domain


def reference(text: str) -> Any:
    """``_loads`` before msgspec: the standard decoder with intake's hooks (called as
    ``_loads`` calls it, so that both meet the recursion limit at the same depth)."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return domain._DECODER.decode(text)


def test_the_judge_is_json_loads_with_intakes_hooks() -> None:
    for text in ['{"a": 1.50, "b": [1, true, null]}', '{"a": NaN}', "\ufeff{}", "{"]:
        assert outcome(reference, text) == outcome(
            lambda t: json.loads(t, parse_constant=domain._reject_constant, parse_float=Decimal),
            text,
        )


def outcome(loads: Any, text: str) -> Any:
    """What a decoder makes of ``text``: its value, with every type spelled out, or its
    refusal."""
    try:
        value = loads(text)
    except json.JSONDecodeError as exc:
        return ("json", exc.msg, exc.pos, exc.lineno, exc.colno)
    except InputError as exc:
        return ("input", exc.field, exc.reason)
    except RecursionError:
        return ("recursion",)
    except ArithmeticError as exc:  # an exponent Decimal cannot hold
        return ("arithmetic", type(exc).__name__)
    return ("ok", typed(value))


def typed(value: Any) -> list[Any]:
    """``value`` as a flat list of tokens, with the type of every part beside it (True and 1
    differ, so do 1 and Decimal('1'), and Decimal('1.50') and Decimal('1.5')); iterative,
    so that values nested near the recursion limit can be compared."""
    tokens: list[Any] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            tokens.append(("dict", len(item)))
            for k, v in reversed(list(item.items())):
                stack += [v, k]
        elif isinstance(item, list):
            tokens.append(("list", len(item)))
            stack.extend(reversed(item))
        else:
            tokens.append((type(item).__name__, repr(item)))
    return tokens


def same(text: str) -> None:
    assert outcome(domain._loads, text) == outcome(reference, text), text[:200]


EDGES = [
    '{"a": 1.50, "b": 1, "c": 1e5, "d": -0.0, "e": [true, null, "x"], "f": 1E+5, "g": 0.1e-400}',
    '{"a": 1, "a": 2, "b": 3, "a": 4}',  # duplicate keys: the last value, the first place
    '{"n": 123456789012345678901234567890, "m": -9223372036854775809}',
    '{"n": 18446744073709551616, "m": 10000000000000000000, "z": -0}',
    '{"a": 1e999, "b": -1e999, "c": 1.0, "d": 100e-2}',
    '{"a": 1e999999999999999999, "b": 1e-1000000000000000030}',  # Decimal holds these
    '{"v": -100e000999999999999999998}',  # and not this: InvalidOperation from both
    '{"a": NaN}',
    '{"a": Infinity}',
    '{"a": -Infinity}',
    '{"a": "\\ud800"}',
    '{"a": "\\ude00 x"}',
    '{"\\ud83d\\ude00": "\\ud83d\\ude00"}',
    '{"a": "a\\u0000b\\/\\"\\\\\\b\\f\\n\\r\\t"}',
    '{"a": "\t"}',
    '{"a": "\x7f\u00e9\u2028"}',
    '{"a": "\\x"}',
    '{"a": 01}',
    '{"a": 1.}',
    '{"a": .5}',
    '{"a": +1}',
    '{"a": -}',
    '{"a": 1} x',
    '{"a": []}\u00a0',
    ' \t\r\n{"a": 1} \n',
    '{"a": 1,}',
    "[1, 2]",
    '"x"',
    "1",
    "",
    " ",
    "{",
    "\ufeff{}",
    "\ufeff\ufeff{}",
    '{"a": tru}',
    "{'a': 1}",
    "[" * 100_000,
]


@pytest.mark.parametrize("text", EDGES)
def test_edge_cases_decode_and_refuse_as_json_loads(text: str) -> None:
    same(text)


def test_an_exponent_a_decimal_cannot_hold_is_refused_naming_the_body() -> None:
    """Both decoders raise decimal.InvalidOperation for it (found by the cut-and-spliced
    test below); intake refuses the message with a reason instead of an unexplained
    exception."""
    with pytest.raises(InputError) as refused:
        domain._load_json('{"v": -100e000999999999999999998}')
    assert refused.value.field == "body"
    assert "exponent" in refused.value.reason
    assert domain._load_json('{"v": 1e999999999999999999}') == {
        "v": Decimal("1E+999999999999999999")
    }


def nested(shape: str, depth: int) -> str:
    close = "]" if shape == "[" else "}"
    return shape * depth + "1" + close * depth


@pytest.mark.parametrize("shape", ["[", '{"a": '])
def test_deep_nesting_is_refused_where_json_loads_refuses_it(shape: str) -> None:
    """msgspec nests a few levels deeper than the standard decoder before the recursion
    limit stops it, so intake calls it a few frames further down: around the standard
    decoder's limit (where it is at this stack depth), intake refuses exactly what it
    refuses, and msgspec decodes up to a few levels before it."""
    deepest = next(
        d for d in range(1, 3000) if outcome(reference, nested(shape, d)) == ("recursion",)
    )
    assert domain._fast_decode(nested(shape, deepest - 8)) is not None
    for depth in [100, 499, 500, *range(deepest - 8, deepest + 8), 5000]:
        same(nested(shape, depth))


@pytest.mark.parametrize("mix", ["office", "all"])
def test_every_body_of_the_simulator_decodes_as_with_json_loads(mix: str) -> None:
    from sim.ehr import generate

    checked = 0
    for _, _, body in generate(300, seed=17, fmt="mix", mix=mix):  # type: ignore[arg-type]
        text = body.decode("utf-8", "replace")
        if text.lstrip().startswith(("{", "[")):
            same(text)
            checked += 1
    assert checked > 100


_NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # JSON text is UTF-8: none to write
_JSON_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=_NO_SURROGATES)
    | st.sampled_from('"\\/\x00\x1f'),
    max_size=12,
)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_JSON_TEXT, inner, max_size=5),
    max_leaves=30,
)


def _plain(value: Any) -> Any:
    """Decimals as JSON numbers (json.dumps writes them as strings otherwise)."""
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() else value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@settings(max_examples=400, deadline=None)
@given(_VALUES, st.booleans(), st.sampled_from([None, 0, 2]))
def test_generated_json_decodes_as_with_json_loads(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    same(json.dumps(_plain(value), ensure_ascii=ascii_only, indent=indent, default=str))


@settings(max_examples=600, deadline=None)
@given(_VALUES, st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=4))
def test_cut_and_spliced_json_decodes_or_is_refused_as_with_json_loads(
    value: Any, seed: int, edits: int
) -> None:
    text = json.dumps({"v": _plain(value)}, ensure_ascii=bool(seed & 1), default=str)
    rng = random.Random(seed)
    pieces = ['"', "\\", "{", "}", "[", "]", ",", ":", "-", ".", "e", "0", " ", "\t", "\x00",
              "\\u", "\\ud800", "NaN", "true", "\u00e9", "1"]  # fmt: skip
    for _ in range(edits):
        at = rng.randrange(len(text) + 1)
        if rng.random() < 0.5 and text:
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + rng.choice(pieces) + text[at:]
    same(text)
