"""Inputs by URL or DOI (issue 22, item 14), against a local HTTP server on 127.0.0.1.

The server (``http.server`` in a thread) serves archives made here, a DOI-style redirect
(the resolver's base URL is pointed at it through ``pyhf-dask.download.doi-resolver``),
a stream without ``Content-Length`` and a 404; it counts the requests it answers.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from click.testing import CliRunner

from pyhf_dask.cli import main
from pyhf_dask.download import fetch, is_remote, resolve_url
from pyhf_dask.exceptions import InputLimit, InvalidArchive
from pyhf_dask.grid import SignalGrid

BKG = {
    "channels": [
        {
            "name": "SR",
            "samples": [
                {
                    "name": "bkg",
                    "data": [50.0, 52.0],
                    "modifiers": [
                        {"name": "uncorr_bkguncrt", "type": "shapesys", "data": [3.0, 7.0]}
                    ],
                }
            ],
        }
    ],
    "observations": [{"name": "SR", "data": [51.0, 48.0]}],
    "measurements": [{"name": "Measurement", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}
DOI = "10.17182/hepdata.99999.v1/r1"
SBOTTOM = (
    Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
    / "pyhf-ins1748602-probability-models.tar.gz"
)


def _patch(yields: list[float]) -> list[dict]:
    sample = {
        "name": "signal",
        "data": yields,
        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
    }
    return [{"op": "add", "path": "/channels/0/samples/0", "value": sample}]


def _tar(members: dict[str, bytes], *, unsafe: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if unsafe is not None:
            info = tarfile.TarInfo(unsafe)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    return buffer.getvalue()


ARCHIVE = _tar(
    {
        "Region/BkgOnly.json": json.dumps(BKG).encode(),
        "Region/patch_sig_100_10.json": json.dumps(_patch([12.0, 11.0])).encode(),
        "Region/patch_sig_200_10.json": json.dumps(_patch([6.0, 5.0])).encode(),
    }
)
UNSAFE = _tar({"Region/BkgOnly.json": json.dumps(BKG).encode()}, unsafe="../evil.json")


class _Server:
    """What the handler serves, and the paths it was asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.accept: list[str] = []
        self.url = ""


def _handler(server: _Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            server.requests.append(self.path)
            server.accept.append(self.headers.get("Accept", ""))
            if self.path == f"/{DOI}":  # a DOI resolver's answer: the record's file
                self.send_response(302)
                self.send_header("Location", f"{server.url}/record/resource/123?view=true")
                self.end_headers()
            elif self.path in ("/files/likelihood.tar.gz", "/record/resource/123?view=true"):
                self._send(ARCHIVE)
            elif self.path == "/files/sbottom.tar.gz":
                self._send(SBOTTOM.read_bytes())
            elif self.path == "/files/unsafe.tar.gz":
                self._send(UNSAFE)
            elif self.path == "/files/stream.tar.gz":  # no Content-Length: read to the end
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(ARCHIVE)
                self.close_connection = True
            else:
                self.send_error(404, "Not Found")

        def _send(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    """A server on 127.0.0.1, the DOI resolver pointed at it, the cache in ``tmp_path``."""
    state = _Server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    settings = {
        "pyhf-dask.download.doi-resolver": state.url,
        "pyhf-dask.download.cache-dir": str(tmp_path / "downloads"),
    }
    try:
        with dask.config.set(settings):
            yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _scan(*args: str) -> Any:
    return CliRunner().invoke(
        main, ["scan", *args, "--kernel", "pyhf", "--executor", "synchronous", "--json"]
    )


def _local(tmp_path: Path) -> SignalGrid:
    path = tmp_path / "local.tar.gz"
    path.write_bytes(ARCHIVE)
    return SignalGrid.from_path(path, labels=["m1", "m2"])


def test_what_is_remote(tmp_path):
    assert is_remote("https://www.hepdata.net/record/resource/1") and is_remote(f"doi:{DOI}")
    assert is_remote(DOI) and not is_remote(str(tmp_path)) and not is_remote(Path("x"))
    with dask.config.set({"pyhf-dask.download.doi-resolver": "http://127.0.0.1:1/"}):
        assert resolve_url(f"https://doi.org/{DOI}") == f"http://127.0.0.1:1/{DOI}"
        assert resolve_url(DOI) == f"http://127.0.0.1:1/{DOI}"
        assert resolve_url("http://host/a.tar.gz") == "http://host/a.tar.gz"


def test_url_of_an_archive_reads_as_the_local_archive(server, tmp_path):
    grid = SignalGrid.from_path(f"{server.url}/files/likelihood.tar.gz", labels=["m1", "m2"])
    local = _local(tmp_path)
    assert grid.names == local.names == ("sig_100_10", "sig_200_10")
    assert grid.patches == local.patches
    assert grid.workspace == local.workspace
    assert grid.source == f"{server.url}/files/likelihood.tar.gz:Region/BkgOnly.json"
    assert server.requests == ["/files/likelihood.tar.gz"]
    assert server.accept == ["application/x-tar, application/zip"]


def test_published_archive_by_url_equals_the_local_file(server):
    labels = ["msb", "mn2", "mn1"]
    remote = SignalGrid.from_path(
        f"{server.url}/files/sbottom.tar.gz", region="RegionA", labels=labels
    )
    local = SignalGrid.from_path(SBOTTOM, region="RegionA", labels=labels)
    assert len(remote) == len(local) == 217
    assert remote.names == local.names and remote.patches == local.patches
    assert remote.workspace_digest() == local.workspace_digest()


def test_doi_redirect_through_the_configured_resolver_in_the_cli(server, tmp_path):
    result = _scan(f"https://doi.org/{DOI}", "--labels", "m1,m2")
    assert result.exit_code == 0, result.output
    assert server.requests == [f"/{DOI}", "/record/resource/123?view=true"]
    names = [p["name"] for p in json.loads(result.stdout)["points"]]
    assert names == ["sig_100_10", "sig_200_10"]
    cached = list((tmp_path / "downloads").glob("*/*.tar.gz"))
    assert len(cached) == 1 and cached[0].read_bytes() == ARCHIVE
    info = json.loads((cached[0].parent / "source.json").read_text())
    assert info["final_url"].endswith("/record/resource/123?view=true")


def test_second_run_reads_the_cache_without_a_request(server):
    url = f"{server.url}/files/likelihood.tar.gz"
    first = _scan(url)
    assert first.exit_code == 0, first.output
    assert len(server.requests) == 1
    second = _scan(url)
    assert second.exit_code == 0, second.output
    assert len(server.requests) == 1  # no request at all
    assert (
        json.loads(first.stdout)["points"][0]["CLs_obs"]
        == (json.loads(second.stdout)["points"][0]["CLs_obs"])
    )


@pytest.mark.parametrize("path", ["/files/likelihood.tar.gz", "/files/stream.tar.gz"])
def test_size_limit_is_one_line_with_status_2(server, tmp_path, path):
    with dask.config.set({"pyhf-dask.download.max-size": len(ARCHIVE) / 2 / 1e6}):
        result = _scan(f"{server.url}{path}")
        with pytest.raises(InputLimit, match=r"pyhf-dask\.download\.max-size"):
            fetch(f"{server.url}{path}")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2
    assert len(lines) == 1 and lines[0].startswith("Error [limit]: "), result.output
    assert "larger than" in lines[0]
    assert not list((tmp_path / "downloads").glob("*/*.tar.gz"))  # nothing kept


def test_unsafe_member_is_refused_as_in_a_local_archive(server):
    result = _scan(f"{server.url}/files/unsafe.tar.gz")
    assert result.exit_code == 2
    assert "unsafe archive member '../evil.json'" in result.output


def test_http_error_is_one_line(server):
    result = _scan(f"{server.url}/files/missing.tar.gz")
    assert result.exit_code == 2
    assert "HTTP 404" in result.output
    with pytest.raises(InvalidArchive, match="HTTP 404"):
        fetch(f"{server.url}/files/missing.tar.gz")


def test_unreachable_host_is_one_line(tmp_path):
    with dask.config.set(
        {"pyhf-dask.download.cache-dir": str(tmp_path), "pyhf-dask.download.timeout": 5}
    ):
        result = _scan("http://127.0.0.1:9/nothing.tar.gz")  # the discard port: refused
    assert result.exit_code == 2
    assert "cannot be downloaded" in result.output
