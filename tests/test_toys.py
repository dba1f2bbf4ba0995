"""Toy-based CLs through scan(): reproducibility, the store, pyhf's ToyCalculator, asymptotics.

* the same seed gives bitwise the same results whatever the chunking and the number of
  workers (local executor), and after an interrupted store is resumed;
* on models with nuisance parameters (shapesys, normsys, histosys, staterror, lumi,
  several channels) CLsb, CLb and CLs agree with pyhf 0.7.6's ``ToyCalculator``
  (``distributions`` + ``pvalues``) within 3 combined standard errors;
* at large counts toy CLs tends to the asymptotic CLs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import pyhf_dask
from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace
from pyhf_dask.kernels import TOY_FIELDS, FitOptions, fit_chunk
from pyhf_dask.results import STATUS_FLAGS, status_names
from pyhf_dask.store_read import PENDING

pytest.importorskip("jax")

TOY_VARIABLES = ["CLs_obs", "CLs_exp", *TOY_FIELDS]


def _grid(seed_workspace: dict, n: int = 5) -> SignalGrid:
    return SignalGrid.from_function(
        seed_workspace, scaled_signal, scale=[0.4 + 0.3 * k for k in range(n)]
    )


def _assert_same(a, b) -> None:
    for name in TOY_VARIABLES:
        np.testing.assert_array_equal(np.asarray(a[name].values), np.asarray(b[name].values), name)
    assert status_names(a.status).tolist() == status_names(b.status).tolist()


def test_same_seed_same_cls_whatever_the_chunking(seed_workspace):
    grid = _grid(seed_workspace)
    kw = dict(kernel="jax", calctype="toybased", ntoys=500, seed=42)
    one = pyhf_dask.scan(grid, chunk_size=1, **kw).compute(scheduler="synchronous")
    three = pyhf_dask.scan(grid, chunk_size=3, **kw).compute(scheduler="threads")
    _assert_same(one, three)
    assert (status_names(one.status) == "converged").all()
    assert one.attrs["calctype"] == "toybased" and one.attrs["seed"] == 42
    assert (one.ntoys.values == 500).all() and (one.ntoys_failed.values == 0).all()
    other = pyhf_dask.scan(grid, chunk_size=5, **{**kw, "seed": 43}).compute(
        scheduler="synchronous"
    )
    assert not np.array_equal(one.CLs_obs.values, other.CLs_obs.values)


def test_a_point_keeps_its_toys_in_any_chunk(seed_workspace):
    # the stream follows the point's patch, not its place: the point alone, or second of two
    patches = [scaled_signal(scale=s) for s in (0.7, 1.3)]
    opts = FitOptions(calctype="toybased", ntoys=300, seed=9).to_dict()
    both = fit_chunk("jax", seed_workspace, patches, opts)
    alone = fit_chunk("jax", seed_workspace, patches[1:], opts)
    for name in ("CLs_obs", "CLsb_obs", "CLb_obs", "CLs_exp"):
        np.testing.assert_array_equal(both[name][1:], alone[name])


def test_the_first_toys_of_a_longer_run_are_a_shorter_run(seed_workspace):
    # toy i comes from fold_in(stream, i): 200 toys are the first 200 of 400
    from pyhf_dask.kernels.jax_toys import sample_toys

    args = (
        np.array([60.0, 50.0]),
        np.array([1.0, 1.0, 277.0]),
        np.array([1.0, 1.0, 277.0]),
        np.array([False, True, False]),
        np.array([1.0, 0.1, 1.0]),
        np.array([False, False, True]),
    )
    short = sample_toys(5, (1, 2), 200, *args)
    long = sample_toys(5, (1, 2), 400, *args)
    np.testing.assert_array_equal(short[0], long[0][:200])
    np.testing.assert_array_equal(short[1], long[1][:200])
    # Poisson main and Poisson aux data are counts, the Gaussian aux data around theta
    assert (long[0] == np.round(long[0])).all() and (long[1][:, 2] == np.round(long[1][:, 2])).all()
    assert abs(long[1][:, 1].mean() - 1.0) < 0.03 and abs(long[1][:, 1].std() - 0.1) < 0.02
    assert (long[1][:, 0] == 1.0).all()  # unconstrained: the data's value


@pytest.mark.slow
def test_one_or_two_local_workers_give_the_same_bits(seed_workspace):
    from pyhf_dask.executors import open_scheduler

    grid = _grid(seed_workspace, 6)
    kw = dict(kernel="jax", calctype="toybased", ntoys=400, seed=1)
    results = []
    for workers in (1, 2):
        with open_scheduler("local", workers=workers) as scheduler:
            ds = pyhf_dask.scan(grid, chunk_size=2, scheduler=scheduler, **kw)
            results.append(ds.compute(scheduler=scheduler))
    _assert_same(*results)
    local = pyhf_dask.scan(grid, chunk_size=4, **kw).compute(scheduler="synchronous")
    _assert_same(results[0], local)


def test_interrupted_store_resumed_equals_a_clean_scan(seed_workspace, tmp_path):
    import zarr

    from pyhf_dask.store import open_store, scan_to_store

    grid = _grid(seed_workspace, 5)
    kw = dict(kernel="jax", calctype="toybased", ntoys=300, seed=3, chunk_size=2)
    clean = scan_to_store(grid, tmp_path / "clean.zarr", scheduler="synchronous", **kw)
    path = tmp_path / "cut.zarr"
    scan_to_store(grid, path, scheduler="synchronous", **kw)
    # as if the client had died before the last two chunks' points were committed
    group = zarr.open_group(str(path), mode="r+")
    status = group["status"][:]
    status[1:] = STATUS_FLAGS.index(PENDING)
    group["status"][:] = status
    for name in TOY_VARIABLES:
        values = group[name][:]
        values[1:] = -1 if values.dtype.kind == "i" else np.nan
        group[name][:] = values
    written: list[int] = []
    resumed = scan_to_store(
        grid, path, resume=True, scheduler="synchronous", on_write=written.append, **kw
    )
    assert sum(written) == 4
    _assert_same(clean, resumed)
    _assert_same(open_store(path), clean)


def test_toys_refuse_what_they_cannot_do(seed_workspace):
    from pyhf_dask.exceptions import InvalidOption

    grid = _grid(seed_workspace, 1)
    with pytest.raises(InvalidOption, match="need the jax kernel"):
        pyhf_dask.scan(grid, kernel="pyhf", calctype="toybased")
    for bad in (0, -1, 2.5, True, "x"):
        with pytest.raises(InvalidOption, match="number of toys"):
            pyhf_dask.scan(grid, kernel="jax", calctype="toybased", ntoys=bad)
    with pytest.raises(InvalidOption, match="the seed"):
        pyhf_dask.scan(grid, kernel="jax", calctype="toybased", seed=1.5)


@pytest.mark.parametrize(
    "args",
    [
        ["--ntoys", "0"],
        ["--ntoys", "-5"],
        ["--ntoys", "1.5"],
        ["--seed", "abc"],
        ["--seed", "-1"],
        ["--kernel", "pyhf"],
    ],
)
def test_bad_toy_options_are_one_line_and_exit_2(seed_workspace, tmp_path, args):
    import json
    import subprocess
    import sys

    ws = tmp_path / "BkgOnly.json"
    ws.write_text(json.dumps(seed_workspace))
    patch = tmp_path / "patch.sig_100_10.json"
    patch.write_text(json.dumps(scaled_signal(scale=1.0)))
    cmd = [sys.executable, "-m", "pyhf_dask", "scan", str(ws), str(patch)]
    cmd += ["--calctype", "toybased", *args, "-o", str(tmp_path / "o.nc")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error [option]: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.nc").exists()


# --- agreement with pyhf's ToyCalculator on models with nuisance parameters -------------


def _sample(name, data, modifiers):
    return {"name": name, "data": list(map(float, data)), "modifiers": modifiers}


def _mu():
    return {"name": "mu", "type": "normfactor", "data": None}


def _ws(channels, observations, parameters=()):
    return {
        "channels": channels,
        "observations": [{"name": n, "data": list(map(float, d))} for n, d in observations],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": list(parameters)}}],
        "version": "1.0.0",
    }


def _models() -> dict[str, dict]:
    norm = {"name": "bnorm", "type": "normsys", "data": {"hi": 1.15, "lo": 0.85}}
    hist = {
        "name": "bshape",
        "type": "histosys",
        "data": {"hi_data": [22.0, 14.0], "lo_data": [18.0, 10.0]},
    }
    lumi_par = {
        "name": "lumi",
        "auxdata": [1.0],
        "sigmas": [0.05],
        "bounds": [[0.5, 1.5]],
        "inits": [1.0],
    }
    lumi = {"name": "lumi", "type": "lumi", "data": None}
    return {
        "shapesys": simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0]),
        "normsys": _ws(
            [
                {
                    "name": "SR",
                    "samples": [_sample("s", [6.0], [_mu()]), _sample("b", [10.0], [norm])],
                }
            ],
            [("SR", [12])],
        ),
        "histosys": _ws(
            [
                {
                    "name": "SR",
                    "samples": [
                        _sample("s", [5.0, 4.0], [_mu()]),
                        _sample("b", [20.0, 12.0], [hist]),
                    ],
                }
            ],
            [("SR", [19, 13])],
        ),
        "staterror": _ws(
            [
                {
                    "name": "SR",
                    "samples": [
                        _sample("s", [4.0, 6.0], [_mu()]),
                        _sample(
                            "b",
                            [8.0, 5.0],
                            [{"name": "stat", "type": "staterror", "data": [1.5, 1.2]}],
                        ),
                    ],
                }
            ],
            [("SR", [7, 6])],
        ),
        "lumi": _ws(
            [
                {
                    "name": "SR",
                    "samples": [
                        _sample("s", [7.0], [_mu(), lumi]),
                        _sample("b", [9.0], [lumi, norm]),
                    ],
                }
            ],
            [("SR", [10])],
            [lumi_par],
        ),
        "two_channels": _ws(
            [
                {"name": "CR", "samples": [_sample("b", [40.0], [norm])]},
                {
                    "name": "SR",
                    "samples": [_sample("s", [5.0], [_mu()]), _sample("b", [6.0], [norm])],
                },
            ],
            [("CR", [43]), ("SR", [7])],
        ),
        "three_channels": _ws(
            [
                {
                    "name": "A",
                    "samples": [_sample("s", [3.0], [_mu()]), _sample("b", [4.0], [norm])],
                },
                {
                    "name": "B",
                    "samples": [
                        _sample("s", [2.0, 1.0], [_mu()]),
                        _sample("b", [20.0, 12.0], [hist]),
                    ],
                },
                {
                    "name": "C",
                    "samples": [
                        _sample("b", [30.0], [{"name": "cstat", "type": "shapesys", "data": [4.0]}])
                    ],
                },
            ],
            [("A", [5]), ("B", [21, 12]), ("C", [28])],
        ),
        "low_counts": _ws(
            [
                {
                    "name": "SR",
                    "samples": [_sample("s", [3.0], [_mu()]), _sample("b", [1.5], [norm])],
                }
            ],
            [("SR", [1])],
        ),
    }


def _pyhf_toys(workspace: dict, ntoys: int, seed: int) -> tuple[float, float, float]:
    import pyhf

    pyhf.set_backend("numpy")
    np.random.seed(seed)
    model = pyhf.Workspace(workspace).model()
    data = pyhf.Workspace(workspace).data(model)
    calc = pyhf.infer.calculators.ToyCalculator(
        data, model, ntoys=ntoys, test_stat="qtilde", track_progress=False
    )
    q = calc.teststatistic(1.0)
    sb, b = calc.distributions(1.0)
    clsb, clb, cls = calc.pvalues(q, sb, b)
    return float(clsb), float(clb), float(cls)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_models()))
def test_agrees_with_pyhf_toycalculator(name):
    workspace = _models()[name]
    n_pyhf, n_ours = 300, 20_000
    clsb, clb, cls = _pyhf_toys(copy.deepcopy(workspace), n_pyhf, seed=1)
    opts = FitOptions(calctype="toybased", ntoys=n_ours, seed=2).to_dict()
    out = fit_chunk("jax", workspace, [[]], opts)
    assert out["status"][0] == "converged", out["message"][0]
    for key, theirs in (("CLsb_obs", clsb), ("CLb_obs", clb)):
        ours, err = float(out[key][0, 0]), float(out[key + "_err"][0, 0])
        err_pyhf = np.sqrt(max(theirs * (1 - theirs), 1e-12) / n_pyhf)
        assert abs(ours - theirs) <= 3 * np.hypot(err, err_pyhf), (name, key, ours, theirs)
    # CLs: the delta-method error of pyhf's ratio
    err_pyhf = cls * np.hypot(
        np.sqrt(max(clsb * (1 - clsb), 1e-12) / n_pyhf) / max(clsb, 1 / n_pyhf),
        np.sqrt(clb * (1 - clb) / n_pyhf) / clb,
    )
    ours, err = float(out["CLs_obs"][0, 0]), float(out["CLs_obs_err"][0, 0])
    assert abs(ours - cls) <= 3 * np.hypot(err, err_pyhf), (name, ours, cls)


def test_large_counts_toys_tend_to_asymptotics():
    # 25 times the seed model's counts (relative uncertainties kept): qtilde is then close
    # to its asymptotic distribution, and toy CLs near the formula's
    k = 25.0
    ws = simple_workspace(
        [12.0 * k / 5, 11.0 * k / 5], [50.0 * k, 52.0 * k], [3.0 * k, 7.0 * k], [51.0 * k, 48.0 * k]
    )
    patch = [[]]
    asym = fit_chunk("jax", ws, patch, FitOptions().to_dict())
    toys = fit_chunk(
        "jax", ws, patch, FitOptions(calctype="toybased", ntoys=20_000, seed=4).to_dict()
    )
    want, got = float(asym["CLs_obs"][0, 0]), float(toys["CLs_obs"][0, 0])
    err = float(toys["CLs_obs_err"][0, 0])
    assert 0.01 < want < 0.5
    assert abs(got - want) <= 3 * err + 0.1 * want, (got, want, err)
    # the expected band too (its median at least)
    np.testing.assert_allclose(toys["CLs_exp"][0, 0, 2], asym["CLs_exp"][0, 0, 2], rtol=0.15)
