"""Executor defaults come from the packaged YAML through ``dask.config``, at call time."""

from __future__ import annotations

import concurrent.futures as cf

import dask
import pytest

from pyhf_dask import config
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors import wrap


def test_defaults_from_the_packaged_yaml() -> None:
    with cf.ThreadPoolExecutor(1) as pool:
        adapter = wrap(pool)
    assert adapter.retries == config.get("executor.retries") == 2
    assert adapter.timeout is None and adapter.check_versions is True
    assert adapter.remote == "all" and adapter.batch_size == config.get("executor.batch-size")


def test_configuration_is_read_when_the_adapter_is_made() -> None:
    with (
        cf.ThreadPoolExecutor(1) as pool,
        dask.config.set(
            {
                "pyhf-dask.executor.retries": 5,
                "pyhf-dask.executor.timeout": 30,
                "pyhf-dask.executor.remote": "marked",
            }
        ),
    ):
        adapter = wrap(pool)
        explicit = wrap(pool, retries=0, remote="all")
    assert (adapter.retries, adapter.timeout, adapter.remote) == (5, 30.0, "marked")
    assert (explicit.retries, explicit.remote) == (0, "all")


@pytest.mark.parametrize(
    ("option", "value"), [("retries", -1), ("timeout", 0), ("batch_size", 0), ("remote", "some")]
)
def test_bad_options_are_refused(option: str, value: object) -> None:
    word = option.split("_", maxsplit=1)[0]
    with cf.ThreadPoolExecutor(1) as pool, pytest.raises(InvalidOption, match=word):
        wrap(pool, **{option: value})
