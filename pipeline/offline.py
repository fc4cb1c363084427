"""What every offline stage command shares: inputs from files or stdin, one JSON object per
output, errors as JSON with the field and reason, and reading a topic from its beginning.

The stages register their commands (``claimflow.commands`` entry points) and call these.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pipeline.settings import Settings


def inputs(files: list[str]) -> Iterator[tuple[str, bytes | Unreadable]]:
    """Each input: a file's whole content, or one line of stdin when no file (or -)."""
    if not files or files == ["-"]:
        for n, line in enumerate(sys.stdin.buffer, 1):
            if line.strip():
                yield f"stdin:{n}", line
        return
    for name in files:
        try:
            data = Path(name).read_bytes()
        except FileNotFoundError:
            yield name, Unreadable("no such file")
            continue
        except IsADirectoryError:
            yield name, Unreadable("is a folder, not a file")
            continue
        except OSError as exc:
            yield name, Unreadable(exc.strerror or type(exc).__name__)
            continue
        stripped = data.strip()
        # A file of JSON lines (what the stages print) holds several inputs.
        if stripped.startswith(b"{") and b"\n{" in stripped and _is_json_lines(stripped):
            for n, line in enumerate(stripped.splitlines(), 1):
                if line.strip():
                    yield f"{name}:{n}", line
        else:
            yield name, data


def _is_json_lines(data: bytes) -> bool:
    try:
        json.loads(data)
        return False
    except ValueError:
        return True


class Unreadable(Exception):
    """An input file that cannot be read: one line for the user, not a traceback."""


def run(
    files: list[str],
    handle: Callable[[str, bytes], list[str]],
    stage: str,
    expects: str | None = None,
    finish: Callable[[], list[str]] | None = None,
) -> int:
    """Run ``handle`` on every input, then ``finish`` (for work that needs every input);
    print outputs on stdout and errors on stderr (never stdout: the next stage of a pipe
    reads that); exit 1 on any error.

    ``expects`` names the input a stage reads (what the stage before it prints), so a line
    of the wrong kind is reported as such rather than as its first missing field. A stage
    that reads stdin and gets nothing says so and fails: the stage before it failed.
    """
    from pydantic import ValidationError

    from pipeline.errors import InputError

    failed = count = 0
    for name, data in inputs(files):
        count += 1
        if isinstance(data, Unreadable):
            failed += 1
            print(f"claimflow {stage}: {name}: {data}", file=sys.stderr)
            continue
        try:
            for line in handle(name, data):
                print(line, flush=True)
        except (InputError, ValidationError, ValueError) as exc:
            failed += 1
            print(f"claimflow {stage}: {name}: {_reason(exc, data, expects)}",
                  file=sys.stderr, flush=True)  # fmt: skip
    if finish is not None and count:
        try:
            for line in finish():
                print(line, flush=True)
        except (InputError, ValueError) as exc:
            failed += 1
            print(f"claimflow {stage}: {_reason(exc, b'', None)}", file=sys.stderr)
    if not count and (not files or files == ["-"]):
        print(
            f"claimflow {stage}: no input on stdin"
            + (" (the stage before printed nothing: see its errors above)" if expects else ""),
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0


def _reason(exc: Exception, data: bytes, expects: str | None) -> str:
    """One line: the field and the reason, or what the input is instead of what was expected."""
    from pydantic import ValidationError

    from pipeline.errors import InputError
    from pipeline.stage import field_of, reason_of

    if isinstance(exc, ValidationError) and expects:
        try:
            value = json.loads(data)
        except ValueError:
            return f"not JSON: {expects} is one JSON object per line"
        if isinstance(value, dict) and {"input", "error", "reason"} <= value.keys():
            # The stage before printed its error on our stdin (2>&1?): pass its reason on.
            return f"the stage before failed on {value['input']}: {value['reason']}"
        missing = [e for e in exc.errors() if e["type"] == "missing" and len(e["loc"]) == 1]
        if len(missing) > 1:
            fields = ", ".join(str(e["loc"][0]) for e in missing[:4])
            return f"not {expects}: no {fields}" + (" …" if len(missing) > 4 else "")
    where = field_of(exc)
    reason = exc.reason if isinstance(exc, InputError) else reason_of(exc)
    if isinstance(exc, ValidationError):
        return reason  # reason_of starts with the field already
    return f"{where}: {reason}" if where else reason


def now() -> datetime:
    from pipeline.models import utcnow

    return utcnow()


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def read_topic(topic: str, idle_s: float) -> list[Any]:
    """Every record of a topic from the beginning, until none arrives for ``idle_s``."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pipeline.kafka import client_config
    from pipeline.serde import registry

    settings = Settings()
    reg = registry()
    consumer = Consumer(
        {
            **client_config(settings.require_bootstrap(), settings),
            "group.id": f"claimflow-cli-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    name = settings.topic(topic)
    meta = consumer.list_topics(name, timeout=10)
    if name not in meta.topics or meta.topics[name].error is not None:
        consumer.close()
        return []
    consumer.assign(
        [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.topics[name].partitions]
    )
    # Tansu's high watermarks read low (pipeline/broker.py): stop when the topic goes quiet.
    values: list[Any] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s:
        batch = [m for m in consumer.consume(500, 0.2) if not m.error()]
        if batch:
            quiet_since = time.monotonic()
        values += [reg.decode(topic, m.value() or b"") for m in batch]
    consumer.close()
    return values
