"""File drop: one file per interchange in a directory, as an SFTP gateway would pick up.

The file appears whole or not at all: it is written to a hidden temporary name in the same
directory, flushed to disk, then renamed. Its name is fixed by the payer and the control
number, so a retry overwrites the same file instead of leaving a duplicate beside it.
Options: ``directory`` (default: ``<state_dir>/outbox/<adapter name>``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipeline.state import StateError, private_dir
from services.claims.adapters import AdapterContext, DeliveryError, DeliveryMeta, Receipt


class FileDropOptions(BaseModel):
    """Settings of one file-drop adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path | None = None


class FileDropAdapter:
    """Writes each interchange atomically as ``<payer>.<837P|837I>.<ISA13>.x12``."""

    def __init__(self, context: AdapterContext) -> None:
        options = FileDropOptions.model_validate(dict(context.options))
        self.name = context.name
        self.directory = options.directory or context.state_dir / "outbox" / context.name

    def deliver(self, interchange: bytes, meta: DeliveryMeta) -> Receipt:
        """Write the file (temp + fsync + rename); the same interchange always lands on one name."""
        target = self.directory / meta.file_name
        try:
            private_dir(self.directory)  # claims carry PHI: 0700, files 0600 (mkstemp)
            fd, tmp = tempfile.mkstemp(prefix=f".{meta.file_name}.", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(interchange)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(self.directory)
        except (OSError, StateError) as exc:
            raise DeliveryError(f"cannot write {target}: {exc}") from exc
        return Receipt(self.name, str(target), f"{len(interchange)} bytes")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
