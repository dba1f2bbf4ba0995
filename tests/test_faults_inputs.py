"""Hostile inputs are refused with one line, exit status 2 and bounded memory.

Each case runs the real CLI as a subprocess and samples its peak memory (``VmHWM``): a
gzip bomb, an archive whose members add up past the limit, a symlink to ``/dev/zero``, a
FIFO, a 200 MB workspace, JSON nested 100,000 levels deep, a channel with more bins than
the limit (and the option that raises it), and observations whose length is not the
channel's. Nothing of pyhf's logging reaches the terminal as a traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import time

import pytest
from test_faults_support import command, environment, one_line, seed_inputs

from pyhf_dask.grid import simple_workspace

pytestmark = pytest.mark.filterwarnings("ignore")

#: Peak resident memory a refused input may cost (the CLI with pyhf imported is ~170 MB).
MEMORY_CAP_MB = 350


def _peak_mb(pid: int) -> float | None:
    """The high-water mark of ``pid``'s resident memory since its ``exec`` (``VmHWM``)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _run_measured(*args: str, tmp) -> tuple[int, str, float, float]:
    """Exit status, stderr, peak RSS in MB and seconds of one CLI run.

    The peak is ``VmHWM`` of the CLI's own address space, sampled until it exits: the
    ``ru_maxrss`` of ``wait4`` would also count the test process's memory, which the
    child holds between ``fork`` and ``exec``.
    """
    began = time.monotonic()
    err_path = tmp / f"stderr-{time.monotonic_ns()}.txt"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(
            command(*args),
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            text=True,
            env=environment(tmp),
            cwd=tmp,
        )
        # Popen returns after the exec, so every sample is of the CLI's own image
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _peak_mb(proc.pid) or 0.0)
            time.sleep(0.02)
    return proc.returncode, err_path.read_text(), peak, time.monotonic() - began


def _refused(tmp, *args, category="limit") -> str:
    code, err, rss, seconds = _run_measured(*args, "--kernel", "pyhf", tmp=tmp)
    assert code == 2, err
    assert 0 < rss < MEMORY_CAP_MB, f"peak memory {rss:.0f} MB"
    assert seconds < 60
    return one_line(err, f"Error [{category}]: ")


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 512)


def _bomb(path, members: dict[str, int], workspace: dict) -> None:
    """A .tar.gz with a workspace and members of ``size`` spaces each, written as
    concatenated gzip members, so that gigabytes take a few MB and milliseconds."""
    block = gzip.compress(b" " * (1 << 24), compresslevel=9)
    ws = json.dumps(workspace).encode()
    info = tarfile.TarInfo("R/BkgOnly.json")
    info.size = len(ws)
    with open(path, "wb") as out:
        out.write(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + ws + _pad(len(ws))))
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            out.write(gzip.compress(info.tobuf(tarfile.GNU_FORMAT)))
            for _ in range(size >> 24):
                out.write(block)
            out.write(gzip.compress(b" " * (size % (1 << 24)) + _pad(size)))
        out.write(gzip.compress(b"\0" * 1024))


@pytest.fixture
def workspace():
    return simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])


def test_gzip_bomb_member_is_refused_at_its_header(tmp_path, workspace):
    archive = tmp_path / "bomb.tar.gz"
    _bomb(archive, {"R/patch.big_1_1.json": 3 * 10**9}, workspace)
    assert archive.stat().st_size < 5 * 10**6
    line = _refused(tmp_path, str(archive))
    assert f"{archive}:R/patch.big_1_1.json: larger than 100 MB" in line
    assert "--max-file-size" in line


def test_archive_members_together_are_capped(tmp_path, workspace):
    archive = tmp_path / "many.tar.gz"
    _bomb(archive, {"R/a.bin": 6 * 10**8, "R/b.bin": 6 * 10**8}, workspace)
    line = _refused(tmp_path, str(archive))
    assert f"{archive}: its members hold more than 1000 MB" in line


def test_symlink_to_dev_zero_and_fifo_are_not_read(tmp_path):
    inputs = seed_inputs(tmp_path, 2)
    zero = tmp_path / "patch.sig_zero.json"
    zero.symlink_to("/dev/zero")
    line = _refused(tmp_path, str(tmp_path), category="json")
    assert f"{zero}: not a regular file (a device or socket)" in line
    zero.unlink()
    fifo = tmp_path / "patch.sig_fifo.json"
    os.mkfifo(fifo)
    line = _refused(tmp_path, str(tmp_path), category="json")
    assert f"{fifo}: not a regular file (a FIFO)" in line
    line = _refused(tmp_path, inputs[0], str(fifo), category="json")  # named directly
    assert "not a regular file (a FIFO)" in line


def test_large_workspace_is_refused_before_it_is_read(tmp_path):
    inputs = seed_inputs(tmp_path, 1)
    with open(inputs[0], "r+b") as file:
        file.truncate(200 * 10**6)  # 200 MB (sparse: the test writes nothing)
    line = _refused(tmp_path, *inputs)
    assert "BkgOnly.json: larger than 100 MB (raise the limit with --max-file-size MB)" in line


def test_deeply_nested_json_is_refused_without_recursion_error(tmp_path):
    inputs = seed_inputs(tmp_path, 1)
    with open(inputs[1], "w") as file:
        file.write("[" * 100_000 + "]" * 100_000)
    line = _refused(tmp_path, *inputs)
    assert "patch.sig_0.json: JSON nested deeper than 64 levels" in line


def _wide(n_bins: int) -> dict:
    """One channel of ``n_bins`` bins, a signal with a normfactor and a fixed background."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [0.5] * n_bins,
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "bkg", "data": [10.0] * n_bins, "modifiers": []},
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [10.0] * n_bins}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def test_bins_cap_refuses_and_the_option_raises_it(tmp_path):
    n = 20_001
    ws = tmp_path / "BkgOnly.json"
    ws.write_text(json.dumps(_wide(n)))
    patch = tmp_path / "patch.sig_1_1.json"
    op = {"op": "replace", "path": "/channels/0/samples/0/data", "value": [0.2] * n}
    patch.write_text(json.dumps([op]))
    line = _refused(tmp_path, str(ws), str(patch))
    assert f"channel 'SR' has {n} bins, more than 10000 (raise the limit with --max-bins N)" in line
    code, err, _, _ = _run_measured(
        str(ws), str(patch), "--max-bins", "30000", "--kernel", "pyhf", "--executor",
        "synchronous", tmp=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "1 converged" in err


def test_observations_of_other_length_refused_before_any_fit(tmp_path, workspace):
    workspace["observations"][0]["data"] = [51.0, 48.0, 47.0]
    inputs = seed_inputs(tmp_path, 3)
    with open(inputs[0], "w") as file:
        json.dump(workspace, file)
    line = _refused(tmp_path, *inputs, "--workers", "2", category="workspace")
    assert "observations of channel 'singlechannel' hold 3 values but the channel has 2" in line


def test_no_pyhf_traceback_reaches_the_terminal_from_workers(tmp_path):
    """A point whose model lacks the POI fails in a worker process, quietly."""
    inputs = seed_inputs(tmp_path, 3)
    no_poi = [{"op": "remove", "path": "/channels/0/samples/0/modifiers/0"}]
    with open(inputs[2], "w") as file:
        json.dump(no_poi, file)
    code, err, _, _ = _run_measured(*inputs, "--kernel", "pyhf", "--workers", "2", tmp=tmp_path)
    assert code == 0, err
    assert "Traceback" not in err
    assert "2 converged, 1 failed" in err


def test_gzip_member_streams_with_a_cap(tmp_path, workspace):
    """A member under the header check still cannot exceed the cap while streamed."""
    data = json.dumps([[1.0] * 10] * 3000).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in (
            ("R/BkgOnly.json", json.dumps(workspace).encode()),
            ("R/patch.a_1.json", data),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive = tmp_path / "small.tar.gz"
    archive.write_bytes(buffer.getvalue())
    line = _refused(tmp_path, str(archive), "--max-file-size", "0.05")
    assert "R/patch.a_1.json: larger than 0.05 MB" in line
