"""examples/scan_notebook.ipynb runs from top to bottom in its default mode, every figure in
it is an image, and the committed notebook carries its outputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("distributed")
pytest.importorskip("globus_compute_endpoint")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "scan_notebook.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def _outputs(cell: Any) -> list[Any]:
    return list(cell.get("outputs", []))


def test_the_committed_notebook_shows_its_outputs_and_figures() -> None:
    """Committed executed (default mode), so that GitHub shows every figure; small."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1  # papermill-style parameters cell
    counts = [cell["execution_count"] for cell in code]
    assert counts == list(range(1, len(code) + 1))  # run once, top to bottom
    outputs = [o for cell in code for o in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "quick=False" in text  # the default mode: the whole mn1 = 60 plane
    assert "fit runs: 6; fit tasks in the graphs: 6" in text
    pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 4  # exclusion plot, CLs map, Brazil band, upper-limit map
    assert all(base64.b64decode(p)[:8] == PNG for p in pngs)
    assert NOTEBOOK.stat().st_size < 1_000_000


@pytest.mark.slow
def test_notebook_executes_in_its_default_mode_and_renders_every_figure_inline(
    sbottom_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default mode (390 points of three regions, a 9-point POI scan), as committed;
    its cells assert that every fit ran once, counted over every compute by a scheduler
    plugin."""
    monkeypatch.delenv("PYHF_DASK_NOTEBOOK_QUICK", raising=False)
    monkeypatch.setenv("PYHF_DASK_DATA", str(sbottom_archive.parent))
    monkeypatch.setenv("PYHF_DASK_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error

    images = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs = _outputs(cell)
        assert not [o for o in outputs if o.output_type == "error"]
        for output in outputs:
            data = output.get("data", {})
            text = data.get("text/plain", "")
            if "Figure" in text and text.lstrip().startswith("<"):
                # a figure that is shown must be an image, not "<Figure size 640x520 ...>" text
                assert "image/png" in data, cell.source
            if "image/png" in data:
                assert base64.b64decode(data["image/png"])[:8] == PNG
                images += 1
        if ".plot_" in cell.source and "if not QUICK" not in cell.source:
            assert any("image/png" in o.get("data", {}) for o in outputs), cell.source
    # exclusion plot, CLs map, Brazil band, upper-limit map
    assert images >= 4
    assert (tmp_path / "sbottom_combined.zarr").is_dir()
    assert (tmp_path / "exclusion_combined.pdf").read_bytes()[:5] == b"%PDF-"
