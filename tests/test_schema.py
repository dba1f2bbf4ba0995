"""pyhf's schema, digest and version without importing pyhf say what pyhf says."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhf_dask.schema import SchemaError, digest, pyhf_version, validate

DATA = Path(__file__).parent / "data"

WORKSPACE: dict[str, Any] = {
    "channels": [
        {
            "name": "sr",
            "samples": [
                {
                    "name": "signal",
                    "data": [3.0, 1.0],
                    "modifiers": [
                        {"name": "mu", "type": "normfactor", "data": None},
                        {"name": "lumi", "type": "lumi", "data": None},
                    ],
                },
                {
                    "name": "bkg",
                    "data": [20.0, 10.0],
                    "modifiers": [
                        {"name": "jes", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                        {
                            "name": "shape",
                            "type": "histosys",
                            "data": {"hi_data": [21.0, 11.0], "lo_data": [19.0, 9.5]},
                        },
                        {"name": "stat", "type": "staterror", "data": [1.0, 0.5]},
                        {"name": "unc", "type": "shapesys", "data": [2.0, 1.0]},
                        {"name": "free", "type": "shapefactor", "data": None},
                    ],
                },
            ],
        }
    ],
    "observations": [{"name": "sr", "data": [22.0, 12.0]}],
    "measurements": [
        {
            "name": "meas",
            "config": {
                "poi": "mu",
                "parameters": [
                    {
                        "name": "lumi",
                        "auxdata": [1.0],
                        "sigmas": [0.02],
                        "bounds": [[0.9, 1.1]],
                        "inits": [1.0],
                    }
                ],
            },
        }
    ],
    "version": "1.0.0",
}

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(-2, 2),
        st.sampled_from(["", "mu", "sr", "normsys", "1.0.0", "data"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["name", "data", "type", "hi", "x"]), inner, max_size=2),
    ),
    max_leaves=4,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


ALL_PATHS = _paths(WORKSPACE)[1:]


@st.composite
def mutated(draw: Any) -> dict[str, Any]:
    """The workspace with one to three places replaced, removed or given an extra key."""
    spec = copy.deepcopy(WORKSPACE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = spec
        try:
            for step in path[:-1]:
                parent = parent[step]
            what = draw(st.sampled_from(["replace", "remove", "extra"]))
            if what == "replace":
                parent[path[-1]] = draw(json_values)
            elif what == "remove":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["extra", "name", "type"]))] = draw(json_values)
        except (KeyError, IndexError, TypeError):  # an earlier change moved the place
            continue
    return spec


def _verdict(check: Any, spec: Any, name: str) -> tuple[str, str] | None:
    try:
        check(spec, name)
    except SchemaError as exc:
        return exc.message, exc.path
    except pyhf.exceptions.InvalidSpecification as exc:
        return str(exc).splitlines()[0], exc.path
    return None


@settings(max_examples=300, deadline=None)
@given(spec=mutated())
def test_the_workspace_verdict_message_and_path_are_pyhfs(spec: dict[str, Any]) -> None:
    ours = _verdict(validate, spec, "workspace.json")
    theirs = _verdict(pyhf.schema.validate, spec, "workspace.json")
    assert ours == theirs


@pytest.mark.parametrize("name", ["workspace.json", "model.json", "measurement.json"])
def test_valid_documents_pass_as_in_pyhf(name: str) -> None:
    doc: Any = WORKSPACE
    if name == "model.json":
        doc = {"channels": WORKSPACE["channels"], "parameters": []}
    elif name == "measurement.json":
        doc = WORKSPACE["measurements"][0]
    assert _verdict(validate, doc, name) is None
    assert _verdict(pyhf.schema.validate, doc, name) is None


def test_published_likelihoods_validate() -> None:
    for path in sorted(DATA.glob("**/*.json")):
        spec = json.loads(path.read_text())
        if isinstance(spec, dict) and {"channels", "observations", "measurements"} <= set(spec):
            assert _verdict(validate, spec, "workspace.json") == _verdict(
                pyhf.schema.validate, spec, "workspace.json"
            ), path


def test_numpy_arrays_and_scalars_count_as_json_as_in_pyhf() -> None:
    spec = copy.deepcopy(WORKSPACE)
    spec["observations"][0]["data"] = np.array([22.0, 12.0])
    spec["channels"][0]["samples"][1]["data"] = [np.float64(20.0), np.int64(10)]
    assert _verdict(validate, spec, "workspace.json") is None
    assert _verdict(pyhf.schema.validate, spec, "workspace.json") is None


@pytest.mark.parametrize("version", ["9.9.9", 3, "../1.0.0", None])
def test_a_version_pyhf_has_no_schema_for_is_refused(version: Any) -> None:
    if version is None:  # the default: pyhf's
        validate(WORKSPACE, "workspace.json", version=version)
        return
    with pytest.raises(SchemaError) as info:
        validate(WORKSPACE, "workspace.json", version=version)
    assert info.value.path == "version"


json_documents = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(doc=json_documents, algorithm=st.sampled_from(["sha256", "md5", "sha1"]))
def test_digest_is_pyhfs(doc: Any, algorithm: str) -> None:
    assert digest(doc, algorithm) == pyhf.utils.digest(doc, algorithm=algorithm)


def test_digest_errors_are_pyhfs() -> None:
    for args in (({"a": object()}, "sha256"), ({"a": 1}, "nohash")):
        with pytest.raises(ValueError, match=r"JSON-serializable|hashlib") as ours:
            digest(*args)
        with pytest.raises(ValueError, match=r"JSON-serializable|hashlib") as theirs:
            pyhf.utils.digest(args[0], algorithm=args[1])
        assert str(ours.value) == str(theirs.value)


def test_version_is_pyhfs() -> None:
    assert pyhf_version() == pyhf.__version__


def test_validating_imports_no_pyhf(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from pyhf_dask.schema import digest, pyhf_version, validate\n"
        f"spec = json.loads({json.dumps(json.dumps(WORKSPACE))})\n"
        "validate(spec, 'workspace.json')\n"
        "digest(spec); pyhf_version()\n"
        "print('pyhf' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert done.stdout.strip() == "False"
