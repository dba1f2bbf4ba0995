"""Results and contours in the formats people reuse: JSON, CSV and HEPData YAML tables.

- :func:`result_records` / :func:`to_json` / :func:`write_json`: every point of a computed
  result with its coordinates, status, observed CLs, expected band and (POI scans) upper
  limits, as ``pyhf cls`` prints one point's CLs (``pyhf-dask scan -o results.json``, or
  ``--json`` on standard output). Non-finite numbers are ``null``.
- :func:`write_csv`: the same as a flat table, one row per point and POI value
  (``pyhf-dask scan -o results.csv``); non-finite numbers are ``nan``.
- :func:`hepdata_tables` / :func:`write_hepdata`: exclusion contours as HEPData tables in
  the YAML format that ``hepdata_lib`` writes (``independent_variables`` and
  ``dependent_variables`` with headers, units and qualifiers), with a ``submission.yaml``
  naming them (``pyhf-dask contour results.nc --format hepdata -o hepdata/``). Written
  directly: ``hepdata_lib`` is not needed.

Example:
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset(
    ...     {"CLs_obs": ("point", [0.02, np.nan]),
    ...      "CLs_exp": (("point", "band"), [[.01, .02, .03, .04, .05], [np.nan] * 5]),
    ...      "status": ("point", np.array([0, 2], dtype=np.int8))},
    ...     coords={"point": ["a_10", "a_9"], "m": ("point", [10.0, 9.0]), "poi": 1.0,
    ...             "band": [-2, -1, 0, 1, 2]}, attrs={"labels": "m", "cl": 0.95})
    >>> [(p["name"], p["m"], p["status"], p["CLs_obs"]) for p in result_records(ds)["points"]]
    [('a_9', 9.0, 'failed', None), ('a_10', 10.0, 'converged', 0.02)]
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from pyhf_dask.exceptions import InvalidOption

if TYPE_CHECKING:
    from pyhf_dask.contours import Contours

__all__ = [
    "FORMAT",
    "hepdata_tables",
    "result_records",
    "to_json",
    "write_csv",
    "write_hepdata",
    "write_json",
    "write_text_atomic",
]

#: The ``format`` entry of the JSON results.
FORMAT = "pyhf_dask results 1"
_BAND_NAMES = ("m2", "m1", "", "p1", "p2")
_CURVE_TITLES = {
    "obs": "Observed",
    "exp": "Expected",
    "exp-1": "Expected -1 sigma",
    "exp+1": "Expected +1 sigma",
    "exp-2": "Expected -2 sigma",
    "exp+2": "Expected +2 sigma",
}

_CURVE_FILES = {
    "obs": "observed",
    "exp": "expected",
    "exp-1": "expected_minus1sigma",
    "exp+1": "expected_plus1sigma",
    "exp-2": "expected_minus2sigma",
    "exp+2": "expected_plus2sigma",
}


def _number(value: Any) -> float | None:
    """A finite float, else ``None`` (JSON has no NaN)."""
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(values: Any) -> Any:
    array = np.asarray(values, dtype=float)
    if array.ndim == 0:
        return _number(array)
    return [_numbers(v) for v in array]


def _labels(ds: xr.Dataset) -> list[str]:
    return [name for name in str(ds.attrs.get("labels", "")).split(",") if name in ds.coords]


def _order(ds: xr.Dataset, names: list[str], labels: list[str]) -> list[int]:
    """Grid order: numerically by the labels, else by the numbers in the names."""
    if labels:
        columns = [np.asarray(ds[name].values, dtype=float) for name in labels]
        keys: list[Any] = [tuple(c[i] for c in columns) for i in range(len(names))]
    else:
        keys = [
            [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part) for part in parts]
            for parts in (re.findall(r"\d+(?:\.\d+)?|\D+", name) for name in names)
        ]
    return sorted(range(len(names)), key=lambda i: (keys[i], names[i]))


def _units(ds: xr.Dataset, names: Sequence[str]) -> dict[str, str | None]:
    from pyhf_dask.figures import unit_of

    return {name: unit_of(name, ds) for name in names}


def _loaded(ds: xr.Dataset) -> xr.Dataset:
    from pyhf_dask.results import is_lazy

    return ds.compute() if is_lazy(ds) else ds


def result_records(ds: xr.Dataset) -> dict[str, Any]:
    """A computed (or lazy: computed here, once) result as plain JSON-ready data.

    Returns:
        ``{"format", "cl", "poi_name", "poi", "labels", "units", "band", "attrs",
        "points"}``; each point holds ``name``, its coordinates, ``status``, ``CLs_obs``
        (a list over ``poi`` for a POI scan), ``CLs_exp`` (the band ``-2..2``, per POI
        value for a POI scan), ``upper_limit_obs`` and ``upper_limit_exp`` when present,
        ``fit_time``, ``message`` and any other per-point text (``best_region``).
    """
    from pyhf_dask.results import point_names, status_names

    ds = _loaded(ds)
    names = point_names(ds).tolist()
    labels = _labels(ds)
    status = status_names(ds["status"]).tolist() if "status" in ds else ["unknown"] * len(names)
    poi = ds["poi"].values if "poi" in ds.coords else None
    extra_text = [
        str(name)
        for name, var in ds.data_vars.items()
        if var.dims == ("point",) and var.dtype.kind in "OUT" and name != "message"
    ]
    points = []
    for i in _order(ds, names, labels):
        record: dict[str, Any] = {"name": names[i]}
        for label in labels:
            record[label] = _number(ds[label].values[i])
        record["status"] = status[i]
        for var in ("CLs_obs", "CLs_exp", "upper_limit_obs", "upper_limit_exp", "fit_time"):
            if var in ds:
                record[var] = _numbers(ds[var].isel(point=i).values)
        for var in extra_text:
            record[var] = str(ds[var].values[i])
        if "message" in ds:
            record["message"] = str(ds["message"].values[i])
        points.append(record)
    attrs = {
        k: (v.item() if isinstance(v, np.generic) else v)
        for k, v in ds.attrs.items()
        if isinstance(v, str | int | float | np.generic)
    }
    return {
        "format": FORMAT,
        "cl": _number(ds.attrs.get("cl", 0.95)),
        "poi_name": ds.attrs.get("poi_name"),
        "poi": None if poi is None else _numbers(poi),
        "labels": labels,
        "units": _units(ds, labels),
        "band": [int(b) for b in np.asarray(ds["band"].values)] if "band" in ds.coords else None,
        "attrs": attrs,
        "points": points,
    }


def to_json(ds: xr.Dataset, *, indent: int | None = 1) -> str:
    """JSON text of :func:`result_records` (valid JSON: no NaN)."""
    return json.dumps(result_records(ds), indent=indent, allow_nan=False)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` through a temporary file in its folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write :func:`to_json` of ``ds`` to ``path``."""
    write_text_atomic(to_json(ds) + "\n", path)


def _csv_number(value: Any) -> str:
    number = float(value)
    return repr(number) if math.isfinite(number) else "nan"


def csv_text(ds: xr.Dataset) -> str:
    """The result as CSV: one row per point and POI value.

    Columns: ``point``, the grid labels, ``poi``, ``status``, ``CLs_obs``, ``CLs_exp_m2``,
    ``CLs_exp_m1``, ``CLs_exp``, ``CLs_exp_p1``, ``CLs_exp_p2``, then (POI scans) the upper
    limits ``upper_limit_obs``, ``upper_limit_exp_m2`` ... (the same on every row of a
    point), ``fit_time`` and ``message``.
    """
    data = result_records(ds)
    labels = data["labels"]
    poi = data["poi"]
    scan = isinstance(poi, list)
    band = ["CLs_exp" + (f"_{b}" if b else "") for b in _BAND_NAMES]
    limits = ["upper_limit_obs"] + ["upper_limit_exp" + (f"_{b}" if b else "") for b in _BAND_NAMES]
    has_limits = any("upper_limit_obs" in p for p in data["points"])
    extra = [
        k
        for k in (data["points"][0] if data["points"] else {})
        if k not in {"name", "status", "message", "fit_time", *labels}
        and not k.startswith(("CLs_", "upper_limit_"))
    ]
    header = ["point", *labels, "poi", "status", "CLs_obs", *band]
    header += (limits if has_limits else []) + extra + ["fit_time", "message"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    nan = float("nan")
    for point in data["points"]:
        obs = point.get("CLs_obs")
        exp = point.get("CLs_exp")
        values = poi if scan else [poi]
        for j, mu in enumerate(values):
            o = obs[j] if scan else obs
            e = exp[j] if scan else exp
            row = [point["name"], *(_csv_number(_nan(point[k])) for k in labels)]
            row += [_csv_number(_nan(mu)), point["status"], _csv_number(_nan(o))]
            row += [_csv_number(_nan(v)) for v in (e or [nan] * 5)]
            if has_limits:
                row.append(_csv_number(_nan(point.get("upper_limit_obs"))))
                row += [_csv_number(_nan(v)) for v in (point.get("upper_limit_exp") or [nan] * 5)]
            row += [str(point[k]) for k in extra]
            row += [_csv_number(_nan(point.get("fit_time"))), point.get("message", "")]
            writer.writerow(row)
    return out.getvalue()


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def write_csv(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write :func:`csv_text` of ``ds`` to ``path``."""
    write_text_atomic(csv_text(ds), path)


# ------------------------------------------------------------------ HEPData


def _yaml(data: Any) -> str:
    """Block-style YAML of plain data, as ``hepdata_lib`` writes it (PyYAML, key order kept)."""
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def _header(name: str, unit: str | None) -> dict[str, Any]:
    return {"name": name, "units": unit} if unit else {"name": name}


def hepdata_tables(
    found: Contours, *, units: dict[str, str | None] | None = None
) -> list[dict[str, Any]]:
    """One HEPData table per traced line of every curve.

    Each table is ``{"name", "description", "keywords", "data_file", "data"}``: ``data``
    holds ``independent_variables`` (the x coordinate) and ``dependent_variables`` (the y
    coordinate, with qualifiers naming the curve, the CL and the slice), as ``hepdata_lib``
    writes a contour ``Table``.

    Args:
        found: the contours (:func:`pyhf_dask.contours.find_contours`).
        units: unit per coordinate name (default: ``found.units``, else GeV for masses).
    """
    from pyhf_dask.figures import unit_of

    given = dict(found.units or {})
    given.update(units or {})

    def unit(name: str) -> str | None:
        return given.get(name, unit_of(name))

    tables = []
    for contour in found.contours:
        title = _CURVE_TITLES.get(contour.curve, contour.curve)
        for k, line in enumerate(contour.lines):
            part = f" (line {k + 1} of {len(contour.lines)})" if len(contour.lines) > 1 else ""
            qualifiers: list[dict[str, Any]] = [
                {"name": "Limit", "value": f"{title} {found.cl:g} CL"},
                {"name": "Quantity", "value": found.quantity},
            ]
            for name, value in found.selection.items():
                text = f"{value[0]:g} to {value[1]:g}" if isinstance(value, tuple) else value
                qualifier: dict[str, Any] = {"name": name, "value": text}
                if unit(name):
                    qualifier["units"] = unit(name)
                qualifiers.append(qualifier)
            if found.poi is not None:
                qualifiers.append({"name": "POI", "value": found.poi})
            points = np.asarray(line, dtype=float)
            data = {
                "independent_variables": [
                    {
                        "header": _header(found.x_name, unit(found.x_name)),
                        "values": [{"value": round(float(v), 6)} for v in points[:, 0]],
                    }
                ],
                "dependent_variables": [
                    {
                        "header": _header(found.y_name, unit(found.y_name)),
                        "qualifiers": qualifiers,
                        "values": [{"value": round(float(v), 6)} for v in points[:, 1]],
                    }
                ],
            }
            curve_file = _CURVE_FILES.get(contour.curve) or re.sub(r"\W+", "_", contour.curve)
            suffix = f"_part{k + 1}" if len(contour.lines) > 1 else ""
            at = ", ".join(f"{n} = {v}" for n, v in found.selection.items())
            tables.append(
                {
                    "name": f"{title} exclusion contour{part}",
                    "description": (
                        f"{title} exclusion contour at {found.cl:g} CL ({found.quantity}) in "
                        f"the {found.x_name}-{found.y_name} plane"
                        + (f" at {at}" if at else "")
                        + f"; {found.n_points} points, {found.n_failed} failed, interpolated "
                        f"in {found.transform} by pyhf_dask"
                    ),
                    "keywords": [{"name": "observables", "values": [found.quantity]}],
                    "data_file": f"contour_{curve_file}{suffix}.yaml",
                    "data": data,
                }
            )
    return tables


def write_hepdata(
    found: Contours,
    path: str | os.PathLike[str],
    *,
    units: dict[str, str | None] | None = None,
) -> list[Path]:
    """Write the contours as HEPData YAML: a folder or one table file.

    A folder (``path`` without ``.yaml``) receives ``submission.yaml`` (one document per
    table: name, description, keywords, data_file) and one data file per table, ready to
    be packed and uploaded. A ``.yaml`` path receives the one table when there is exactly
    one (one curve crossing its level once), else the error says to give a folder.

    Returns:
        The files written.

    Raises:
        InvalidOption: no contour line to write, or several for one ``.yaml`` file.
    """
    path = Path(path)
    tables = hepdata_tables(found, units=units)
    if not tables:
        msg = f"{path}: no contour line to write (no curve crosses its level in the plane)"
        raise InvalidOption(msg)
    if path.suffix.lower() in (".yaml", ".yml"):
        if len(tables) > 1:
            msg = (
                f"{path}: {len(tables)} contour lines make {len(tables)} HEPData tables; give "
                "a folder (-o hepdata/) or one curve (--curve obs)"
            )
            raise InvalidOption(msg)
        write_text_atomic(_yaml(tables[0]["data"]), path)
        return [path]
    path.mkdir(parents=True, exist_ok=True)
    written = []
    comment = {"comment": f"Exclusion contours in {found.x_name}-{found.y_name}, by pyhf_dask"}
    documents = ["---\n" + _yaml(comment)]
    for table in tables:
        target = path / table["data_file"]
        write_text_atomic(_yaml(table["data"]), target)
        written.append(target)
        entry = {k: table[k] for k in ("name", "description", "keywords", "data_file")}
        documents.append("---\n" + _yaml(entry))
    submission = path / "submission.yaml"
    write_text_atomic("".join(documents), submission)
    return [submission, *written]
