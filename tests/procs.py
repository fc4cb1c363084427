"""The process tree from outside, through /proc: what a command started, and what is left."""

from __future__ import annotations

import os
from pathlib import Path


def _proc_entries() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (services run in their own sessions, so the
    process group would miss them; parent links do not)."""
    parents = {pid: st[0] for pid in _proc_entries() if (st := _stat(pid))}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def running_in(folder: Path) -> list[str]:
    """Processes, anywhere on the machine, whose working directory is ``folder``."""
    left = []
    for pid in _proc_entries():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        st = _stat(pid)
        if cwd == str(folder) and st and st[1] != "Z":
            left.append(f"{pid} {cmd[:120]}")
    return left


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (0 when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def state(pid: int) -> str | None:
    """A live process's state letter (R, S, Z …), or None when there is no such process."""
    st = _stat(pid)
    return st[1] if st else None
