"""The bad-input corpus (tests/bad_inputs/*/case.json): one clear line, exit status 2.

Every case is run through the real command line in-process (click's runner) and checked
for the error category, its message, a single line and no traceback; a sample also runs
as a real subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyhf_dask.cli import main

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.json").exists())


def _case(name: str) -> tuple[list[str], str, str]:
    spec = json.loads((CORPUS / name / "case.json").read_text())
    args = [a.replace("{case}", str(CORPUS / name)) for a in spec["args"]]
    return (
        ["scan", *args, "--kernel", "pyhf", "--executor", "synchronous"],
        spec["category"],
        spec["match"],
    )


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_line(name):
    args, category, match = _case(name)
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error [{category}]: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert not (CORPUS / name / "out.nc").exists()


@pytest.mark.parametrize(
    "name", ["01_malformed_workspace_json", "26_archive_parent_path", "24_poi_missing_from_model"]
)
def test_bad_input_in_a_real_process(name):
    args, category, _ = _case(name)
    result = subprocess.run(
        [sys.executable, "-m", "pyhf_dask", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error [{category}]: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
