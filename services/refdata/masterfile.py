"""What every master-data loader shares: the error that names file, row and field.

A deployment's master data (the chargemaster, provider profiles, the payer registry) is read
once at start-up; a file that cannot be read stops the process with one sentence a person can
act on, rather than billing with half a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MasterDataError(ValueError):
    """A master-data file that cannot be used: which file, which row or path, which field."""

    def __init__(self, path: Path | str, where: str, field: str, reason: str) -> None:
        self.path = str(path)
        self.where = where
        self.field = field
        self.reason = reason
        place = f", {where}" if where else ""
        super().__init__(f"{Path(path).name}{place}, field {field!r}: {reason}")


def read_json(path: Path, what: str) -> Any:
    """A JSON master-data file, or a MasterDataError saying where it is broken."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read the {what}: {exc.strerror}"
        raise MasterDataError(path, "", "(file)", reason) from None
    except UnicodeDecodeError as exc:
        raise MasterDataError(path, f"byte {exc.start}", "(file)", "not UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MasterDataError(
            path, f"line {exc.lineno} column {exc.colno}", "(file)", f"invalid JSON: {exc.msg}"
        ) from None


def pydantic_field(exc: Any) -> tuple[str, str]:
    """The first error of a pydantic ValidationError as (dotted field, message)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(value)"
    return loc, err.get("msg", "invalid")
