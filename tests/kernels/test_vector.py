"""Vectorised model building gives the per-point builder's arrays, bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_jax_kernel import _random_workspace

import pyhf_dask
from pyhf_dask.grid import signal_patch, simple_workspace
from pyhf_dask.kernels import FitOptions
from pyhf_dask.kernels.jax_batch import MODEL_FIELDS, pad_model, padded_dims
from pyhf_dask.kernels.jax_model import Unsupported, apply_patch, build_dense, structure_key
from pyhf_dask.kernels.jax_vector import build_chunk, patch_shape, stack_groups

OPTIONS = FitOptions(normsys_interpcode="code4", histosys_interpcode="code4p").to_dict()


def _per_point(ws: dict[str, Any], patch: Any, options: dict[str, Any]) -> Any:
    """The per-point builder, or the message it fails with (as the kernel words it)."""
    try:
        spec = apply_patch(ws, patch)
        return build_dense(spec, options, structure_key(spec, options))
    except Unsupported as exc:
        return str(exc)
    except Exception as exc:
        return f"dense model not built ({type(exc).__name__}: {exc})"


def assert_identical(ws: dict[str, Any], patches: list[Any], options: dict[str, Any]) -> Any:
    """Vectorised and per-point arrays are identical (values, dtypes, padding, order)."""
    groups, failed = build_chunk(ws, patches, options)
    expected = [_per_point(ws, p, options) for p in patches]
    assert failed == {i: m for i, m in enumerate(expected) if isinstance(m, str)}
    if not groups:
        return None
    stack = stack_groups(groups)
    assert sorted(stack.index.tolist()) == [
        i for i, m in enumerate(expected) if not isinstance(m, str)
    ]
    models = [expected[i] for i in stack.index]
    dims = padded_dims(models)
    assert stack.dims == dims
    padded = [pad_model(m, dims) for m in models]
    for k in MODEL_FIELDS:
        want = np.stack([p[k] for p in padded])
        got = stack.arrays[k]
        assert got.dtype == want.dtype, k
        assert got.shape == want.shape, k
        assert np.array_equal(got, want), k
    assert stack.poi.tolist() == [m.poi_index for m in models]
    return stack


def _modifiers(rng: np.random.Generator, nbins: int, c: int, nom: np.ndarray) -> list[Any]:
    """Every modifier type, some shared with the backgrounds."""
    return [
        {"name": "mu", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
        {
            "name": "norm_a",  # shared with bkg1
            "type": "normsys",
            "data": {"hi": float(rng.uniform(1.01, 1.3)), "lo": float(rng.uniform(0.7, 0.99))},
        },
        {"name": "sig_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
        {
            "name": "shape_a",  # shared with the backgrounds
            "type": "histosys",
            "data": {
                "hi_data": list(nom * rng.uniform(1.0, 1.2, nbins)),
                "lo_data": list(nom * rng.uniform(0.8, 1.0, nbins)),
            },
        },
        {"name": f"stat_{c}", "type": "staterror", "data": list(rng.uniform(0.0, 1.0, nbins))},
        {
            "name": f"sig_sys_{c}",
            "type": "shapesys",
            "data": [0.0, *rng.uniform(0.05, 0.5, nbins - 1)],  # one bin without
        },
        {"name": f"sig_shape_{c}", "type": "shapefactor", "data": None},
    ]


def _add_signal_patches(
    ws: dict[str, Any], rng: np.random.Generator, n: int, *, index: str = "0"
) -> list[Any]:
    """Patches that add a signal sample carrying every modifier type to each channel."""
    patches = []
    for p in range(n):
        ops = []
        for c, ch in enumerate(ws["channels"]):
            nbins = len(ch["samples"][0]["data"])
            nom = rng.uniform(0.0, 9.0, nbins)
            nom[0] = 0.0 if p % 3 == 0 else nom[0]  # an empty signal bin now and then
            ops.append(
                {
                    "op": "add",
                    "path": f"/channels/{c}/samples/{index}",
                    "value": {
                        "name": f"signal_{p}",
                        "data": [float(x) for x in nom],
                        "modifiers": _modifiers(rng, nbins, c, nom),
                    },
                }
            )
        patches.append(ops)
    return patches


def _background_only(seed: int) -> dict[str, Any]:
    ws, _ = _random_workspace(np.random.default_rng(seed))
    ws = copy.deepcopy(ws)
    for ch in ws["channels"]:
        del ch["samples"][0]  # the signal comes with the patches
    return ws


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replaced_signal_yields(seed: int) -> None:
    ws, _ = _random_workspace(np.random.default_rng(seed))
    rng = np.random.default_rng(100 + seed)
    patches = [
        [
            {"op": "replace", "path": f"/channels/{c}/samples/0/data", "value": list(y)}
            for c, y in ((0, rng.uniform(0, 10, 2)), (1, rng.uniform(0, 10, 3)))
        ]
        for _ in range(7)
    ]
    stack = assert_identical(ws, patches, OPTIONS)
    assert "sigma" not in {k for k, v in stack.arrays.items() if v.strides[0] == 0}


@pytest.mark.parametrize(("seed", "index"), [(3, "0"), (4, "-"), (5, "1")])
def test_added_signal_with_every_modifier_type(seed: int, index: str) -> None:
    ws = _background_only(seed)
    patches = _add_signal_patches(ws, np.random.default_rng(seed), 9, index=index)
    assert len({patch_shape(p) for p in patches}) == 1
    stack = assert_identical(ws, patches, OPTIONS)
    varying = {k for k, v in stack.arrays.items() if v.strides[0] != 0}
    assert {"nominal", "h_up", "h_dn", "n_hi", "n_lo", "fixed", "sigma", "aux", "tau"} <= varying


def test_measurement_overrides_and_other_codes() -> None:
    ws = _background_only(6)
    ws["measurements"][0]["config"]["parameters"] += [
        {"name": "stat_0", "fixed": True},
        {"name": "stat_1", "sigmas": [0.1, 0.2, 0.3]},
        {"name": "sig_sys_1", "auxdata": [1.0, 2.0, 3.0]},
        {"name": "sig_sys_0", "fixed": [False, True]},
    ]
    patches = _add_signal_patches(ws, np.random.default_rng(6), 5)
    options = {**OPTIONS, "normsys_interpcode": "code1", "histosys_interpcode": "code0"}
    assert_identical(ws, patches, options)


@pytest.mark.parametrize(
    "broken", ["normsys", "not a number", "other op", "bins", "modifier length"]
)
def test_points_the_builder_rejects_keep_their_messages(broken: str) -> None:
    ws = _background_only(7)
    patches = _add_signal_patches(ws, np.random.default_rng(7), 6)
    if broken == "normsys":  # that point only goes to the per-point builder
        patches[2][0]["value"]["modifiers"][2]["data"]["lo"] = -0.5
    elif broken == "not a number":  # the group's numbers fail: every point per point
        patches[2][1]["value"]["data"][1] = None
    elif broken == "other op":
        patches[2] = [{"op": "copy", "from": "/channels/0/samples/0", "path": "/channels/0/x"}]
        assert patch_shape(patches[2]) is None
    elif broken == "bins":  # a shape of its own whose first point cannot be built
        patches[2] = [{**patches[2][0], "value": {**patches[2][0]["value"], "data": [1.0]}}]
    else:  # modifier data of another length: the per-point builder broadcasts it
        patches[2][0]["value"]["modifiers"][4]["data"]["hi_data"] = [1.0]
        patches[3][1]["value"]["modifiers"][5]["data"] = [0.5]
        _, failed = build_chunk(ws, patches, OPTIONS)
        assert not failed
        assert_identical(ws, patches, OPTIONS)
        return
    _, failed = build_chunk(ws, patches, OPTIONS)
    assert set(failed) == {2}
    assert_identical(ws, patches, OPTIONS)


def test_seed_model_replace_patches() -> None:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    patches = [signal_patch([a, b]) for a in np.linspace(0, 30, 6) for b in (1.0, 2.5)]
    stack = assert_identical(ws, patches, OPTIONS)
    assert [k for k, v in stack.arrays.items() if v.strides[0] != 0] == ["nominal"]


def test_sbottom_slice(sbottom_dir: Path) -> None:
    grid = pyhf_dask.SignalGrid.from_path(sbottom_dir, region="RegionA")
    odd = grid.names.index("sbottom_700_680_550")  # its own patch shape and parameters
    index = sorted({*range(0, len(grid), 12), odd})
    patches = [grid.patches[i] for i in index]
    assert len({patch_shape(p) for p in patches}) == 2
    groups, _ = build_chunk(grid.workspace, patches, OPTIONS)
    assert len(groups) == 2
    assert_identical(grid.workspace, patches, OPTIONS)


def test_chunk_cls_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's CLs with vectorised building equal those of the per-point builder."""
    from pyhf_dask.kernels import jax_kernel, jax_vector

    ws = _background_only(8)
    patches = _add_signal_patches(ws, np.random.default_rng(8), 6)
    options = {**OPTIONS, "poi_values": [0.5, 1.0, 2.0]}
    new = jax_kernel.hypotest_chunk(ws, patches, options)

    def per_point_only(workspace: Any, chunk: Any, opts: Any) -> Any:
        groups: dict[Any, Any] = {}
        failed: dict[int, str] = {}
        jax_vector._per_point(workspace, chunk, list(range(len(chunk))), opts, groups, failed)
        return list(groups.values()), failed

    monkeypatch.setattr(jax_kernel, "build_chunk", per_point_only)
    old = jax_kernel.hypotest_chunk(ws, patches, options)
    assert old["status"].tolist() == new["status"].tolist()
    assert (new["status"] != "failed").all(), new["message"]
    np.testing.assert_array_equal(new["CLs_obs"], old["CLs_obs"])
    np.testing.assert_array_equal(new["CLs_exp"], old["CLs_exp"])
