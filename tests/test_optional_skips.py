"""Optional-dependency skips are opt-in: a module the ``test`` extra installs must import.

By default (tests/conftest.py) a ``pytest.importorskip`` whose module does not import fails
the run; ``--skip-missing`` skips instead. A child pytest collects a test file whose
module-level ``importorskip("nbclient")`` meets a blocked ``nbclient`` (``None`` in
``sys.modules``: the import raises, as a broken installation does).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import sys
sys.modules["nbclient"] = None  # a broken installation: the import raises ImportError
import pytest
sys.exit(pytest.main(["tests/test_notebook.py", "--collect-only", "-q", "-p", "no:cacheprovider",
                      *sys.argv[1:]]))
"""


def _collect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_a_missing_optional_dependency_fails_by_default() -> None:
    done = _collect()
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout + done.stderr
    assert "optional dependency 'nbclient' does not import" in done.stdout
    assert "--skip-missing" in done.stdout


def test_skip_missing_opts_in_to_the_skip() -> None:
    done = _collect("--skip-missing")
    assert done.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, done.stdout + done.stderr
    assert "SKIPPED" in done.stdout and "could not import 'nbclient'" in done.stdout
    assert "does not import" not in done.stdout


def test_an_installed_dependency_is_returned() -> None:
    import json

    assert pytest.importorskip("json") is json
