"""Vectorised model building: one dense build per patch shape, then array fills.

The points of a grid usually share a model structure and differ only in numbers, most
often the yields and modifier data of a signal sample added or replaced by each patch.
:func:`build_chunk` groups a chunk's patches by their *shape* (:func:`patch_shape`: the
operations and paths, and for a sample the data lengths and its modifiers' names, types
and data lengths: everything but the numbers), builds the first point of each group with
:func:`~pyhf_dask.kernels.jax_model.build_dense`, and fills the per-point arrays of the
whole group from the patches' numbers with array operations, in the same order of
floating-point operations as the per-point builder (the arrays are identical).

Patch operations understood: ``add``/``replace`` of a whole sample, ``replace`` of a
sample's ``data``, and ``remove``. A patch with any other operation, a group whose first
point cannot be built, and any point whose numbers the per-point builder would reject
(a non-positive normsys factor, a fixed POI) take the per-point path, which keeps its
messages.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyhf_dask.kernels.jax_batch import Stack, stack_groups
from pyhf_dask.kernels.jax_model import (
    ARRAY_FIELDS,
    DenseModel,
    Unsupported,
    _measurement,
    _paramsets,
    apply_patch,
    build_dense,
    structure_key,
)
from pyhf_dask.signals import SignalArrays

__all__ = ["Group", "Stack", "build_chunk", "patch_shape", "stack_groups"]

log = logging.getLogger(__name__)

_PER_BIN = ("staterror", "shapesys", "shapefactor")


@dataclass
class Group:
    """Points of one model structure: a template point and the arrays that vary.

    Attributes:
        key: the structure key (:func:`~pyhf_dask.kernels.jax_model.structure_key`).
        spec: the template point's patched spec (for the one-time pyhf check).
        model: the template point's dense model (structure and constant arrays).
        index: positions of the group's points in the chunk.
        varying: per-point arrays ``(n, ...)`` of the fields that differ between points;
            every other field of :data:`ARRAY_FIELDS` is the template's.
    """

    key: Any
    spec: dict[str, Any]
    model: DenseModel
    index: np.ndarray
    varying: dict[str, np.ndarray] = field(default_factory=dict)


_NAME_TYPE = operator.itemgetter("name", "type")


def patch_shape(patch: Sequence[dict[str, Any]]) -> tuple[Any, ...] | None:
    """Everything of a patch but its numbers, or ``None`` for a patch not understood.

    For a sample: its data length and its modifiers' names and types. The lengths of the
    modifiers' data are checked when the numbers of a group are read (a group whose
    numbers do not line up takes the per-point path).

    Example:
        >>> patch_shape([{"op": "replace", "path": "/channels/0/samples/0/data",
        ...               "value": [1.0, 2.0]}])
        (('data', '/channels/0/samples/0/data', 2),)
    """
    out: list[Any] = []
    try:
        for op in patch:
            kind, path = op["op"], op["path"]
            if kind == "remove":
                out.append(("remove", path))
                continue
            value = op["value"]
            if kind not in ("add", "replace"):
                return None
            if isinstance(value, dict) and "modifiers" in value:
                mods = tuple(map(_NAME_TYPE, value["modifiers"]))
                out.append(("sample", kind, path, len(value["data"]), mods))
            elif kind == "replace" and path.endswith("/data") and isinstance(value, list):
                out.append(("data", path, len(value)))
            else:
                return None
    except (KeyError, TypeError, AttributeError):
        return None
    return tuple(out)


@dataclass
class _Slot:
    """A sample of the dense layout: its cells and modifiers."""

    sample: dict[str, Any]
    first: int
    nbins: int
    channel: str


def _slots(spec: dict[str, Any]) -> list[_Slot]:
    """The samples in the dense builder's order (channels by name, samples in order)."""
    out = []
    first = 0
    for ch in sorted(spec["channels"], key=lambda c: c["name"]):
        nbins = len(ch["samples"][0]["data"])
        for sample in ch["samples"]:
            out.append(_Slot(sample, first, nbins, ch["name"]))
            first += nbins
    return out


def _floats(rows: list[Any], n: int, width: int) -> np.ndarray:
    out = np.asarray(rows, dtype=np.float64)
    if out.shape != (n, width):
        msg = f"expected {n} rows of {width} numbers, got shape {out.shape}"
        raise ValueError(msg)
    return out


class _Fill:
    """Per-point arrays of one group, filled from the patches' numbers."""

    def __init__(
        self, model: DenseModel, spec: dict[str, Any], options: dict[str, Any], n: int
    ) -> None:
        self.model = model
        self.n = n
        self.slots = _slots(spec)
        channels = sorted(spec["channels"], key=lambda c: c["name"])
        kinds = _paramsets(channels)
        self.offset: dict[str, int] = {}
        n_par = 0
        for name in sorted(kinds):
            self.offset[name] = n_par
            n_par += kinds[name][1]
        config = _measurement(spec, options.get("measurement"))
        self.user = {p["name"]: p for p in config.get("parameters", [])}
        norm_slots = [
            i
            for i, s in enumerate(self.slots)
            if any(m["type"] == "normsys" for m in s.sample["modifiers"])
        ]
        self.norm_col = {slot: k for k, slot in enumerate(norm_slots)}
        self.arrays: dict[str, np.ndarray] = {}
        self.bad = np.zeros(n, dtype=bool)

    def field(self, name: str) -> np.ndarray:
        """The group's ``(n, ...)`` array of a field, copied from the template once."""
        if name not in self.arrays:
            base = self.model.arrays[name]
            self.arrays[name] = np.broadcast_to(base, (self.n, *base.shape)).copy()
        return self.arrays[name]

    def const(self, values: Any) -> np.ndarray:
        row = np.asarray(values, dtype=np.float64)
        return np.broadcast_to(row, (self.n, *row.shape))

    def run(self, numbers: dict[int, dict[Any, Any]]) -> dict[str, np.ndarray]:
        """Fill the arrays of the varying slots.

        Args:
            numbers: slot -> ``{"data": (n, nbins), k: per-point data of modifier k}``
                (modifiers without an entry keep the template sample's data).
        """
        stat: set[str] = set()
        shapesys: set[str] = set()
        nominal = self.field("nominal")
        for slot, nums in numbers.items():
            s = self.slots[slot]
            nominal[:, s.first : s.first + s.nbins] = nums["data"]
        for slot, nums in numbers.items():
            s = self.slots[slot]
            cells = slice(s.first, s.first + s.nbins)
            snom = nums["data"]
            for k, mod in enumerate(s.sample["modifiers"]):
                mtype, name, mdata = mod["type"], mod["name"], mod.get("data")
                p = self.offset[name]
                if mtype == "histosys":
                    hi = nums[k]["hi_data"] if k in nums else self.const(mdata["hi_data"])
                    lo = nums[k]["lo_data"] if k in nums else self.const(mdata["lo_data"])
                    self.field("h_up")[:, p, cells] = hi - snom
                    self.field("h_dn")[:, p, cells] = snom - lo
                elif mtype == "normsys" and k in nums:
                    hi, lo = nums[k]["hi"], nums[k]["lo"]
                    self.bad |= ~((hi > 0) & (lo > 0))
                    self.field("n_hi")[:, p, self.norm_col[slot]] = hi
                    self.field("n_lo")[:, p, self.norm_col[slot]] = lo
                elif mtype == "staterror":
                    stat.add(name)
                elif mtype == "shapesys":
                    shapesys.add(name)
        for name in sorted(stat):
            self._staterror(name, numbers)
        for name in sorted(shapesys):
            self._shapesys(name, numbers)
        poi = self.model.poi_index
        if "fixed" in self.arrays:
            self.bad |= self.arrays["fixed"][:, poi]
        return self.arrays

    def _modifier(self, name: str, numbers: dict[int, dict[Any, Any]]) -> list[Any]:
        """(slot, nominal, data) of every sample with modifier ``name``, in slot order."""
        found = []
        for slot, s in enumerate(self.slots):
            for k, mod in enumerate(s.sample["modifiers"]):
                if mod["name"] != name:
                    continue
                nums = numbers.get(slot, {})
                snom = nums["data"] if "data" in nums else self.const(s.sample["data"])
                data = nums[k] if k in nums else self.const(mod["data"])
                found.append((s, snom, data))
        return found

    def _staterror(self, name: str, numbers: dict[int, dict[Any, Any]]) -> None:
        parts = self._modifier(name, numbers)
        nbins = parts[0][0].nbins
        nsum = np.zeros((self.n, nbins))
        for _, snom, _ in parts:
            nsum = nsum + snom
        safe = np.where(nsum > 0, nsum, 1.0)
        rel2: Any = 0
        for _, _, unc in parts:
            rel2 = rel2 + np.where(nsum > 0, (unc / safe) ** 2, 0.0)
        rel = np.sqrt(rel2)
        sl = slice(self.offset[name], self.offset[name] + nbins)
        conf = self.user.get(name, {})
        if "fixed" not in conf:
            self.field("fixed")[:, sl] = rel == 0
        if "sigmas" not in conf:
            self.field("sigma")[:, sl] = np.where(rel == 0, 1.0, rel)

    def _shapesys(self, name: str, numbers: dict[int, dict[Any, Any]]) -> None:
        (s, snom, unc), *_ = self._modifier(name, numbers)
        valid = (snom > 0) & (unc > 0)
        factors = np.where(valid, snom**2 / np.where(valid, unc, 1.0) ** 2, 1.0)
        sl = slice(self.offset[name], self.offset[name] + s.nbins)
        conf = self.user.get(name, {})
        self.field("tau")[:, sl] = factors
        if "fixed" not in conf:
            self.field("fixed")[:, sl] = ~valid
        if "auxdata" not in conf:
            self.field("aux")[:, sl] = factors


def _numbers(
    template: list[dict[str, Any]], patches: list[Any], slots: list[_Slot]
) -> dict[int, dict[Any, Any]]:
    """Per-slot numbers ``(n, ...)`` of the patches of a group, located by the template."""
    where_sample = {id(s.sample): i for i, s in enumerate(slots)}
    where_data = {id(s.sample["data"]): i for i, s in enumerate(slots)}
    n = len(patches)
    out: dict[int, dict[Any, Any]] = {}
    for j, op in enumerate(template):
        if op["op"] == "remove":
            continue
        value = op["value"]
        if isinstance(value, dict):
            slot = where_sample.get(id(value))
            if slot is None:
                msg = "a patched sample is not in the patched spec"
                raise LookupError(msg)
            width = slots[slot].nbins
            vals = [p[j]["value"] for p in patches]
            nums: dict[Any, Any] = {"data": _floats([v["data"] for v in vals], n, width)}
            for k, mod in enumerate(value["modifiers"]):
                mtype = mod["type"]
                if mtype in ("histosys", "normsys"):
                    keys = ("hi_data", "lo_data") if mtype == "histosys" else ("hi", "lo")
                    size = width if mtype == "histosys" else None
                    nums[k] = {
                        key: _column([v["modifiers"][k]["data"][key] for v in vals], n, size)
                        for key in keys
                    }
                elif mtype in ("staterror", "shapesys"):
                    nums[k] = _floats([v["modifiers"][k]["data"] for v in vals], n, width)
            out[slot] = nums
        else:
            slot = where_data.get(id(value))
            if slot is None:
                msg = "patched data are not in the patched spec"
                raise LookupError(msg)
            out[slot] = {"data": _floats([p[j]["value"] for p in patches], n, slots[slot].nbins)}
    return out


def _nan_rows(numbers: dict[int, dict[Any, Any]], n: int) -> np.ndarray:
    """Points with a NaN among their patched numbers."""
    bad = np.zeros(n, dtype=bool)
    for nums in numbers.values():
        for value in nums.values():
            for x in value.values() if isinstance(value, dict) else (value,):
                if x.ndim and x.strides[0]:  # per point, not a broadcast constant
                    bad |= np.isnan(x.reshape(n, -1)).any(axis=1)
    return bad


def _column(rows: list[Any], n: int, width: int | None) -> np.ndarray:
    if width is not None:
        return _floats(rows, n, width)
    out = np.asarray(rows, dtype=np.float64)
    if out.shape != (n,):
        msg = f"expected {n} numbers, got shape {out.shape}"
        raise ValueError(msg)
    return out


def _per_point(
    workspace: dict[str, Any],
    patches: Sequence[Any],
    index: list[int],
    options: dict[str, Any],
    groups: dict[Any, Group],
    failed: dict[int, str],
) -> None:
    """The per-point builder, for points the vectorised path does not take."""
    by_key: dict[Any, list[tuple[int, DenseModel, dict[str, Any]]]] = {}
    for i in index:
        try:
            spec = apply_patch(workspace, patches[i])
            key = structure_key(spec, options)
            model = build_dense(spec, options, key)
        except Unsupported as exc:
            failed[i] = str(exc)
            continue
        except Exception as exc:  # a broken spec: the reference kernel reports it
            failed[i] = f"dense model not built ({type(exc).__name__}: {exc})"
            continue
        by_key.setdefault(key, []).append((i, model, spec))
    for key, members in by_key.items():
        first = members[0][1]
        varying = {k: np.stack([m.arrays[k] for _, m, _ in members]) for k in ARRAY_FIELDS}
        group = Group(key, members[0][2], first, np.array([i for i, _, _ in members]), varying)
        groups[(key, "per-point", len(groups))] = group


def build_chunk(
    workspace: dict[str, Any], patches: Sequence[Any], options: dict[str, Any]
) -> tuple[list[Group], dict[int, str]]:
    """The dense models of a chunk's points, grouped by structure.

    Args:
        workspace: background-only workspace spec.
        patches: one jsonpatch per point, or the points' signal yields
            (:func:`~pyhf_dask.kernels.jax_arrays.build_arrays`).
        options: fit options (interpolation codes, measurement).

    Returns:
        The groups, and the points no dense model could be built for (index -> reason,
        the message of the per-point builder).
    """
    if isinstance(patches, SignalArrays):
        from pyhf_dask.kernels.jax_arrays import build_arrays

        return build_arrays(workspace, patches, options)
    by_shape: dict[Any, list[int]] = {}
    single: list[int] = []
    for i, patch in enumerate(patches):
        shape = patch_shape(patch)
        if shape is None:
            single.append(i)
        else:
            by_shape.setdefault(shape, []).append(i)
    groups: dict[Any, Group] = {}
    failed: dict[int, str] = {}
    for index in by_shape.values():
        template = patches[index[0]]
        try:
            spec = apply_patch(workspace, template)
            key = structure_key(spec, options)
            model = build_dense(spec, options, key)
            fill = _Fill(model, spec, options, len(index))
            numbers = _numbers(template, [patches[i] for i in index], fill.slots)
            varying = fill.run(numbers)
        except Exception as exc:  # the per-point path says why, point by point
            log.debug("vectorised build declined a group of %d: %s", len(index), exc)
            single.extend(index)
            continue
        # NaN may be a NaN or a None (which the per-point builder rejects): per point
        keep = ~(fill.bad | _nan_rows(numbers, len(index)))
        if not keep.all():
            single.extend(np.asarray(index)[~keep].tolist())
            varying = {k: v[keep] for k, v in varying.items()}
        rows = np.asarray(index)[keep]
        if len(rows):
            groups[(key, len(groups))] = Group(key, spec, model, rows, varying)
    if single:
        _per_point(workspace, patches, sorted(single), options, groups, failed)
    return list(groups.values()), failed
