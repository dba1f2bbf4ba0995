"""Reading a pyhf ``PatchSet`` spec: pyhf's schema and rules, at the speed of large grids.

``pyhf.PatchSet(spec)`` validates the whole document with ``jsonschema``, which takes
about 0.2 ms per patch (2 s for a 10,000-point grid, longer than fitting it). Here the
document without its patches is validated with pyhf's own schema, and every patch is
checked against the schema's patch rules in plain Python, which says the same about any
document: the checks below are those of ``defs.json#/definitions/patchset/patch`` and
``.../jsonpatch`` of pyhf 0.7.6, with the same JSON types (a number is an int or float,
not a bool). Then pyhf's own rules follow: paths that are JSON pointers (``jsonpointer``
refuses others when pyhf builds a patch), unique names and values, as many values as
labels, and digests that match the workspace.

Example:
    >>> ps = {"metadata": {"references": {"hepdata": "ins1234567"}, "labels": ["m"],
    ...     "description": "d", "digests": {"md5": "0" * 32}}, "version": "1.0.0",
    ...     "patches": [{"metadata": {"name": "p_1", "values": [1]}, "patch": []}]}
    >>> [p.name for p in read_patchset(ps, "ps.json")]
    ['p_1']
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

from pyhf_dask.exceptions import InvalidPatch

__all__ = ["OVERRIDE", "PatchSpec", "read_patchset", "verify_digests"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-zA-Z0-9_]+$")
#: A JSON pointer (RFC 6901) as ``jsonpointer`` parses it when pyhf builds a patch.
_POINTER = re.compile(r"^(/([^~]|~[01])*)*$")
_WITH_VALUE = frozenset(("add", "replace", "test"))
_WITH_FROM = frozenset(("move", "copy"))
_OPS = "add, replace, test, remove, move, copy"


class PatchSpec(NamedTuple):
    """One patch of a patchset: its name, values and operations."""

    name: str
    values: tuple[Any, ...]
    patch: list[dict[str, Any]]


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _operation_problem(op: Any) -> str | None:
    """What is wrong with one JSON Patch operation under pyhf's schema, or ``None``."""
    if not isinstance(op, dict):
        return f"{_short(op)} is not of type 'object'"
    for key in ("op", "path"):
        if key not in op:
            return f"'{key}' is a required property"
    if not isinstance(op["path"], str):
        return f"path {_short(op['path'])} is not of type 'string'"
    if not _POINTER.match(op["path"]):
        return f"path {_short(op['path'])} is not a JSON pointer"
    kind = op["op"]
    if kind in _WITH_VALUE:
        return None if "value" in op else f"operation {kind!r} needs a 'value'"
    if kind == "remove":
        return None
    if kind in _WITH_FROM:
        if "from" not in op:
            return f"operation {kind!r} needs a 'from'"
        if not isinstance(op["from"], str):
            return f"'from' {_short(op['from'])} is not of type 'string'"
        if not _POINTER.match(op["from"]):
            return f"'from' {_short(op['from'])} is not a JSON pointer"
        return None
    return f"operation {_short(kind)} is not one of {_OPS}"


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _patch_problem(item: Any) -> tuple[str, str] | None:
    """``(where inside the patch, what)`` is wrong with one patchset entry, or ``None``."""
    if not isinstance(item, dict):
        return "", f"{_short(item)} is not of type 'object'"
    for key in ("metadata", "patch"):
        if key not in item:
            return "", f"'{key}' is a required property"
    extra = sorted(set(item) - {"metadata", "patch"})
    if extra:
        return "", f"additional properties are not allowed ({', '.join(map(repr, extra))})"
    meta = item["metadata"]
    if not isinstance(meta, dict):
        return ".metadata", f"{_short(meta)} is not of type 'object'"
    for key in ("name", "values"):
        if key not in meta:
            return ".metadata", f"'{key}' is a required property"
    name, values = meta["name"], meta["values"]
    if not isinstance(name, str):
        return ".metadata.name", f"{_short(name)} is not of type 'string'"
    if not _NAME.match(name):
        return ".metadata.name", f"{_short(name)} does not match '^[a-zA-Z0-9_]+$'"
    if not isinstance(values, list):
        return ".metadata.values", f"{_short(values)} is not of type 'array'"
    for j, v in enumerate(values):
        if not (_is_number(v) or isinstance(v, str)):
            return f".metadata.values.{j}", f"{_short(v)} is not a number or a string"
    ops = item["patch"]
    if not isinstance(ops, list):
        return ".patch", f"{_short(ops)} is not of type 'array'"
    for j, op in enumerate(ops):
        problem = _operation_problem(op)
        if problem is not None:
            return f".patch.{j}", problem
    return None


def _check_schema(spec: Any, where: str) -> None:
    """pyhf's schema on the document with at most its first patch, then every patch."""
    from pyhf_dask.schema import SchemaError, validate

    patches = spec.get("patches") if isinstance(spec, dict) else None
    skeleton = {**spec, "patches": patches[:1]} if isinstance(patches, list) else spec
    try:
        version = skeleton.get("version") if isinstance(skeleton, dict) else None
        validate(skeleton, "patchset.json", version=version)
    except SchemaError as exc:
        at = f" at {exc.path}" if exc.path else ""
        msg = f"{where}: not a valid pyhf patchset{at}: {exc.message}"
        raise InvalidPatch(msg) from exc
    assert isinstance(patches, list)  # the schema requires it
    for i, item in enumerate(patches):
        problem = _patch_problem(item)
        if problem is not None:
            inside, what = problem
            msg = f"{where}: not a valid pyhf patchset at patches.{i}{inside}: {what}"
            raise InvalidPatch(msg)


def read_patchset(spec: Any, where: str) -> list[PatchSpec]:
    """The patches of a patchset spec, checked as ``pyhf.PatchSet`` checks them.

    Raises:
        InvalidPatch: naming ``where`` and the first problem (schema, a name or values
            given twice, a number of values other than the number of labels).
    """
    _check_schema(spec, where)
    n_labels = len(spec["metadata"]["labels"])
    seen_names: dict[str, int] = {}
    seen_values: dict[tuple[Any, ...], int] = {}
    out: list[PatchSpec] = []
    for i, item in enumerate(spec["patches"]):
        meta = item["metadata"]
        name, values = meta["name"], tuple(meta["values"])
        if name in seen_names:
            msg = (
                f"{where}: not a valid pyhf patchset: patches {seen_names[name]} and {i} "
                f"are both named {name!r}"
            )
            raise InvalidPatch(msg)
        if values in seen_values:
            msg = (
                f"{where}: not a valid pyhf patchset: patches {seen_values[values]} and {i} "
                f"have the same values {list(values)}"
            )
            raise InvalidPatch(msg)
        if len(values) != n_labels:
            msg = (
                f"{where}: not a valid pyhf patchset: patch {name!r} has {len(values)} "
                f"values for {n_labels} labels"
            )
            raise InvalidPatch(msg)
        seen_names[name] = i
        seen_values[values] = i
        out.append(PatchSpec(name, values, item["patch"]))
    return out


#: How the refusal of a digest mismatch can be overridden, named in its message.
OVERRIDE = "--ignore-digest (ignore_digest=True in Python)"


def verify_digests(
    spec: Any,
    workspace: dict[str, Any],
    ws_where: str,
    where: str,
    *,
    ignore: bool = False,
) -> list[str]:
    """Raise unless every digest of the patchset matches the workspace (``PatchSet.verify``).

    A patchset made for another serialisation of the workspace (a simplified likelihood
    from ``simplify``, a workspace re-serialised or pruned) fails this check although its
    patches may apply; pyhf's ``Workspace.model(patches=...)`` and ``pyhf cls --patch`` do
    not check. With ``ignore=True`` a mismatch is logged as a warning naming both digests
    and the patches are used anyway.

    Returns:
        The mismatches found (``"sha256 <patchset's> != <workspace's>"``), empty when every
        digest matches.

    Raises:
        InvalidPatch: a digest does not match and ``ignore`` is false; the message names
            the override.

    Example:
        >>> ws = {"channels": [], "observations": [], "measurements": [], "version": "1.0.0"}
        >>> verify_digests({"metadata": {"digests": {"sha256": "0" * 64}}}, ws, "ws.json",
        ...                "ps.json", ignore=True)[0][:23]
        'sha256 000000000000 != '
    """
    from pyhf_dask.schema import digest as digest_of

    mismatches = []
    for algorithm, digest in spec["metadata"]["digests"].items():
        actual = digest_of(workspace, algorithm=algorithm)
        if actual != digest:
            mismatches.append(f"{algorithm} {str(digest)[:12]} != {actual[:12]}")
    if not mismatches:
        return mismatches
    what = (
        f"{where}: patchset digest does not match the workspace {ws_where} "
        f"({'; '.join(mismatches)})"
    )
    if not ignore:
        msg = (
            f"{what}; if these patches are meant for this workspace (e.g. a simplified "
            f"likelihood), pass {OVERRIDE}"
        )
        raise InvalidPatch(msg)
    log.warning(
        "%s; used anyway (digest check skipped: the patches may not be meant for this workspace)",
        what,
    )
    return mismatches
