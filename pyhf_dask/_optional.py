"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from pyhf_dask.exceptions import MissingDependency

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming ``extra``.

    Args:
        module: dotted module name, e.g. ``"jax"``.
        extra: the pyhf_dask extra that installs it, e.g. ``"jax"``.

    Returns:
        The imported module.

    Example:
        >>> np = require("numpy", "core")
        >>> np.__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module!r} is not installed; install it with: pip install 'pyhf_dask[{extra}]'"
        raise MissingDependency(msg) from exc
