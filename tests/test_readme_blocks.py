"""Every code block of README.md runs as printed.

The blocks are read from README.md itself (no copy here), in the order they appear:

- a ``python`` block runs as a script in a fresh interpreter;
- a ``console`` block runs its ``$ `` lines (with ``\\`` continuations): ``pyhf-dask ...``
  through the command line (``python -m pyhf_dask``), ``python ...`` with this interpreter;
  the lines without ``$`` are what the commands print and are not run.

All blocks run one after the other in one working folder that looks like the repository
root (every top-level entry linked, ``docs/`` copied, so that a block writing
``docs/...`` or ``regionA.nc`` leaves the checkout alone): a later block may read what an
earlier one wrote, as a reader following the README would. Other fences (``bash`` set-up
commands, plain synopses) are not run.

A block that truly cannot run here (a network download, a real Globus endpoint) opts out
with an HTML comment on the line just before its fence, giving the reason::

    <!-- readme-test: skip (needs a Globus Compute endpoint) -->
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = ("python", "console")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b(?P<reason>.*?)-->")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
TIMEOUT = 600


class Block(NamedTuple):
    """One fenced code block of the README."""

    index: int
    lang: str
    line: int
    body: str
    skip: str | None


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` with their language, line and opt-out reason."""
    blocks = []
    for k, found in enumerate(FENCE.finditer(text)):
        before = text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.search(before)
        skip = (marker.group("reason").strip(" ()") or "opted out") if marker else None
        line = text.count("\n", 0, found.start()) + 1
        blocks.append(Block(k, found.group("lang"), line, found.group("body"), skip))
    return blocks


def console_commands(body: str) -> list[str]:
    """The ``$ `` commands of a console block, continuation lines joined.

    Example:
        >>> console_commands("$ pyhf-dask scan a \\\\\\n    --x 1\\nout\\n$ ls\\n")
        ['pyhf-dask scan a --x 1', 'ls']
    """
    commands: list[str] = []
    current: str | None = None
    for raw in body.splitlines():
        line = raw.strip()
        if current is not None:
            current += " " + line.rstrip("\\").strip()
        elif line.startswith("$ "):
            current = line[2:].rstrip("\\").strip()
        else:
            continue
        if not line.endswith("\\"):
            commands.append(re.sub(r"\s+#.*$", "", current) if " #" in current else current)
            current = None
    return commands


BLOCKS = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.lang in RUN]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like the repository root to the blocks."""
    folder = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name in (".git", ".venv") or entry.name.startswith("."):
            continue
        if entry.name == "docs":
            shutil.copytree(entry, folder / entry.name)
        else:
            (folder / entry.name).symlink_to(entry)
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONWARNINGS"] = "default"
    return env


def _run_block(block: Block, cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    where = f"README.md line {block.line}"
    if block.lang == "python":
        runs = [[sys.executable, "-c", block.body]]
    else:
        runs = []
        for command in console_commands(block.body):
            words = shlex.split(command)
            if words[0] == "pyhf-dask":
                runs.append([sys.executable, "-m", "pyhf_dask", *words[1:]])
            elif words[0] == "python":
                runs.append([sys.executable, *words[1:]])
            else:
                pytest.fail(
                    f"{where}: cannot run {command!r} here; run only pyhf-dask and python "
                    "commands, or opt the block out (see this module's docstring)"
                )
        assert runs, f"{where}: a console block without a '$ ' command"
    done = []
    for argv in runs:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        shown = argv[2:] if block.lang == "console" else ["<python block>"]
        assert proc.returncode == 0, (
            f"{where}: {shlex.join(shown)} exited {proc.returncode}\n{proc.stderr[-4000:]}"
        )
        done.append(proc)
    return done


_DONE: dict[int, list[subprocess.CompletedProcess[str]]] = {}


def _run_until(block: Block, cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run the blocks before ``block`` (once each, in order), then ``block``."""
    for earlier in BLOCKS:
        if earlier.index > block.index:
            break
        if earlier.index not in _DONE and earlier.skip is None:
            _DONE[earlier.index] = _run_block(earlier, cwd)
    return _DONE[block.index]


def test_the_readme_has_runnable_blocks() -> None:
    langs = [b.lang for b in BLOCKS]
    assert langs.count("python") >= 4 and langs.count("console") >= 2
    skipped = [b for b in BLOCKS if b.skip]
    assert len(skipped) <= len(BLOCKS) // 4, "opting out must stay rare"


def test_console_commands_are_read_with_their_continuations() -> None:
    text = "```console\n$ pyhf-dask scan x \\\n    --region A -o a.nc\nwrote a.nc\n```\n"
    (block,) = readme_blocks(text)
    assert block.lang == "console" and block.skip is None
    assert console_commands(block.body) == ["pyhf-dask scan x --region A -o a.nc"]
    marked = "<!-- readme-test: skip (no network) -->\n" + text
    assert readme_blocks(marked)[0].skip == "no network"


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_block_runs_as_printed(block: Block, workdir: Path) -> None:
    if block.skip:
        pytest.skip(f"README.md line {block.line}: {block.skip}")
    done = _run_until(block, workdir)
    for proc in done:
        assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
