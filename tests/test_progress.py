"""The command line's progress display counts fitted points (issue 21), not Dask tasks."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from pyhf_dask.cli import main
from pyhf_dask.grid import simple_workspace
from pyhf_dask.progress import PointProgress


def _inputs(tmp_path: Path, n: int) -> Path:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    (tmp_path / "BkgOnly.json").write_text(json.dumps(ws))
    for k in range(1, n + 1):
        patch = [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [3.0 * k, k]}]
        (tmp_path / f"patch.sig_{k}.json").write_text(json.dumps(patch))
    return tmp_path


def test_progress_counts_points_of_finished_chunks() -> None:
    out = io.StringIO()
    bar = PointProgress(5, out=out, interval=0.0)
    bar._posttask("pyhf-dask-fit-t-0", {"status": ["converged"] * 2}, {}, {}, 0)
    bar._posttask("pyhf-dask-fit-t-0", {"status": ["converged"] * 2}, {}, {}, 0)  # seen
    bar._posttask("other-task", {"status": ["converged"] * 9}, {}, {}, 0)  # not a fit
    assert bar.done == 2 and "2/5 points (40%)" in out.getvalue()
    bar._posttask("pyhf-dask-fit-t-2", {"status": ["failed"] * 3}, {}, {}, 0)
    assert "5/5 points (100%)" in out.getvalue()


def test_cli_progress_shows_points(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, 3)
    result = CliRunner().invoke(
        main,
        [
            "scan",
            str(inputs),
            "--kernel",
            "pyhf",
            "--chunk-size",
            "1",
            "--executor",
            "synchronous",
            "--progress",
            "--no-table",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3/3 points (100%)" in result.output
    assert "1/3 points (33%)" in result.output or "2/3 points (67%)" in result.output
