"""Function grids whose signal function returns yields (``sample=``, ``vectorized=``).

The same grid given as patches is the reference: identical model arrays, identical CLs
with both kernels, through the lazy graph and a store that is resumed.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import pyhf_dask
from pyhf_dask.exceptions import InvalidOption, InvalidPatch, SettingsMismatch
from pyhf_dask.grid import FunctionPatches, SignalArrays, SignalGrid, materialize, signal_patch
from pyhf_dask.kernels import FitOptions, fit_chunk, jax_arrays
from pyhf_dask.kernels.jax_batch import MODEL_FIELDS
from pyhf_dask.kernels.jax_vector import build_chunk, stack_groups
from pyhf_dask.signals import SignalTarget
from pyhf_dask.store import open_store, scan_to_store

AXES = {"m1": [2.0, 10.0, 20.0, 30.0], "m2": [4.0, 12.0, 30.0, 50.0]}
OPTIONS = FitOptions().to_dict()


def _yields(m1: Any, m2: Any) -> tuple[Any, Any]:
    return m1 * 0.5 + 1.0, m2 * 0.25 + 2.0


def patch_signal(m1: float, m2: float) -> list[dict[str, Any]]:
    return signal_patch(list(_yields(m1, m2)))


def point_signal(m1: float, m2: float) -> np.ndarray:
    return np.array(_yields(m1, m2))


def list_signal(m1: float, m2: float) -> list[float]:
    return [float(y) for y in _yields(m1, m2)]


def vector_signal(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return np.stack(_yields(m1, m2), axis=1)


def later_negative(m1: float, m2: float) -> np.ndarray:
    return np.array([m1, 25.0 - m1])


def vector_negative(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return np.stack([m1, np.where(m2 > 20, -1.0, m2)], axis=1)


def vector_nan(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return np.stack([m1, np.where(m1 > 15, np.nan, m2)], axis=1)


def vector_three_bins(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return np.stack([m1, m2, m2], axis=1)


def point_three_bins(m1: float, m2: float) -> list[float]:
    return [m1, m2, m2]


def vector_flat(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return np.array([1.0, 2.0])


def vector_strings(m1: np.ndarray, m2: np.ndarray) -> list[str]:
    return ["a", "b"]


def two_channel_ws() -> dict[str, Any]:
    """Signal in two channels (the second listed first by name), every modifier kind that
    derives from a sample's nominal."""
    mu = {"name": "mu", "type": "normfactor", "data": None}
    norm = {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 3.0],
                        "modifiers": [
                            mu,
                            {"name": "stat_SR", "type": "staterror", "data": [1.0, 0.5]},
                        ],
                    },
                    {
                        "name": "bkg",
                        "data": [50.0, 40.0],
                        "modifiers": [
                            {"name": "stat_SR", "type": "staterror", "data": [3.0, 2.0]},
                            norm,
                        ],
                    },
                ],
            },
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [100.0, 90.0, 80.0],
                        "modifiers": [
                            {"name": "bkg_shape", "type": "shapesys", "data": [5.0, 4.0, 3.0]},
                            norm,
                        ],
                    },
                    {
                        "name": "signal",
                        "data": [1.0, 0.5, 0.2],
                        "modifiers": [
                            mu,
                            {
                                "name": "sig_hist",
                                "type": "histosys",
                                "data": {"hi_data": [1.2, 0.6, 0.3], "lo_data": [0.8, 0.4, 0.1]},
                            },
                        ],
                    },
                ],
            },
        ],
        "observations": [
            {"name": "SR", "data": [52.0, 41.0]},
            {"name": "CR", "data": [101, 92, 79]},
        ],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def two_channel_signal(m1: np.ndarray, m2: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "CR": np.stack([m1 * 0.1, m2 * 0.1, m1 * 0.0 + 0.2], axis=1),
        "SR": np.stack([m1, m2 + 1.0], axis=1),
    }


def cr_signal(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    return two_channel_signal(m1, m2)["CR"]


def sr_only(m1: np.ndarray, m2: np.ndarray) -> dict[str, np.ndarray]:
    return {"SR": two_channel_signal(m1, m2)["SR"]}


@pytest.fixture(scope="module")
def grids(seed_workspace: dict[str, Any]) -> dict[str, SignalGrid]:
    ws = seed_workspace
    return {
        "patches": SignalGrid.from_function(ws, patch_signal, **AXES),
        "points": SignalGrid.from_function(ws, point_signal, sample="signal", **AXES),
        "lists": SignalGrid.from_function(ws, list_signal, sample="signal", **AXES),
        "vectorized": SignalGrid.from_function(
            ws, vector_signal, sample="signal", channel="singlechannel", vectorized=True, **AXES
        ),
    }


def test_array_grids_have_the_patch_grids_points(grids):
    ref = grids["patches"]
    patches = materialize(ref.chunk(0, len(ref)))
    for name in ("points", "lists", "vectorized"):
        grid = grids[name]
        assert grid.names == ref.names and grid.labels == ref.labels
        np.testing.assert_array_equal(grid.values, ref.values)
        chunk = materialize(grid.chunk(0, len(grid)))
        assert isinstance(chunk, SignalArrays)
        assert list(chunk) == patches
        assert [chunk[i] for i in range(3, 7)] == patches[3:7]
        assert grid.patches_digest() != ref.patches_digest()
    np.testing.assert_array_equal(
        materialize(grids["vectorized"].chunk(0, 16)).yields,
        materialize(grids["points"].chunk(0, 16)).yields,
    )
    subset = grids["vectorized"].select(["m1_10_*"])
    assert list(materialize(subset.chunk(0, len(subset)))) == patches[4:8]


def test_chunks_pickle_and_split(grids):
    from pyhf_dask.graph import split_patches

    source = grids["vectorized"].chunk(2, 9)
    assert isinstance(source, FunctionPatches)
    again = pickle.loads(pickle.dumps(source))
    assert list(materialize(again)) == list(materialize(source))
    parts = split_patches(source, 3)
    assert [len(materialize(p)) for p in parts] == [3, 2, 2]
    assert [q for p in parts for q in materialize(p)] == list(materialize(source))
    arrays = pickle.loads(pickle.dumps(materialize(source)))
    assert isinstance(arrays, SignalArrays) and len(arrays[1:4]) == 3


@pytest.mark.parametrize("kernel", ["jax", "pyhf"])
def test_cls_equal_the_patch_grid(grids, kernel):
    if kernel == "jax":
        pytest.importorskip("jax")
    ref = fit_chunk(kernel, grids["patches"].workspace, grids["patches"].chunk(0, 16), OPTIONS)
    assert (ref["status"] == "converged").all()
    for name in ("points", "vectorized"):
        grid = grids[name]
        out = fit_chunk(kernel, grid.workspace, grid.chunk(0, 16), OPTIONS)
        assert out["status"].tolist() == ref["status"].tolist()
        np.testing.assert_allclose(out["CLs_obs"], ref["CLs_obs"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["CLs_exp"], ref["CLs_exp"], rtol=0, atol=1e-12)


def _assert_same_stack(a: Any, b: Any) -> None:
    assert a.index.tolist() == b.index.tolist() and a.dims == b.dims
    for k in MODEL_FIELDS:
        assert a.arrays[k].dtype == b.arrays[k].dtype, k
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
    assert a.poi.tolist() == b.poi.tolist()


def test_array_build_fills_arrays_without_a_patch_per_point(grids, monkeypatch):
    chunk = materialize(grids["vectorized"].chunk(0, 16))
    want, failed = build_chunk(grids["patches"].workspace, list(chunk), OPTIONS)
    made: list[int] = []
    patch = SignalTarget.patch
    monkeypatch.setattr(SignalTarget, "patch", lambda self, row: made.append(1) or patch(self, row))

    def no_per_point(*args: Any) -> None:
        raise AssertionError("per-point path taken")

    monkeypatch.setattr(jax_arrays, "_per_point", no_per_point)
    groups, failed_arrays = build_chunk(grids["vectorized"].workspace, chunk, OPTIONS)
    assert failed == failed_arrays == {}
    assert len(made) == 1  # the template point's patch only
    assert len(groups) == 1
    _assert_same_stack(stack_groups(groups), stack_groups(want))


def test_two_channels_by_dict_build_the_patch_grids_arrays():
    ws = two_channel_ws()
    grid = SignalGrid.from_function(
        ws, two_channel_signal, sample="signal", vectorized=True, m1=[1.0, 2.0, 3.0], m2=[0, 4]
    )
    assert grid.target.channels == ("SR", "CR") and grid.target.places == ((0, 0), (1, 1))
    chunk = materialize(grid.chunk(0, len(grid)))
    assert chunk[1] == signal_patch([1.0, 5.0]) + signal_patch([0.1, 0.4, 0.2], channel=1, sample=1)
    got, failed = build_chunk(ws, chunk, OPTIONS)
    want, failed_patches = build_chunk(ws, list(chunk), OPTIONS)
    assert failed == failed_patches == {}
    _assert_same_stack(stack_groups(got), stack_groups(want))
    one = SignalGrid.from_function(
        ws, cr_signal, sample="signal", channel="CR", vectorized=True, m1=[1.0, 2.0], m2=[0, 4]
    )
    assert materialize(one.chunk(0, 4))[3] == signal_patch([0.2, 0.4, 0.2], channel=1, sample=1)


def test_declined_fill_takes_the_per_point_path(grids, monkeypatch):
    chunk = materialize(grids["points"].chunk(0, 6))
    want, _ = build_chunk(grids["points"].workspace, list(chunk), OPTIONS)

    def broken(*args: Any) -> None:
        raise RuntimeError("declined")

    monkeypatch.setattr(jax_arrays, "_Fill", broken)
    got, failed = build_chunk(grids["points"].workspace, chunk, OPTIONS)
    assert failed == {}
    _assert_same_stack(stack_groups(got), stack_groups(want))


def test_lazy_graph_computes_with_the_default_scheduler(grids):
    pytest.importorskip("jax")
    ref = pyhf_dask.scan(grids["patches"], kernel="jax", chunk_size=5).compute()
    ds = pyhf_dask.scan(grids["vectorized"], kernel="jax", chunk_size=5)
    assert ds.attrs["scan_token"] != ref.attrs["scan_token"]
    ds = ds.compute()  # Dask's default (threaded) scheduler
    np.testing.assert_allclose(ds.CLs_obs.values, ref.CLs_obs.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds.CLs_exp.values, ref.CLs_exp.values, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ds.m1.values, ref.m1.values)
    assert ds.point.values.tolist() == ref.point.values.tolist()


class _Stop(Exception):
    pass


def test_store_written_interrupted_and_resumed(grids, tmp_path):
    grid = grids["vectorized"]
    path = tmp_path / "arrays.zarr"

    def stop(n: int) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        scan_to_store(
            grid, path, kernel="pyhf", chunk_size=6, scheduler="synchronous", on_write=stop
        )
    pending = (pyhf_dask.status_names(open_store(path).status) == "pending").sum()
    assert pending == 10
    with pytest.raises(SettingsMismatch, match="patches_digest"):
        scan_to_store(grids["patches"], path, resume=True, kernel="pyhf", scheduler="synchronous")
    written: list[int] = []
    ds = scan_to_store(
        grid, path, resume=True, kernel="pyhf", scheduler="synchronous", on_write=written.append
    )
    assert sorted(written) == [4, 6]
    ref = pyhf_dask.scan(grids["patches"], kernel="pyhf", chunk_size=6).compute()
    np.testing.assert_array_equal(ds.CLs_obs.values, ref.CLs_obs.values)
    np.testing.assert_array_equal(ds.CLs_exp.values, ref.CLs_exp.values)


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("signal", "kwargs", "error", "match"),
    [
        (
            vector_three_bins,
            {"vectorized": True},
            InvalidPatch,
            r"shape \(16, 3\), expected \(16, 2\)",
        ),
        (point_three_bins, {}, InvalidPatch, r"at m1_2_m2_4: .*shape \(3,\), expected \(2,\)"),
        (vector_flat, {"vectorized": True}, InvalidPatch, r"shape \(2,\), expected \(16, 2\)"),
        (vector_strings, {"vectorized": True}, InvalidPatch, "returned list, not numbers"),
        (
            vector_negative,
            {"vectorized": True},
            InvalidPatch,
            "at m1_2_m2_30: negative yield -1 in bin 1",
        ),
        (
            vector_nan,
            {"vectorized": True},
            InvalidPatch,
            "at m1_20_m2_4: non-finite yield nan in bin 1",
        ),
        (patch_signal, {}, InvalidPatch, "returned a jsonpatch"),
        (
            point_signal,
            {"sample": None},
            InvalidPatch,
            "returned yields, not a jsonpatch: pass sample=",
        ),
        (point_signal, {"sample": "sig"}, InvalidOption, "no sample 'sig' in the workspace"),
        (
            point_signal,
            {"channel": "SR"},
            InvalidOption,
            "no channel 'SR' .channels: singlechannel",
        ),
        (point_signal, {"channel": "singlechannel", "sample": "background"}, None, ""),
        (vector_signal, {"sample": None, "vectorized": True}, InvalidOption, "need sample="),
    ],
)
def test_bad_signal_functions_fail_when_the_grid_is_built(
    seed_workspace, signal, kwargs, error, match
):
    options = {"sample": "signal", **kwargs}
    if options["sample"] is None:
        del options["sample"]
    if error is None:
        SignalGrid.from_function(seed_workspace, signal, **options, **AXES)
        return
    with pytest.raises(error, match=match) as exc:
        SignalGrid.from_function(seed_workspace, signal, **options, **AXES)
    assert _one_line(exc).startswith(f"{__name__}.{signal.__name__}")


def test_two_channel_mistakes():
    ws = two_channel_ws()
    axes = {"m1": [1.0, 2.0], "m2": [0.0]}
    with pytest.raises(InvalidPatch, match="is in channels SR, CR: return a dict") as exc:
        SignalGrid.from_function(ws, cr_signal, sample="signal", vectorized=True, **axes)
    _one_line(exc)
    with pytest.raises(InvalidPatch, match="channels SR; expected SR, CR") as exc:
        SignalGrid.from_function(ws, sr_only, sample="signal", vectorized=True, **axes)
    _one_line(exc)
    with pytest.raises(InvalidOption, match="no sample 'sig' in channel 'CR'") as exc:
        SignalGrid.from_function(ws, cr_signal, sample="sig", channel="CR", **axes)
    ws["channels"][1]["samples"].pop()
    with pytest.raises(InvalidOption, match="no sample 'signal' in channel 'CR'"):
        SignalGrid.from_function(ws, cr_signal, sample="signal", channel="CR", **axes)


def test_a_later_bad_point_of_a_per_point_function_is_named_where_its_chunk_is_made(
    seed_workspace,
):
    grid = SignalGrid.from_function(seed_workspace, later_negative, sample="signal", **AXES)
    with pytest.raises(InvalidPatch, match=r"at m1_30_m2_4: negative yield -5 in bin 1") as exc:
        fit_chunk("pyhf", grid.workspace, grid.chunk(10, 14), OPTIONS)
    _one_line(exc)
