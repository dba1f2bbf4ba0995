"""Verdicts kept on disk: a passed check is remembered, a refusal is checked every time."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_schema import WORKSPACE as SCHEMA_WORKSPACE

from pyhf_dask import cache
from pyhf_dask.exceptions import InvalidWorkspace
from pyhf_dask.grid import SignalGrid
from pyhf_dask.schema import digest
from pyhf_dask.validate import validate_grid

WORKSPACE = copy.deepcopy(SCHEMA_WORKSPACE)  # every modifier type


def _inputs(folder: Path, workspace: dict[str, Any]) -> list[str]:
    patches = [
        {
            "metadata": {"name": f"p_{s:.0f}", "values": [s]},
            "patch": [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [s, 1.0]}],
        }
        for s in (1.0, 2.0, 3.0)
    ]
    patchset = {
        "metadata": {
            "name": "t",
            "description": "test",
            "references": {"hepdata": "ins0000000"},
            "digests": {"sha256": digest(workspace)},
            "labels": ["s"],
        },
        "version": "1.0.0",
        "patches": patches,
    }
    (folder / "bkg.json").write_text(json.dumps(workspace))
    (folder / "patchset.json").write_text(json.dumps(patchset))
    return [str(folder / "bkg.json"), str(folder / "patchset.json")]


def test_kept_verdicts_are_found_by_their_key_only(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("PYHF_DASK_JAX_CACHE", str(tmp_path))
    assert not cache.known("model", "a")
    cache.keep("model", "a")
    assert cache.known("model", "a")
    assert not cache.known("model", "b")
    assert not cache.known("other", "a")
    monkeypatch.setenv("PYHF_DASK_JAX_CACHE", "off")
    assert cache.cache_root() is None
    cache.keep("model", "c")  # nowhere to keep it
    assert not cache.known("model", "c")


def test_an_unwritable_cache_only_costs_the_check_again(monkeypatch: Any, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"  # the cache folder cannot be made under a file
    blocked.write_text("")
    monkeypatch.setenv("PYHF_DASK_JAX_CACHE", str(blocked))
    cache.keep("model", "a")
    assert not cache.known("model", "a")


def test_a_corrupt_verdict_is_not_believed(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("PYHF_DASK_JAX_CACHE", str(tmp_path))
    cache.keep("model", "a")
    (kept,) = (tmp_path / "pyhf_dask_checks").glob("model-*.json")
    kept.write_text("{not json")
    assert not cache.known("model", "a")
    kept.write_text(json.dumps({"key": "another"}))
    assert not cache.known("model", "a")


_SCRIPT = """
import sys
from pyhf_dask.grid import SignalGrid
from pyhf_dask.validate import validate_grid
grid = SignalGrid.from_inputs(sys.argv[1:])
validate_grid(grid, poi_name="mu")
print("pyhf" in sys.modules)
"""


def test_a_second_scan_of_the_same_inputs_checks_without_pyhf(tmp_path: Path) -> None:
    """The model check builds pyhf's model once; later processes find its verdict."""
    paths = _inputs(tmp_path, WORKSPACE)
    env = {**os.environ, "PYHF_DASK_JAX_CACHE": str(tmp_path / "cache")}

    def imports_pyhf() -> bool:
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, *paths],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return done.stdout.strip() == "True"

    assert imports_pyhf()  # cold: pyhf builds the model
    assert not imports_pyhf()  # warm: the kept verdict
    env["PYHF_DASK_JAX_CACHE"] = "off"
    assert imports_pyhf()  # no cache: checked again


def _reuse_the_poi_name(spec: dict[str, Any]) -> None:
    spec["channels"][0]["samples"][1]["modifiers"].append(
        {"name": "mu", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
    )


def _lumi_without_inits(spec: dict[str, Any]) -> None:
    del spec["measurements"][0]["config"]["parameters"][0]["inits"]


@pytest.mark.parametrize("breaks", [_reuse_the_poi_name, _lumi_without_inits])
def test_a_model_pyhf_cannot_build_is_refused_every_time(
    monkeypatch: Any, tmp_path: Path, breaks: Any
) -> None:
    """Valid under pyhf's schema, but pyhf builds no model: refused, never remembered."""
    monkeypatch.setenv("PYHF_DASK_JAX_CACHE", str(tmp_path / "cache"))
    broken = copy.deepcopy(WORKSPACE)
    breaks(broken)
    grid = SignalGrid.from_inputs(_inputs(tmp_path, broken))
    for _ in range(2):
        with pytest.raises(InvalidWorkspace, match="the model cannot be built"):
            validate_grid(grid, poi_name="mu")
    assert not list((tmp_path / "cache").glob("**/model-*.json"))
