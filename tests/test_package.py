"""``import pyhf_dask``: the public names, in the main process and in worker processes."""

from __future__ import annotations

import multiprocessing
import sys


def _in_child(queue) -> None:  # a spawned worker: imports pyhf_dask afresh
    import pyhf_dask

    light = "xarray" not in sys.modules and "dask.array" not in sys.modules
    import pyhf_dask.store  # imports the module pyhf_dask.scan

    queue.put((light, callable(pyhf_dask.scan), type(pyhf_dask.scan).__name__))


def test_a_worker_process_imports_pyhf_dask_light_and_scan_stays_the_function() -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(queue,))
    child.start()
    try:
        light, is_callable, kind = queue.get(timeout=120)
    finally:
        child.join(60)
    assert light, "a worker imported xarray or dask.array with pyhf_dask"
    assert is_callable, kind
    assert kind == "function"


def test_public_names_in_the_main_process() -> None:
    import xarray as xr

    import pyhf_dask
    import pyhf_dask.scan  # the submodule does not replace the function

    assert pyhf_dask.scan.__module__ == "pyhf_dask.scan"
    assert callable(pyhf_dask.scan)
    assert hasattr(xr.Dataset(), "pyhf_dask")  # the accessor is registered
    import importlib
    import importlib.metadata
    import types

    for name in pyhf_dask.__all__:
        value = getattr(pyhf_dask, name)
        if name == "__version__":
            assert value == importlib.metadata.version("pyhf_dask")
        elif isinstance(value, types.ModuleType):
            assert value.__name__ == f"pyhf_dask.{name}", name
        else:  # a function or class: the object of that name in the module defining it
            assert value.__name__ == name, (name, value)
            assert value.__module__.startswith("pyhf_dask."), (name, value.__module__)
            home = importlib.import_module(value.__module__)
            assert getattr(home, name) is value, name
    assert set(pyhf_dask.__all__) <= set(dir(pyhf_dask))


_SCRIPT = """
import sys
import pyhf_dask.cli  # the first line of the pyhf-dask console script
import multiprocessing


def probe(queue):
    queue.put(sorted(m for m in ("xarray", "dask.array", "pyhf_dask.cli.scan") if m in sys.modules))


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=probe, args=(queue,))
    child.start()
    print(queue.get(timeout=120))
    child.join(60)
"""


def test_a_worker_spawned_by_the_console_script_starts_light(tmp_path) -> None:
    """A spawned worker runs its parent's main script again before it knows its parent:
    importing the command line there must not bring the commands' xarray and Dask."""
    import subprocess

    script = tmp_path / "main_script.py"
    script.write_text(_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
