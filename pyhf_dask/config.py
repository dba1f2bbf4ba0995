"""Configuration through :mod:`dask.config` under the ``pyhf-dask`` namespace.

Defaults live in the packaged ``pyhf_dask.yaml``; users override them in their own Dask
config files, through ``DASK_PYHF_DASK__CHUNK_SIZE=...`` environment variables, or with
``dask.config.set({"pyhf-dask.chunk-size": 32})``. Functions take ``None`` for an option
and resolve it here at call time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["get", "resolve"]

_NAMESPACE = "pyhf-dask"
_DEFAULTS_FILE = Path(__file__).with_name("pyhf_dask.yaml")

with _DEFAULTS_FILE.open(encoding="utf-8") as _stream:
    _defaults = yaml.safe_load(_stream)

dask.config.update_defaults(_defaults)


def get(key: str) -> Any:
    """Return the configured value of ``pyhf-dask.<key>``.

    Example:
        >>> get("test-stat")
        'qtilde'
    """
    return dask.config.get(f"{_NAMESPACE}.{key}")


def resolve(value: Any, key: str) -> Any:
    """Return ``value`` unless it is ``None``, else the configured ``pyhf-dask.<key>``.

    Example:
        >>> resolve(None, "test-stat"), resolve("q", "test-stat")
        ('qtilde', 'q')
    """
    return get(key) if value is None else value
