"""Every example script in examples/ runs with the arguments its docstring documents.

The commands are read from each script's docstring (its lines ``python examples/NAME.py
...``), not copied here: ``ARCHIVE.tar.gz`` stands for the sbottom archive shipped in
``data/``; a command that needs a real Globus Compute endpoint (``<UUID>``) cannot run here
and is the only one left out. Each command runs from a temporary folder (where the scripts
write their outputs) with this interpreter.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pyhf_dask import SignalGrid

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ARCHIVE = ROOT / "data" / "pyhf-ins1748602-probability-models.tar.gz"
COMMAND = re.compile(r"^\s*python (examples/\S+\.py)(.*?)(?:#.*)?$", re.M)
NEEDS_ENDPOINT = "<UUID>"


def documented_commands(script: Path) -> list[list[str]]:
    """The command lines of ``script``'s docstring that name ``script`` itself."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    commands = []
    for found in COMMAND.finditer(doc):
        if Path(found.group(1)).name != script.name:
            continue
        args = found.group(2).strip().rstrip("`").strip()
        commands.append([found.group(1), *shlex.split(args)])
    return commands


SCRIPTS = sorted(EXAMPLES.glob("*.py"))
CASES = [
    (script.name, command)
    for script in SCRIPTS
    for command in documented_commands(script)
    if NEEDS_ENDPOINT not in command
]


def test_every_example_documents_a_command_that_runs_here() -> None:
    assert SCRIPTS
    for script in SCRIPTS:
        commands = documented_commands(script)
        assert commands, f"{script.name}: its docstring shows no 'python examples/...' line"
        assert any(NEEDS_ENDPOINT not in c for c in commands), script.name


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(ARCHIVE) if arg == "ARCHIVE.tar.gz" else arg for arg in command[1:]]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(ROOT / command[0]), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("name", "command"), CASES, ids=[shlex.join(c[1:]) or n for n, c in CASES])
def test_example_runs_with_its_documented_arguments(
    name: str, command: list[str], tmp_path: Path
) -> None:
    if name == "globus_compute_demo.py" or "--plot" in command:
        pytest.importorskip("globus_compute_endpoint" if "--plot" not in command else "matplotlib")
    proc = _run(command, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    if name == "globus_compute_demo.py":
        with xr.open_dataset(tmp_path / "demo.nc") as got:
            ds = got.load()
        patch = command[command.index("--patch") + 1] if "--patch" in command else "sbottom_1300_*"
        grid = SignalGrid.from_path(ARCHIVE, region="RegionA").select([patch])
        assert ds.point.values.tolist() == list(grid.names)
        assert (ds.status.values == "converged").all() or (ds.status.values == 0).all()
        assert np.isfinite(ds.CLs_obs.values).all()
        for name_, cls in zip(ds.point.values, ds.CLs_obs.values, strict=True):
            assert f"{name_:28s} CLs_obs = {cls:.4g}" in proc.stdout
        assert "wrote demo.nc" in proc.stdout
    if "--plot" in command:
        figure = tmp_path / command[command.index("--plot") + 1]
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if name == "delayed_to_endpoint.py":
        assert "'same': True" in proc.stdout
