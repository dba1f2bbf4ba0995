"""pyhf's JSON schemas, digests and version, without importing pyhf.

Importing pyhf takes about 0.7 s (its NumPy backend brings SciPy's statistics), as long as
the fits of a small grid. The checks of the inputs only need pyhf's schema files, its
digest and its version: they are read here from the installed pyhf package, through the
same ``jsonschema`` validator pyhf uses (Draft 6, arrays and numbers also as NumPy
arrays and scalars, the first error raised), so the verdicts, messages and paths are
pyhf's (a property test compares them with ``pyhf.schema.validate``).

Example:
    >>> validate({"channels": []}, "workspace.json")
    Traceback (most recent call last):
        ...
    pyhf_dask.schema.SchemaError: [] should be non-empty. (at channels)
    >>> digest({"a": 2.0, "b": 3.0, "c": 1.0})[:16]
    'a38f6093800189b7'
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "SchemaError", "digest", "pyhf_version", "validate"]

#: pyhf's default schema version (``pyhf.schema.version``)
SCHEMA_VERSION = "1.0.0"


class SchemaError(ValueError):
    """A document does not validate against pyhf's schema.

    Attributes:
        message: jsonschema's message (pyhf's ``InvalidSpecification``, first line).
        path: where, as pyhf writes it (``channels[0].samples``).
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} (at {path})" if path else message)
        self.message = message
        self.path = path


def _pyhf_folder() -> Path:
    spec = importlib.util.find_spec("pyhf")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a dependency
        msg = "pyhf is not installed"
        raise ImportError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _validator(schema_name: str, version: str) -> Any:
    """A Draft 6 validator of ``version/schema_name`` with every schema of that version."""
    import jsonschema
    import numpy as np
    import referencing
    import referencing.jsonschema

    folder = _pyhf_folder() / "schemas" / version
    if not (folder / schema_name).is_file():
        msg = f"pyhf has no schema {schema_name!r} of version {version!r}"
        raise SchemaError(msg, "version")
    resources = []
    ids = {}
    for path in sorted(folder.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        # without "$schema" a reference keeps this validator (and its NumPy-aware types)
        # instead of jsonschema's own Draft 6 validator
        contents.pop("$schema", None)
        resource = referencing.Resource.from_contents(
            contents, default_specification=referencing.jsonschema.DRAFT6
        )
        resources.append((contents["$id"], resource))
        ids[path.name] = contents["$id"]
    registry: Any = referencing.Registry().with_resources(resources)
    # the schema by its $id: its relative references resolve against it in the registry
    schema = {"$ref": ids[schema_name]}

    def is_array(checker: Any, instance: Any) -> bool:
        return isinstance(instance, list | np.ndarray)

    def is_number(checker: Any, instance: Any) -> bool:
        number = jsonschema._types.is_number(checker, instance)  # as pyhf does
        return bool(number) or isinstance(instance, numbers.Number | np.number)

    base = jsonschema.Draft6Validator
    checker = base.TYPE_CHECKER.redefine("array", is_array).redefine("number", is_number)
    extended = jsonschema.validators.extend(base, type_checker=checker)
    return extended(schema, registry=registry, format_checker=None)


def validate(spec: Mapping[str, Any], schema_name: str, *, version: str | None = None) -> None:
    """Validate ``spec`` against pyhf's schema ``schema_name`` (``pyhf.schema.validate``).

    Raises:
        SchemaError: the first error, with pyhf's message and path.
    """
    import jsonschema

    version = version or SCHEMA_VERSION
    if not isinstance(version, str) or "/" in version or version.startswith("."):
        msg = f"{version!r} is not a version of pyhf's schemas"
        raise SchemaError(msg, "version")
    validator = _validator(schema_name, version)
    try:
        validator.validate(spec)
    except jsonschema.ValidationError as err:
        path = "".join(f"[{item}]" if isinstance(item, int) else f".{item}" for item in err.path)
        raise SchemaError(f"{err.message}.", path.lstrip(".")) from None


def digest(obj: Any, algorithm: str = "sha256") -> str:
    """``pyhf.utils.digest``: the hash of the sorted JSON of ``obj``.

    Raises:
        ValueError: ``obj`` is not JSON-serializable, or ``algorithm`` is not in hashlib.
    """
    try:
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf8")
    except TypeError:
        msg = "The supplied object is not JSON-serializable for calculating a hash."
        raise ValueError(msg) from None
    try:
        hash_alg = getattr(hashlib, algorithm)
    except AttributeError:
        msg = f"{algorithm} is not an algorithm provided by Python's hashlib library."
        raise ValueError(msg) from None
    return str(hash_alg(text).hexdigest())


@functools.cache
def pyhf_version() -> str:
    """The installed pyhf's version (from its metadata, else from the module)."""
    return package_version("pyhf")


def package_version(name: str) -> str:
    """The installed version of package ``name``, read from its metadata, else from the
    imported module.

    Example:
        >>> package_version("pyhf") == __import__("pyhf").__version__
        True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # e.g. a source tree on sys.path
        return str(importlib.import_module(name).__version__)
