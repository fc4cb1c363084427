"""The offline chain as the README gives it: each stage's errors on stderr (never on the
stdout the next stage reads), the real reason named, one line for a file that is missing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from services.x12.validate import validate_x12

EXAMPLE = Path(__file__).parents[2] / "examples" / "office-visit.fhir.json"


def claimflow(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run the CLI in this process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    sys.stdout, sys.stderr = out, err
    try:
        code = cli.main(list(args))
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def test_the_readme_chain_bills_the_example_and_names_why_a_2019_visit_cannot_be(
    tmp_path: Path,
) -> None:
    """`intake parse | code | validate | claims build` on the shipped example and on the same
    visit in 2019: one 837 that pyx12 accepts, and the 2019 one stopped at coding with the
    code-set range on stderr; under pipefail the chain fails."""
    old = tmp_path / "visit-2019.fhir.json"
    old.write_text(EXAMPLE.read_text().replace("2026-03-10", "2019-03-12"))
    exe = f"{sys.executable} -m pipeline.cli"
    chain = f"{exe} intake parse {EXAMPLE} {old} | {exe} code | {exe} validate | {exe} claims build"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMFLOW_")}
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", chain],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=240,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    code_errors = [line for line in run.stderr.splitlines() if line.startswith("claimflow code:")]
    assert len(code_errors) == 1, run.stderr
    assert "2019-03-12 (FY2019) is outside the ICD-10 code sets" in code_errors[0]
    assert "FY2023-FY2027" in code_errors[0]
    assert "Field required" not in run.stderr  # no later stage misread an error as input
    # stdout holds the example's 837 and nothing else.
    assert run.stdout.startswith("ISA*") and run.stdout.count("ST*837*") == 1
    assert "CLM*" in run.stdout and "SV1*HC:99214*185" in run.stdout
    assert validate_x12(run.stdout) == []


def test_a_missing_file_is_one_line() -> None:
    code, out, err = claimflow("intake", "parse", "no-such-bundle.json")
    assert code == 1 and out == ""
    assert err == "claimflow intake parse: no-such-bundle.json: no such file\n"


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    code, _, err = claimflow("code", str(tmp_path))
    assert code == 1 and err.strip() == f"claimflow code: {tmp_path}: is a folder, not a file"


def test_the_wrong_input_is_named_as_such() -> None:
    """A FHIR bundle fed to `validate` (a stage skipped): not 'event_id: Field required'."""
    code, out, err = claimflow("validate", str(EXAMPLE))
    assert code == 1 and out == ""
    assert "not a coded encounter (what `claimflow code` prints): no event_id" in err


def test_an_error_line_of_the_stage_before_passes_its_reason_on() -> None:
    """`2>&1 |` puts the stage before's errors on our stdin: say what failed there."""
    line = json.dumps(
        {"input": "stdin:1", "error": "InputError", "reason": "outside the code sets"}
    )
    code, out, err = claimflow("validate", stdin=line + "\n")
    assert code == 1 and out == ""
    assert "the stage before failed on stdin:1: outside the code sets" in err


def test_no_input_on_stdin_fails_and_says_why() -> None:
    code, out, err = claimflow("claims", "build", stdin="")
    assert code == 1 and out == ""
    assert "no input on stdin (the stage before printed nothing" in err


@pytest.mark.parametrize("stage", [["code"], ["validate"], ["claims", "build"]])
def test_errors_never_reach_stdout(stage: list[str]) -> None:
    code, out, err = claimflow(*stage, stdin="{}\nnot json\n")
    assert code == 1 and out == "" and err.count("\n") >= 2


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    import argparse

    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(" ".join([*path, *(action.option_strings or [action.dest])]))

    walk(cli.build_parser(), ["claimflow"])
    assert missing == []
