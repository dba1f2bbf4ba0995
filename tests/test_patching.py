"""Structural-sharing JSON Patch against the jsonpatch reference implementation."""

from __future__ import annotations

import copy
import json

import jsonpatch
import pytest

from pyhf_dask.grid import SignalGrid
from pyhf_dask.patching import PatchConflict, apply_patch


def test_sbottom_patches_equal_jsonpatch(sbottom_archive):
    grid = SignalGrid.from_path(sbottom_archive, region="RegionA")
    original = copy.deepcopy(grid.workspace)
    for ops in grid.patches[::7]:
        assert apply_patch(grid.workspace, ops) == jsonpatch.apply_patch(grid.workspace, ops)
    assert grid.workspace == original  # never modified


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "add", "path": "/a/-", "value": 9}],
        [{"op": "add", "path": "/a/0", "value": 9}, {"op": "remove", "path": "/a/2"}],
        [{"op": "replace", "path": "/b/c", "value": {"d": 1}}],
        [{"op": "move", "from": "/b/c", "path": "/e"}],
        [{"op": "copy", "from": "/a", "path": "/b/f"}],
        [{"op": "test", "path": "/a/1", "value": 2}, {"op": "remove", "path": "/b"}],
        [
            {"op": "add", "path": "/x~1y", "value": 1},
            {"op": "replace", "path": "/x~1y", "value": 2},
        ],
    ],
)
def test_operations_equal_jsonpatch(ops):
    doc = {"a": [1, 2, 3], "b": {"c": 4}}
    snapshot = json.dumps(doc)
    assert apply_patch(doc, ops) == jsonpatch.apply_patch(doc, ops)
    assert json.dumps(doc) == snapshot


@pytest.mark.parametrize(
    ("ops", "reason"),
    [
        ([{"op": "add", "path": "/a/7", "value": 1}], "index 7 is out of range"),
        ([{"op": "remove", "path": "/nope"}], "no member 'nope'"),
        ([{"op": "replace", "path": "/b/zz", "value": 1}], "no member 'zz'"),
        ([{"op": "test", "path": "/a/0", "value": 5}], "the test failed"),
        ([{"op": "add", "path": "/a/x", "value": 1}], "'x' is not an array index"),
        ([{"op": "add", "path": "a", "value": 1}], "invalid JSON pointer"),
        ([{"op": "add", "path": "/a/0"}], "no 'value'"),
    ],
)
def test_conflicts_name_the_operation(ops, reason):
    with pytest.raises(PatchConflict, match=reason) as info:
        apply_patch({"a": [1, 2, 3], "b": {"c": 4}}, ops)
    assert info.value.index == 0
