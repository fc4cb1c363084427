"""Code normalisation and the NPI check are cached: the cached answers are the computed ones.

Both are pure functions of a string, asked about the same codes and providers on every
claim. The judge is the function itself, uncached (``__wrapped__``), on every code and NPI
of the simulators' validated encounters and on written forms a sender may use (dots,
spaces, lower case, wrong lengths, wrong check digits), each asked twice so the second
answer comes from the cache.
"""

from __future__ import annotations

import random
import re

import sim_corpus
import simple_icd_10_cm as icd

from services.refdata import npi
from services.refdata.codesets import normalize_code


def written_forms(code: str) -> list[str]:
    return [code, code.lower(), f" {code} ", code.replace(".", ""), f"{code[:3]}.{code[3:]}"]


def test_normalize_code_answers_as_computed() -> None:
    codes = set(icd.get_all_codes(with_dots=True)[::40])
    for mix in sim_corpus.MIXES:
        for verdict in sim_corpus.validated(mix):
            enc = verdict.coded.encounter
            codes |= {d.code for d in verdict.coded.diagnoses}
            codes |= {s.code for s in enc.services if s.code}
    assert len(codes) > 2000
    for code in sorted(codes):
        for form in written_forms(code):
            for _ in range(2):
                assert normalize_code(form) == normalize_code.__wrapped__(form), form
    assert normalize_code("e11.9") == "E119" == normalize_code(" E11 .9")


def test_npi_check_answers_as_computed() -> None:
    rng = random.Random(3)
    values: set[str | None] = {None, "", "123456789", "12345678901", "123456789X"}
    values |= {f"{rng.randrange(10**10):010d}" for _ in range(3000)}
    values |= {npi_of(rng) for _ in range(300)}
    for mix in sim_corpus.MIXES:
        for verdict in sim_corpus.validated(mix):
            values |= set(re.findall(r"\b\d{10}\b", verdict.coded.encounter.model_dump_json()))
    assert sum(bool(npi.is_valid(v)) for v in values) > 300
    for value in sorted(values, key=str):
        for _ in range(2):
            assert npi.is_valid(value) == npi.is_valid.__wrapped__(value), value


def npi_of(rng: random.Random) -> str:
    base = f"{rng.randrange(10**8, 10**9)}"
    return base + npi.check_digit(base)
