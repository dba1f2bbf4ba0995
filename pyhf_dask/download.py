"""Likelihoods by URL or DOI: downloaded once into a cache, then read as local files.

``pyhf-dask scan https://doi.org/10.17182/hepdata.90607.v3/r3`` (as ``pyhf contrib
download`` takes it) or ``SignalGrid.from_path(url)``: the input is fetched over HTTP(S)
into the download cache and read from there with every check of a local archive
(:mod:`pyhf_dask.archives`: unsafe members, member and archive size caps, gzip bombs).

- A DOI (``10.17182/...``, ``doi:10.17182/...`` or a ``https://doi.org/...`` URL) is
  resolved through ``pyhf-dask.download.doi-resolver`` (default ``https://doi.org/``),
  which redirects to the record's file; redirects are followed (HTTP and HTTPS only). As
  pyhf does, the request asks for ``application/x-tar, application/zip`` so that HEPData
  serves the file itself rather than its landing page.
- The download is refused above ``pyhf-dask.download.max-size`` MB: from its
  ``Content-Length`` before any byte is read, else while it streams.
- The cache is ``pyhf-dask.download.cache-dir``, by default ``downloads/`` in the
  package's cache folder (:func:`pyhf_dask.cache.cache_root`; with the cache off, a
  temporary folder per run). A URL is fetched once: a later run reads the cached copy and
  makes no request.

Example:
    >>> is_remote("https://doi.org/10.17182/hepdata.90607.v3/r3"), is_remote("data/x.tar.gz")
    (True, False)
    >>> import dask
    >>> with dask.config.set({"pyhf-dask.download.doi-resolver": "http://127.0.0.1:8000"}):
    ...     resolve_url("doi:10.17182/hepdata.90607.v3/r3")
    'http://127.0.0.1:8000/10.17182/hepdata.90607.v3/r3'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyhf_dask.exceptions import InputLimit, InvalidArchive, InvalidOption

__all__ = ["cache_dir", "fetch", "is_remote", "max_size", "resolve_url"]

log = logging.getLogger(__name__)

_MB = 1_000_000
_DOI = re.compile(r"^(?:doi:)?(10\.\d{4,9}/\S+)$", re.IGNORECASE)
_DOI_HOSTS = ("doi.org", "dx.doi.org", "www.doi.org")
_ACCEPT = "application/x-tar, application/zip"
_DEFAULTS: dict[str, Any] = {
    "doi-resolver": "https://doi.org/",
    "max-size": 1000.0,
    "timeout": 60.0,
    "cache-dir": None,
}


def _setting(name: str) -> Any:
    import dask

    value = dask.config.get(f"pyhf-dask.download.{name}", None)
    return _DEFAULTS[name] if value is None else value


def max_size() -> float:
    """The largest download, in MB (``pyhf-dask.download.max-size``)."""
    return float(_setting("max-size"))


def is_remote(source: str | os.PathLike[str]) -> bool:
    """Whether an input names a download: an ``http(s)://`` URL or a DOI.

    Anything that exists on disk is local, whatever it looks like.

    Example:
        >>> is_remote("10.17182/hepdata.90607.v3/r3"), is_remote("RegionA")
        (True, False)
    """
    if not isinstance(source, str):
        return False
    if source.lower().startswith(("http://", "https://")):
        return True
    return bool(_DOI.match(source)) and not os.path.exists(source)


def _doi_of(source: str) -> str | None:
    match = _DOI.match(source)
    if match:
        return match.group(1)
    parts = urlsplit(source)
    if parts.hostname in _DOI_HOSTS and parts.path.strip("/"):
        return parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
    return None


def resolve_url(source: str) -> str:
    """The URL fetched for ``source``: a DOI through the configured resolver, else itself.

    Raises:
        InvalidOption: not an ``http``/``https`` URL (nor a DOI).
    """
    doi = _doi_of(source)
    if doi is not None:
        return f"{str(_setting('doi-resolver')).rstrip('/')}/{doi}"
    if urlsplit(source).scheme.lower() not in ("http", "https"):
        msg = f"{source}: only http:// and https:// URLs (or DOIs) are downloaded"
        raise InvalidOption(msg)
    return source


def cache_dir() -> Path | None:
    """The download cache (not created here), ``None`` when the package's cache is off."""
    configured = _setting("cache-dir")
    if configured:
        return Path(os.path.expanduser(str(configured)))
    from pyhf_dask.cache import cache_root

    root = cache_root()
    return None if root is None else root / "downloads"


def _file_name(url: str, head: bytes) -> str:
    """A file name for the download: the URL's last part, with ``.tar.gz`` when a gzip
    stream has none of the archive suffixes (HEPData's ``.../r3``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", urlsplit(url).path.rstrip("/").rpartition("/")[2])
    name = name.lstrip(".") or "download"
    if head[:2] == b"\x1f\x8b" and not name.endswith((".tar.gz", ".tgz", ".gz")):
        name += ".tar.gz"
    return name


def fetch(source: str) -> Path:
    """The local copy of a URL or DOI: from the cache, else downloaded into it.

    Args:
        source: an ``http(s)://`` URL, a DOI or a ``https://doi.org/`` URL.

    Returns:
        The path of the downloaded file (an archive, or a JSON file), to be read as a
        local input.

    Raises:
        InputLimit: the download is larger than ``pyhf-dask.download.max-size`` MB.
        InvalidArchive: the server refused it, could not be reached, or sent a zip file.
    """
    url = resolve_url(source)
    root = cache_dir()
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    if root is not None:
        cached = _cached(root / key)
        if cached is not None:
            log.info("%s: using the cached download %s", source, cached)
            return cached
    folder = root / key if root is not None else Path(tempfile.mkdtemp(prefix="pyhf-dask-dl-"))
    return _download(source, url, folder)


def _cached(folder: Path) -> Path | None:
    try:
        info = json.loads((folder / "source.json").read_text(encoding="utf-8"))
        path = folder / str(info["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() and path.stat().st_size == info.get("bytes") else None


def _too_large(source: str, what: str) -> InputLimit:
    shown = f"{max_size():g} MB"
    return InputLimit(
        f"{source}: {what} larger than {shown} (raise the limit with the configuration key "
        "pyhf-dask.download.max-size)"
    )


def _download(source: str, url: str, folder: Path) -> Path:
    import urllib.error
    import urllib.request

    cap = int(max_size() * _MB)
    request = urllib.request.Request(url, headers={"Accept": _ACCEPT})
    log.info("downloading %s (%s)", source, url)
    try:
        response = urllib.request.urlopen(request, timeout=float(_setting("timeout")))
    except urllib.error.HTTPError as exc:
        msg = f"{source}: the download failed (HTTP {exc.code} {exc.reason} from {exc.url})"
        raise InvalidArchive(msg) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = f"{source}: cannot be downloaded from {url} ({reason})"
        raise InvalidArchive(msg) from exc
    with response:
        final = response.geturl()
        if urlsplit(final).scheme.lower() not in ("http", "https"):
            msg = f"{source}: redirected to {final}, which is not an http(s) URL"
            raise InvalidArchive(msg)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise _too_large(source, f"the download ({int(length) / _MB:g} MB) is")
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-")
        digest = hashlib.sha256()
        total = 0
        head = b""
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = response.read(min(1 << 20, cap + 1 - total))
                    if not block:
                        break
                    head = head or block[:8]
                    total += len(block)
                    if total > cap:
                        raise _too_large(source, "the download is")
                    digest.update(block)
                    out.write(block)
            if head[:4] == b"PK\x03\x04":
                msg = (
                    f"{source}: a zip archive; only tar archives are read "
                    "(extract it and give the folder)"
                )
                raise InvalidArchive(msg)
            path = folder / _file_name(final, head)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        info = {
            "source": source,
            "url": url,
            "final_url": final,
            "file": path.name,
            "bytes": total,
            "sha256": digest.hexdigest(),
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    from pyhf_dask.cache import write_atomic

    write_atomic(folder / "source.json", json.dumps(info, indent=1).encode())
    log.info("downloaded %s: %d bytes, sha256 %s -> %s", final, total, digest.hexdigest(), path)
    return path
