"""The layering holds: simulators > stages > X12 and reference data > plumbing, and no
stage imports another (the import-linter contract in pyproject.toml, as `make lint` runs
it), plus the plain reading of it: nothing in pipeline/ imports a stage or a simulator."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold() -> None:
    # In a process of its own: import-linter configures logging with dictConfig, which
    # disables every logger that exists, and tests run after it would capture no log line.
    check = "from importlinter.cli import lint_imports as l; raise SystemExit(l(no_cache=True))"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and " kept, 0 broken" in done.stdout, done.stdout + done.stderr


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_plumbing_imports_no_stage_and_no_simulator() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "pipeline").rglob("*.py")
        for module in _imports(path)
        if module.split(".")[0] in {"services", "sim", "bench"}
    }
    assert not offenders, sorted(offenders)


def test_no_simulator_lives_among_the_services() -> None:
    services = ROOT / "services"
    # What the simulators were called when they lived in the services.
    named = [p for p in services.rglob("*.py") if "simulator" in p.stem or "payer_sim" in p.stem]
    assert not named
    assert not [
        f"{path.relative_to(ROOT)}: {module}"
        for path in services.rglob("*.py")
        for module in _imports(path)
        if module.split(".")[0] == "sim"
    ]
