"""Exported kernel functions kept on disk give the plain function's results, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

import jax

from pyhf_dask.kernels import (
    FitOptions,
    jax_export,
)
from pyhf_dask.kernels.jax_batch import stack_models
from pyhf_dask.kernels.jax_fit import FitSettings, asimov_batch, fit_batch
from pyhf_dask.kernels.jax_kernel import _configure_jax
from pyhf_dask.kernels.jax_model import apply_patch, build_dense, structure_key
from pyhf_dask.simplemodels import signal_patch, simple_workspace


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _configure_jax()
    where = tmp_path / "export"
    monkeypatch.setattr(jax_export, "_folder", lambda: where)
    monkeypatch.setattr(jax_export, "_LOADED", {})
    monkeypatch.setattr(jax_export, "_PLAIN", set())
    return where


def _batch(n: int = 8) -> tuple[dict, np.ndarray]:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    options = FitOptions().to_dict()
    models = []
    for k in range(n):
        spec = apply_patch(ws, signal_patch([1.0 + k, 2.0 + 0.5 * k]))
        models.append(build_dense(spec, options, structure_key(spec, options)))
    stack = stack_models(models)
    return {k: jax.device_put(v) for k, v in stack.arrays.items()}, stack.arrays["init"]


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_exported_fit_equals_the_plain_fit_and_is_reloaded(folder: Path, monkeypatch) -> None:
    model, init = _batch()
    settings = FitSettings("code4", "code4p")
    args = (
        model,
        jax.device_put(init),
        jax.device_put(np.full(len(init), 1e-3)),
        jax.device_put(np.asarray(model["fixed"])),
        jax.device_put(np.asarray(model["data"])),
        jax.device_put(np.asarray(model["aux"])),
        jax.device_put(np.zeros(len(init), dtype=bool)),
        jax.device_put(20),
    )
    plain = fit_batch(*args, settings=settings)
    exported = jax_export.call(fit_batch, settings, *args)
    assert _equal(plain, exported)
    files = list(folder.glob("*.jaxexport"))
    assert len(files) == 1

    # a new process: nothing loaded; the file is read, nothing is exported again
    monkeypatch.setattr(jax_export, "_LOADED", {})

    def no_export(*_a, **_k):
        raise AssertionError("exported again instead of loading the file")

    monkeypatch.setattr(jax.export, "export", no_export)
    assert _equal(plain, jax_export.call(fit_batch, settings, *args))
    assert set() == jax_export._PLAIN


def test_a_corrupt_file_is_exported_again(folder: Path, monkeypatch) -> None:
    model, init = _batch(4)
    settings = FitSettings("code1", "code0")
    theta = jax.device_put(init)
    first = jax_export.call(asimov_batch, settings, model, theta)
    (path,) = folder.glob("*.jaxexport")
    path.write_bytes(b"not an export")
    monkeypatch.setattr(jax_export, "_LOADED", {})
    again = jax_export.call(asimov_batch, settings, model, theta)
    assert _equal(first, again)
    assert _equal(first, asimov_batch(model, theta, settings=settings))
    assert path.read_bytes() != b"not an export"


def test_unexportable_functions_run_plain(folder: Path, monkeypatch) -> None:
    model, init = _batch(4)
    settings = FitSettings("code4", "code4p")
    theta = jax.device_put(init)

    def broken(*_a, **_k):
        raise ValueError("custom call without stability guarantees")

    monkeypatch.setattr(jax.export, "export", broken)
    out = jax_export.call(asimov_batch, settings, model, theta)
    assert _equal(out, asimov_batch(model, theta, settings=settings))
    assert len(jax_export._PLAIN) == 1
    assert not list(folder.glob("*.jaxexport"))


def test_keys_depend_on_settings_and_shapes(folder: Path) -> None:
    model, init = _batch(4)
    theta = jax.device_put(init)
    for settings in (FitSettings("code4", "code4p"), FitSettings("code1", "code0")):
        jax_export.call(asimov_batch, settings, model, theta)
    small, init2 = _batch(2)
    jax_export.call(asimov_batch, FitSettings("code4", "code4p"), small, jax.device_put(init2))
    assert len(list(folder.glob("*.jaxexport"))) == 3
    assert repr(FitSettings("code1", "code0")) == "FitSettings('code1', 'code0', gtol=0.0001)"


class _Client:
    def __init__(self, platform: str) -> None:
        self.platform = platform


class _Device:
    def __init__(self, platform: str) -> None:
        self.client = _Client(platform)


class _Leaf:
    def __init__(self, *platforms: str) -> None:
        self._devices = {_Device(p) for p in platforms}

    def devices(self) -> set:
        return self._devices


def test_the_export_platform_is_the_arguments_not_the_default_backend() -> None:
    """A CPU fit in a process whose default backend is a GPU is exported for the CPU."""
    assert jax_export.export_platform([_Leaf("cpu"), _Leaf("cpu")]) == "cpu"
    assert jax_export.export_platform([_Leaf("cuda")]) == "cuda"
    assert jax_export.export_platform([_Leaf("cpu"), _Leaf("cuda")]) is None
    assert jax_export.export_platform([_Leaf("metal")]) is None


def test_an_export_that_fails_on_first_use_falls_back(folder: Path, monkeypatch) -> None:
    model, init = _batch(4)
    settings = FitSettings("code4", "code4p")
    theta = jax.device_put(init)

    def wrong_platform(*_a, **_k):
        raise ValueError("exported for platforms ('cuda',) but it is used on ('cpu',)")

    real = jax_export._load_or_export
    monkeypatch.setattr(
        jax_export, "_load_or_export", lambda *a, **k: real(*a, **k) and wrong_platform
    )
    out = jax_export.call(asimov_batch, settings, model, theta)
    assert _equal(out, asimov_batch(model, theta, settings=settings))
    assert len(jax_export._PLAIN) == 1


def test_structure_verdicts_are_kept_per_machine(folder: Path, monkeypatch) -> None:
    """A new process finds the structure check's verdict on disk (no pyhf, no check)."""
    from pyhf_dask.kernels import jax_check

    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    options = FitOptions().to_dict()
    spec = apply_patch(ws, signal_patch([3.0, 4.0]))
    model = build_dense(spec, options, structure_key(spec, options))
    monkeypatch.setattr(jax_check, "_CHECKED", {})
    assert not jax_export.known_to_agree(model.key)
    assert jax_check.structure_verdict(spec, options, model) is None  # checked against pyhf
    assert jax_export.known_to_agree(model.key)

    monkeypatch.setattr(jax_check, "_CHECKED", {})  # a new process

    def no_check(*_a, **_k):
        raise AssertionError("checked again instead of reading the kept verdict")

    monkeypatch.setattr(jax_check, "check_against_pyhf", no_check)
    assert jax_check.structure_verdict(spec, options, model) is None
    # another interpolation code is another structure: not found
    other = FitOptions(normsys_interpcode="code1").to_dict()
    assert not jax_export.known_to_agree(structure_key(spec, other))
