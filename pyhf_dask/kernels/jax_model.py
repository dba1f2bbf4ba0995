"""Dense arrays of a HistFactory model, built directly from a workspace spec.

The JAX kernel does not evaluate pyhf's graph: it builds, per grid point, a small set of
NumPy arrays that describe the expected rates as a function of the parameters, in a "cell"
layout (one cell per sample and bin of its channel):

    rate[cell] = (nominal + sum_p histosys_p(alpha_p)) * prod_p normsys_p(alpha_p)
                 * prod_j theta[gather[cell, j]]
    rate[bin]  = sum of the rates of the cells of the bin

``gather`` holds the multiplicative parameters (normfactor, lumi, staterror, shapesys,
shapefactor) of each cell, padded with the index ``n_par`` of a constant 1. The numbers
follow pyhf 0.7 (defaults of every modifier, measurement-config overrides, staterror widths,
shapesys Poisson factors); :func:`pyhf_dask.kernels.jax_check.check_against_pyhf`
compares a built point with pyhf's own model once per model structure.

Points whose specs differ only in numbers share a :attr:`DenseModel.key` and are stacked.
Anything this builder does not know raises :class:`Unsupported`, and the kernel hands those
points to the reference kernel.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ARRAY_FIELDS",
    "DenseModel",
    "Unsupported",
    "apply_patch",
    "build_dense",
    "structure_key",
]

log = logging.getLogger(__name__)

#: Per-point arrays stacked by the kernel (name -> dims, ``P`` params, ``C`` cells, ``B`` bins).
ARRAY_FIELDS = (
    "nominal",
    "h_up",
    "h_dn",
    "n_hi",
    "n_lo",
    "data",
    "init",
    "lower",
    "upper",
    "fixed",
    "gauss",
    "sigma",
    "aux",
    "poisson",
    "tau",
)
_ALPHA = ("normsys", "histosys")
_PER_BIN = ("staterror", "shapesys", "shapefactor")
_KNOWN = {"normfactor", "lumi", *_ALPHA, *_PER_BIN}
_CONFIG_KEYS = {"name", "inits", "bounds", "fixed", "auxdata", "sigmas"}


class Unsupported(Exception):
    """The model uses something the dense builder does not implement."""


@dataclass
class DenseModel:
    """The dense arrays of one grid point plus its structure (shared by stacked points)."""

    key: Any
    par_names: list[str]
    poi_index: int
    cell_bin: np.ndarray  # (C,) int: global bin of each cell
    gather: np.ndarray  # (C, M) int: multiplicative parameters per cell, padded with P
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    cell_norm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mult_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Parameters of each set of ``par_names`` (for labels in messages).
    par_sizes: list[int] = field(default_factory=list)

    def shared(self) -> dict[str, np.ndarray]:
        """Structural arrays, the same for every point of the structure."""
        n_bins = int(self.arrays["data"].shape[0])
        n_norm = int(self.arrays["n_hi"].shape[1])
        n_mult = len(self.mult_index)
        local = np.full(len(self.arrays["init"]) + 1, n_mult, dtype=np.int64)
        local[self.mult_index] = np.arange(n_mult)
        cell_norm = np.zeros((len(self.cell_bin), n_norm))
        has = self.cell_norm >= 0
        cell_norm[np.flatnonzero(has), self.cell_norm[has]] = 1.0
        return {
            "cell_bin": np.eye(n_bins)[self.cell_bin],
            "gather": self.gather,
            "gather_local": local[self.gather],
            "mult_index": self.mult_index,
            "mult_select": np.eye(len(self.arrays["init"]))[:, self.mult_index],
            "cell_norm": cell_norm,
        }


def apply_patch(spec: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a jsonpatch, copying only the containers on the patched paths.

    ``add``/``replace``/``remove`` with plain JSON pointers are applied by copy-on-write
    (cheap for large workspaces); any other operation goes through ``jsonpatch`` on a
    deep copy.
    """
    if not all(op.get("op") in ("add", "replace", "remove") for op in patch):
        import jsonpatch

        return jsonpatch.apply_patch(copy.deepcopy(spec), patch)
    root: Any = dict(spec)
    for op in patch:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        if not tokens:
            msg = "patch operation on the document root"
            raise Unsupported(msg)
        node = root
        for token in tokens[:-1]:
            key: Any = int(token) if isinstance(node, list) else token
            child = node[key]
            child = list(child) if isinstance(child, list) else dict(child)
            node[key] = child
            node = child
        last = tokens[-1]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, op["value"])
            elif op["op"] == "replace":
                node[index] = op["value"]
            else:
                del node[index]
        elif op["op"] == "remove":
            del node[last]
        else:
            node[last] = op["value"]
    return root


def _measurement(spec: dict[str, Any], name: str | None) -> dict[str, Any]:
    measurements = spec.get("measurements", [])
    for meas in measurements:
        if name is None or meas["name"] == name:
            return meas["config"]
    msg = f"measurement {name!r} not found"
    raise Unsupported(msg)


def structure_key(spec: dict[str, Any], options: dict[str, Any]) -> Any:
    """Hashable description of everything but the numbers of a model.

    Sample names are left out (signal samples are often named after the grid point);
    channel names, bin counts, modifiers per sample, the POI, the measurement's parameter
    settings and the interpolation codes are in.
    """
    config = _measurement(spec, options.get("measurement"))
    channels = tuple(
        (
            ch["name"],
            len(ch["samples"][0]["data"]) if ch["samples"] else 0,
            tuple(tuple((m["name"], m["type"]) for m in s["modifiers"]) for s in ch["samples"]),
        )
        for ch in sorted(spec["channels"], key=lambda c: c["name"])
    )
    params = tuple(sorted(repr(sorted(p.items())) for p in config.get("parameters", [])))
    return (
        channels,
        config["poi"],
        params,
        options["normsys_interpcode"],
        options["histosys_interpcode"],
    )


def _paramsets(channels: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """Parameter name -> (kind, number of parameters), checking pyhf's sharing rules."""
    kinds: dict[str, tuple[str, int]] = {}
    owners: dict[str, set[tuple[str, str]]] = {}
    for ch in channels:
        nbins = len(ch["samples"][0]["data"])
        for sample in ch["samples"]:
            for mod in sample["modifiers"]:
                mtype, name = mod["type"], mod["name"]
                if mtype not in _KNOWN:
                    msg = f"modifier type {mtype!r} ({name}) is not supported"
                    raise Unsupported(msg)
                kind = "alpha" if mtype in _ALPHA else mtype
                size = nbins if mtype in _PER_BIN else 1
                if kinds.setdefault(name, (kind, size)) != (kind, size):
                    msg = f"parameter {name!r} is used by incompatible modifiers"
                    raise Unsupported(msg)
                owners.setdefault(name, set()).add((ch["name"], sample["name"]))
    for name, (kind, _) in kinds.items():
        chans = {c for c, _ in owners[name]}
        if kind == "staterror" and len(chans) > 1:
            msg = f"staterror {name!r} shared across channels"
            raise Unsupported(msg)
        if kind == "shapesys" and len(owners[name]) > 1:
            msg = f"shapesys {name!r} shared by several samples"
            raise Unsupported(msg)
    return kinds


def _defaults(kind: str, size: int) -> dict[str, Any]:
    if kind == "alpha":
        return {"inits": [0.0], "bounds": [[-5.0, 5.0]], "auxdata": [0.0], "sigmas": None}
    if kind in ("normfactor", "shapefactor"):
        return {"inits": [1.0] * size, "bounds": [[0.0, 10.0]] * size}
    if kind == "lumi":
        return {"inits": None, "bounds": None, "auxdata": None, "sigmas": None}
    return {
        "inits": [1.0] * size,
        "bounds": [[1e-10, 10.0]] * size,
        "auxdata": None,
        "sigmas": None,
    }


def build_dense(spec: dict[str, Any], options: dict[str, Any], key: Any = None) -> DenseModel:
    """Dense arrays of a (patched) workspace spec, following pyhf 0.7's conventions.

    Raises:
        Unsupported: for any feature the dense kernel does not implement.
    """
    normcode, histcode = options["normsys_interpcode"], options["histosys_interpcode"]
    if normcode not in ("code1", "code4") or histcode not in ("code0", "code2", "code4p"):
        msg = f"interpolation codes normsys {normcode}, histosys {histcode} not supported"
        raise Unsupported(msg)
    config = _measurement(spec, options.get("measurement"))
    channels = sorted(spec["channels"], key=lambda c: c["name"])
    observed = {obs["name"]: obs["data"] for obs in spec.get("observations", [])}
    kinds = _paramsets(channels)
    poi = config["poi"]
    if poi not in kinds:
        msg = f"POI {poi!r} is not a parameter of the model"
        raise Unsupported(msg)
    names = sorted(kinds)
    offset: dict[str, int] = {}
    n_par = 0
    for name in names:
        offset[name] = n_par
        n_par += kinds[name][1]

    # cells and bins
    cell_bin: list[int] = []
    nominal: list[float] = []
    data: list[float] = []
    slots: list[tuple[dict[str, Any], int, int]] = []  # (sample, first cell, nbins)
    bin0 = 0
    for ch in channels:
        nbins = len(ch["samples"][0]["data"])
        if ch["name"] not in observed or len(observed[ch["name"]]) != nbins:
            msg = f"observations of channel {ch['name']!r} missing or of the wrong length"
            raise Unsupported(msg)
        data.extend(float(x) for x in observed[ch["name"]])
        for sample in ch["samples"]:
            if len(sample["data"]) != nbins:
                msg = f"sample {sample['name']!r} has {len(sample['data'])} bins, not {nbins}"
                raise Unsupported(msg)
            slots.append((sample, len(cell_bin), nbins))
            nominal.extend(float(x) for x in sample["data"])
            cell_bin.extend(range(bin0, bin0 + nbins))
        bin0 += nbins
    n_cell = len(cell_bin)
    nom = np.asarray(nominal)
    h_up = np.zeros((n_par, n_cell))
    h_dn = np.zeros((n_par, n_cell))
    norm_slots = [
        i
        for i, (smp, _, _) in enumerate(slots)
        if any(m["type"] == "normsys" for m in smp["modifiers"])
    ]
    norm_col = {slot: k for k, slot in enumerate(norm_slots)}
    n_hi = np.ones((n_par, max(1, len(norm_slots))))
    n_lo = np.ones_like(n_hi)
    cell_norm = np.full(n_cell, -1, dtype=np.int64)
    mult: list[list[int]] = [[] for _ in range(n_cell)]
    stat_nom: dict[str, np.ndarray] = {}
    stat_unc: dict[str, list[np.ndarray]] = {}
    shapesys: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for slot, (sample, first, nbins) in enumerate(slots):
        cells = slice(first, first + nbins)
        if slot in norm_col:
            cell_norm[cells] = norm_col[slot]
        snom = nom[cells]
        for mod in sample["modifiers"]:
            mtype, name, mdata = mod["type"], mod["name"], mod.get("data")
            p = offset[name]
            if mtype == "histosys":
                h_up[p, cells] = np.asarray(mdata["hi_data"], dtype=float) - snom
                h_dn[p, cells] = snom - np.asarray(mdata["lo_data"], dtype=float)
            elif mtype == "normsys":
                hi, lo = float(mdata["hi"]), float(mdata["lo"])
                if not (hi > 0 and lo > 0):
                    msg = f"normsys {name!r} with a non-positive factor ({lo}, {hi})"
                    raise Unsupported(msg)
                n_hi[p, norm_col[slot]] = hi
                n_lo[p, norm_col[slot]] = lo
            elif mtype in ("normfactor", "lumi"):
                for c in range(first, first + nbins):
                    mult[c].append(p)
            else:
                for i, c in enumerate(range(first, first + nbins)):
                    mult[c].append(p + i)
                if mtype == "staterror":
                    unc = np.asarray(mdata, dtype=float)
                    stat_nom[name] = stat_nom.get(name, np.zeros(nbins)) + snom
                    stat_unc.setdefault(name, []).append(unc)
                elif mtype == "shapesys":
                    shapesys[name] = (snom.copy(), np.asarray(mdata, dtype=float))
    width = max(1, *(len(m) for m in mult))
    gather = np.full((n_cell, width), n_par, dtype=np.int64)
    for c, ps in enumerate(mult):
        gather[c, : len(ps)] = ps

    init = np.zeros(n_par)
    lower = np.zeros(n_par)
    upper = np.zeros(n_par)
    fixed = np.zeros(n_par, dtype=bool)
    gauss = np.zeros(n_par, dtype=bool)
    poisson = np.zeros(n_par, dtype=bool)
    sigma = np.ones(n_par)
    aux = np.zeros(n_par)
    tau = np.ones(n_par)
    user = {p["name"]: p for p in config.get("parameters", [])}
    for name in names:
        kind, size = kinds[name]
        sl = slice(offset[name], offset[name] + size)
        pset = _defaults(kind, size)
        pset["fixed"] = [False] * size
        if kind == "staterror":
            nsum = stat_nom[name]
            safe = np.where(nsum > 0, nsum, 1.0)
            rel2 = sum(np.where(nsum > 0, (unc / safe) ** 2, 0.0) for unc in stat_unc[name])
            rel = np.sqrt(rel2)
            pset["fixed"] = list(rel == 0)
            pset["sigmas"] = list(np.where(rel == 0, 1.0, rel))
            pset["auxdata"] = [1.0] * size
        elif kind == "shapesys":
            snom, unc = shapesys[name]
            valid = (snom > 0) & (unc > 0)
            factors = np.where(valid, snom**2 / np.where(valid, unc, 1.0) ** 2, 1.0)
            pset["fixed"] = list(~valid)
            pset["auxdata"] = list(factors)
            tau[sl] = factors
        conf = user.get(name, {})
        extra = set(conf) - _CONFIG_KEYS
        if extra:
            msg = f"measurement setting(s) {sorted(extra)} of {name!r} not supported"
            raise Unsupported(msg)
        for k in ("inits", "bounds", "auxdata", "sigmas", "fixed"):
            if k not in conf:
                continue
            if k not in pset or (k == "sigmas" and kind in ("alpha", "shapesys")):
                msg = f"measurement sets {k!r} of {name!r}, which does not use it"
                raise Unsupported(msg)
            value = conf[k]
            if k == "fixed" and isinstance(value, bool):
                value = [value] * size
            if len(value) != size:
                msg = f"measurement sets {len(value)} {k} for {name!r} ({size} parameters)"
                raise Unsupported(msg)
            pset[k] = value
        if any(pset.get(k) is None for k in ("inits", "bounds")) or (
            kind == "lumi" and (pset["auxdata"] is None or pset["sigmas"] is None)
        ):
            msg = f"parameter {name!r} needs inits/bounds/auxdata/sigmas in the measurement"
            raise Unsupported(msg)
        if kind == "alpha":
            pset["sigmas"] = [1.0]
        init[sl] = pset["inits"]
        bounds = np.asarray(pset["bounds"], dtype=float).reshape(size, 2)
        lower[sl], upper[sl] = bounds[:, 0], bounds[:, 1]
        fixed[sl] = np.asarray(pset["fixed"], dtype=bool)
        if kind in ("alpha", "lumi", "staterror"):
            gauss[sl] = True
            sigma[sl] = pset["sigmas"]
            aux[sl] = pset["auxdata"]
        elif kind == "shapesys":
            poisson[sl] = True
            aux[sl] = pset["auxdata"]
    if fixed[offset[poi]]:
        msg = "the POI is fixed in the measurement"
        raise Unsupported(msg)
    arrays = {
        "nominal": nom,
        "h_up": h_up,
        "h_dn": h_dn,
        "n_hi": n_hi,
        "n_lo": n_lo,
        "data": np.asarray(data),
        "init": init,
        "lower": lower,
        "upper": upper,
        "fixed": fixed,
        "gauss": gauss,
        "sigma": sigma,
        "aux": aux,
        "poisson": poisson,
        "tau": tau,
    }
    return DenseModel(
        key=key if key is not None else structure_key(spec, options),
        par_names=names,
        par_sizes=[kinds[name][1] for name in names],
        poi_index=offset[poi],
        cell_bin=np.asarray(cell_bin, dtype=np.int64),
        gather=gather,
        arrays=arrays,
        cell_norm=cell_norm,
        mult_index=np.unique(gather[gather < n_par])
        if (gather < n_par).any()
        else np.zeros(1, dtype=np.int64),
    )
