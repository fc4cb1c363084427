"""The National Provider Identifier check digit (CMS): Luhn over ``80840`` + nine digits.

One implementation for everyone who checks or makes an NPI: the scrubber, the 837
writer and the EHR simulator.
"""

from __future__ import annotations

import functools
import re


def check_digit(base9: str) -> str:
    """The tenth digit of the NPI whose first nine digits are ``base9``."""
    total = 0
    for i, ch in enumerate(reversed("80840" + base9)):
        d = int(ch)
        if i % 2 == 0:  # doubled: the check digit will sit to the right
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


@functools.lru_cache(maxsize=4096)
def is_valid(npi: str | None) -> bool:
    """Whether ``npi`` is ten digits whose last is the check digit of the first nine.

    Cached: validation checks the same providers' NPIs on every claim (a handful per
    practice), and the Luhn sum per call was ~5% of its rules' time."""
    if npi is None or not re.fullmatch(r"\d{10}", npi):
        return False
    return check_digit(npi[:9]) == npi[9]
