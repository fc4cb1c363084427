"""What an end-to-end test shows when it waited in vain for the pipeline."""

from __future__ import annotations

from pipeline.supervisor import Supervisor
from pipeline.tracker import Tracker


def lost_report(tracker: Tracker, sup: Supervisor) -> str:
    """What a test that waited in vain shows: the sources not final, the services' exits
    and restarts, and the warnings and errors each service logged last."""
    lost = tracker.ledger.lost()
    lines = [f"lost {len(lost)}: {lost[:10]}", f"exits (service, code): {sup.exits}"]
    for child in sup.children.values():
        logged = child.log_path.read_text(errors="replace").splitlines()
        worse = [
            line for line in logged if '"level": "warning"' in line or '"level": "error"' in line
        ]
        alive = child.proc is not None and child.proc.poll() is None
        lines.append(f"{child.name}: restarts {child.restarts}, alive {alive}")
        lines += [
            f"  {line[:200]} ... {line[-300:]}" if len(line) > 500 else f"  {line}"
            for line in worse[-4:]
        ]
    return "\n".join(lines)
