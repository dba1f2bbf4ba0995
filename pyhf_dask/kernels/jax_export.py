"""The kernel's batched functions, traced once per machine instead of once per process.

JAX's persistent compilation cache keeps compiled executables, but finds them by the
lowered module, so every new process first traces the batched fit again: about 0.6 s
for the fit of a small model on 2 cores, and more for large ones, paid by every worker
of a scan before its first fit. :func:`call` keeps each traced and lowered function as a
serialized :mod:`jax.export` artefact beside the compilation cache, keyed by the function,
its static settings, the shapes and dtypes of its arguments, the platform, the versions
of JAX and jaxlib, and the source of the kernel's JAX modules. A later process
deserializes it (milliseconds), and the compilation cache then finds its executable.

Anything unusual falls back to the plain call: no compilation cache configured, an
argument that is not an array, a function JAX cannot export (a custom call without
stability guarantees), an unreadable or corrupt file.

Example:
    >>> len(source_digest())  # part of every key: a changed kernel is traced anew
    64
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyhf_dask.cache import keep, known, write_atomic

__all__ = ["call", "keep_agreement", "known_to_agree", "source_digest"]

log = logging.getLogger(__name__)

#: signature -> the jitted call of the deserialized (or just exported) function
_LOADED: dict[str, Callable[..., Any]] = {}
#: signatures that could not be exported: called directly from then on
_PLAIN: set[str] = set()
_FOLDER = "pyhf_dask_export"


@functools.cache
def source_digest() -> str:
    """Digest of the source of the kernel's JAX modules (a change invalidates exports)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(here.glob("jax_*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _folder() -> Path | None:
    import jax

    where = getattr(jax.config, "jax_compilation_cache_dir", None)
    return Path(where) / _FOLDER if where else None


#: Platform names of :func:`jax.export.export`.
_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def export_platform(leaves: list[Any]) -> str | None:
    """The one export platform of the arguments' devices (``"cuda"`` for an NVIDIA GPU),
    or ``None`` (arguments on several platforms, or one export does not know)."""
    found = {str(d.client.platform) for x in leaves for d in x.devices()}
    if len(found) != 1:
        return None
    (platform,) = found
    return platform if platform in _PLATFORMS else None


def _signature(
    fn: Callable[..., Any], settings: Any, leaves: list[Any], tree: Any, platform: str
) -> str:
    import jax
    import jaxlib

    parts = [
        getattr(fn, "__name__", repr(fn)),
        repr(settings),
        str(tree),
        ";".join(f"{x.shape}{x.dtype}" for x in leaves),
        platform,
        jax.__version__,
        jaxlib.__version__,
        str(jax.config.read("jax_enable_x64")),
        source_digest(),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def call(fn: Callable[..., Any], settings: Any, *args: Any) -> Any:
    """``fn(*args, settings=settings)``, through an exported copy kept on disk.

    Args:
        fn: a jitted kernel function with a static ``settings`` argument.
        settings: its static settings (hashable, with a stable ``repr``).
        args: pytrees of JAX arrays, already on their device.
    """
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    folder = _folder()
    if folder is None or not all(isinstance(x, jax.Array) for x in leaves):
        return fn(*args, settings=settings)
    platform = export_platform(leaves)
    if platform is None:
        return fn(*args, settings=settings)
    sig = _signature(fn, settings, leaves, tree, platform)
    if sig in _PLAIN:
        return fn(*args, settings=settings)
    run = _LOADED.get(sig)
    if run is not None:
        return run(*args)
    run = _load_or_export(fn, settings, args, folder / f"{sig}.jaxexport", platform)
    if run is not None:
        try:
            out = run(*args)
        except Exception as exc:  # an export that does not run here: the plain function
            log.debug("exported %s failed on first use: %s", getattr(fn, "__name__", fn), exc)
        else:
            _LOADED[sig] = run
            return out
    _PLAIN.add(sig)
    return fn(*args, settings=settings)


def _load_or_export(
    fn: Callable[..., Any], settings: Any, args: tuple[Any, ...], path: Path, platform: str
) -> Callable[..., Any] | None:
    from jax import export, jit

    try:
        exported = export.deserialize(bytearray(path.read_bytes()))
    except FileNotFoundError:
        exported = None
    except Exception as exc:  # a corrupt or foreign file: export again
        log.debug("cannot load %s (%s): exporting again", path, exc)
        exported = None
    if exported is None:
        try:
            exporter = export.export(
                jit(functools.partial(fn, settings=settings)), platforms=[platform]
            )
            exported = exporter(*args)
            write_atomic(path, exported.serialize())
        except Exception as exc:  # not exportable: the plain function is used
            log.debug("%s cannot be exported: %s", getattr(fn, "__name__", fn), exc)
            return None
    return jit(exported.call)


def _agreement_key(key: Any) -> str:
    from pyhf_dask.schema import pyhf_version

    return "|".join((repr(key), pyhf_version(), source_digest()))


def known_to_agree(key: Any) -> bool:
    """Whether the structure check found structure ``key`` to agree with pyhf before.

    The check (:func:`pyhf_dask.kernels.jax_check.check_against_pyhf`) builds pyhf's model
    of a structure once; its agreement is kept beside the exports
    (:mod:`pyhf_dask.cache`), keyed by the structure, pyhf's version and the kernel's
    source, so a new worker needs neither pyhf nor the check again. A refusal is not
    kept: it is checked again by the next process.
    """
    folder = _folder()
    return folder is not None and known("agree", _agreement_key(key), root=folder)


def keep_agreement(key: Any) -> None:
    """Keep that structure ``key`` agrees with pyhf (see :func:`known_to_agree`)."""
    folder = _folder()
    if folder is not None:
        keep("agree", _agreement_key(key), root=folder)
