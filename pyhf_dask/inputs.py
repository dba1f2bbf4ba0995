"""Reading likelihood inputs: JSON files, workspaces, patchsets, folders and archives.

Everything here turns bad input into one :mod:`pyhf_dask.exceptions` error whose message
names the file and what is wrong with it. Three parts:

- :mod:`pyhf_dask.reading`: bounded reads of regular files and JSON parsing (limits from
  Dask's configuration under ``pyhf-dask``: ``max-file-size``, ``max-json-depth``, ...;
  each refusal an :class:`~pyhf_dask.exceptions.InputLimit` naming the limit and how to
  raise it);
- :mod:`pyhf_dask.archives`: folders and ``.tar.gz`` archives read safely in memory
  (:class:`FileTree`) and the region holding a workspace and its patches
  (:func:`find_region`);
- this module: checks of a background-only workspace (pyhf's schema, observations for
  every channel, finite and non-negative yields; channels hold at most ``max-bins`` bins).

Every name of the first two is importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pyhf_dask.archives import (
    FileTree,
    Region,
    find_region,
    is_bkg_only,
    patch_name,
    zlib_errors,
)
from pyhf_dask.exceptions import InvalidWorkspace
from pyhf_dask.reading import limit, load_json, parse_json, read_file, too_large

__all__ = [
    "FileTree",
    "Region",
    "check_workspace",
    "check_yields",
    "find_region",
    "is_bkg_only",
    "limit",
    "load_json",
    "parse_json",
    "patch_name",
    "read_file",
    "too_large",
    "zlib_errors",
]


def _bad_number(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _check_numbers(values: Any, where: str, *, allow_negative: bool) -> None:
    if not isinstance(values, list):
        return
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if _bad_number(value):
            msg = f"{where}[{index}] is {value} (NaN or infinite yields are not allowed)"
            raise InvalidWorkspace(msg)
        if value < 0 and not allow_negative:
            msg = f"{where}[{index}] is negative ({value})"
            raise InvalidWorkspace(msg)


def check_yields(spec: Mapping[str, Any], where: str) -> None:
    """Reject NaN, infinite or negative sample yields and observations in a workspace."""
    for channel in spec.get("channels", []):
        for sample in channel.get("samples", []):
            label = f"{where}: channel {channel.get('name')!r} sample {sample.get('name')!r} data"
            _check_numbers(sample.get("data"), label, allow_negative=False)
            for modifier in sample.get("modifiers", []):
                data = modifier.get("data")
                mlabel = (
                    f"{where}: modifier {modifier.get('name')!r} of sample {sample.get('name')!r}"
                )
                if isinstance(data, dict):
                    for key, values in data.items():
                        if isinstance(values, list):
                            _check_numbers(values, f"{mlabel} {key}", allow_negative=True)
                        elif _bad_number(values):
                            msg = f"{mlabel} {key} is {values}"
                            raise InvalidWorkspace(msg)
                else:
                    _check_numbers(data, mlabel, allow_negative=True)
    for observation in spec.get("observations", []):
        label = f"{where}: observations of {observation.get('name')!r} data"
        _check_numbers(observation.get("data"), label, allow_negative=False)


def check_workspace(spec: Any, where: str) -> dict[str, Any]:
    """Validate a background-only workspace against pyhf's schema and its numbers.

    Raises:
        InvalidWorkspace: naming ``where`` and the first problem found.
    """
    from pyhf_dask.schema import SchemaError, validate

    if not isinstance(spec, dict):
        msg = f"{where}: a workspace must be a JSON object, found {type(spec).__name__}"
        raise InvalidWorkspace(msg)
    from pyhf_dask.validate import check_shapes

    check_shapes(spec, where)  # first: the schema check is slow on huge channels
    try:
        validate(spec, "workspace.json")
    except SchemaError as exc:
        at = f" at {exc.path}" if exc.path else ""
        msg = f"{where}: not a valid pyhf workspace{at}: {exc.message}"
        raise InvalidWorkspace(msg) from exc
    observed = {o.get("name") for o in spec.get("observations", [])}
    for channel in spec.get("channels", []):
        if channel.get("name") not in observed:
            names = ", ".join(sorted(map(str, observed))) or "none"
            msg = (
                f"{where}: channel {channel.get('name')!r} has no observations "
                f"(observations are given for: {names})"
            )
            raise InvalidWorkspace(msg)
    check_yields(spec, where)
    return spec
