"""The layering holds: simulators > stages > X12 and reference data > plumbing, and no
stage imports another (the import-linter contract in pyproject.toml, as `make lint` runs
it), plus the plain reading of it: nothing in pipeline/ imports a stage or a simulator."""

from __future__ import annotations

import ast
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


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
