"""The fast patchset reader says what pyhf's schema and ``pyhf.PatchSet`` say."""

from __future__ import annotations

import copy
from typing import Any

import jsonpointer
import pyhf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhf_dask.exceptions import InvalidPatch
from pyhf_dask.patchsets import read_patchset, verify_digests

META = {
    "references": {"hepdata": "ins1234567"},
    "labels": ["m1", "m2"],
    "description": "test",
    "digests": {"md5": "0" * 32},
}


def _patchset(*items: Any) -> dict[str, Any]:
    first = {"metadata": {"name": "first", "values": [0, 0]}, "patch": []}
    return {"metadata": copy.deepcopy(META), "version": "1.0.0", "patches": [first, *items]}


def _pyhf_accepts(spec: dict[str, Any]) -> bool:
    try:
        pyhf.schema.validate(spec, "patchset.json", version="1.0.0")
    except pyhf.exceptions.InvalidSpecification:
        return False
    return True


def _ours_accepts(spec: dict[str, Any]) -> bool:
    try:
        read_patchset(spec, "ps.json")
    except InvalidPatch:
        return False
    return True


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2), st.text("ab_/-", max_size=4)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text("ab", max_size=2), inner, max_size=2)
    ),
    max_leaves=4,
)
op_names = st.sampled_from(["add", "replace", "test", "remove", "move", "copy", "frob", 3, None])
operations = st.one_of(
    st.fixed_dictionaries(
        {"op": op_names, "path": st.one_of(st.text("/ab01", max_size=6), json_scalars)},
        optional={
            "value": json_values,
            "from": st.one_of(st.text("/ab", max_size=4), json_scalars),
        },
    ),
    json_scalars,
)
good_ops = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "test"]), "path": st.text("/ab", max_size=4)},
        optional={"value": json_values},
    ),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["move", "copy", "remove"]), "path": st.text("/ab", max_size=4)},
        optional={"from": st.text("/ab", max_size=4), "value": json_values},
    ),
)
good_items = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "name": st.from_regex(r"[a-z0-9_]{1,5}", fullmatch=True),
                "values": st.lists(st.one_of(st.integers(1, 9), st.floats(1, 9)), max_size=3),
            },
            optional={"note": json_values},
        ),
        "patch": st.lists(good_ops, max_size=3),
    }
)
names = st.one_of(
    st.text("ab_1", min_size=1, max_size=5), st.text("a -.é", max_size=3), json_scalars
)
values = st.one_of(
    st.lists(st.one_of(st.integers(1, 9), st.floats(1, 9), json_scalars), max_size=3), json_scalars
)
wild_items = st.one_of(
    st.fixed_dictionaries(
        {
            "metadata": st.fixed_dictionaries({"name": names, "values": values}),
            "patch": st.lists(operations, max_size=3),
        },
        optional={"extra": json_scalars},
    ),
    st.fixed_dictionaries({}, optional={"metadata": json_values, "patch": json_values}),
    json_scalars,
)
# half near-valid entries (most accepted), half anything
items = st.one_of(good_items, wild_items)


@settings(max_examples=400, deadline=None)
@given(item=items)
def test_the_schema_verdict_is_pyhfs(item: Any) -> None:
    """For any entry, valid under our checks exactly when valid under pyhf's schema."""
    spec = _patchset(item)
    if not _pyhf_accepts(spec):
        assert not _ours_accepts(spec)
        return
    # the schema accepts it: only pyhf.PatchSet's own rules may still refuse it
    try:
        expected = pyhf.PatchSet(spec) is not None
    except (pyhf.exceptions.InvalidPatchSet, jsonpointer.JsonPointerException):
        expected = False
    assert _ours_accepts(spec) == expected


def test_a_bad_operation_deep_in_a_large_set_is_named() -> None:
    good = [{"metadata": {"name": f"p_{i}", "values": [i, 1]}, "patch": []} for i in range(1, 500)]
    bad = {"metadata": {"name": "p_bad", "values": [0, 9]}, "patch": [{"op": "frob", "path": "/x"}]}
    spec = _patchset(*good, bad)
    with pytest.raises(InvalidPatch, match=r"at patches\.500\.patch\.0: operation 'frob'"):
        read_patchset(spec, "ps.json")


@pytest.mark.parametrize(
    ("second", "match"),
    [
        ({"metadata": {"name": "first", "values": [1, 1]}, "patch": []}, "both named 'first'"),
        ({"metadata": {"name": "other", "values": [0, 0]}, "patch": []}, "same values"),
        ({"metadata": {"name": "other", "values": [1]}, "patch": []}, "1 values for 2 labels"),
    ],
)
def test_pyhf_patchset_rules(second: dict[str, Any], match: str) -> None:
    spec = _patchset(second)
    with pytest.raises(pyhf.exceptions.InvalidPatchSet):
        pyhf.PatchSet(spec)
    with pytest.raises(InvalidPatch, match=match):
        read_patchset(spec, "ps.json")


def test_digests_are_verified() -> None:
    ws = {"channels": [], "observations": [], "measurements": [], "version": "1.0.0"}
    spec = _patchset()
    spec["metadata"]["digests"] = {"sha256": pyhf.utils.digest(ws, algorithm="sha256")}
    verify_digests(spec, ws, "ws.json", "ps.json")
    spec["metadata"]["digests"]["md5"] = "0" * 32
    with pytest.raises(InvalidPatch, match=r"digest does not match the workspace ws\.json"):
        verify_digests(spec, ws, "ws.json", "ps.json")
