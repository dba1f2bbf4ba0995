"""examples/scan_notebook.ipynb runs from top to bottom, and every figure in it is an image."""

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


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1  # papermill-style parameters cell


@pytest.mark.slow
def test_notebook_executes_and_renders_every_figure_inline(
    sbottom_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYHF_DASK_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("PYHF_DASK_DATA", str(sbottom_archive.parent))
    monkeypatch.setenv("PYHF_DASK_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
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
    # exclusion plot, CLs map, Brazil band
    assert images >= 3
    assert (tmp_path / "sbottom_combined.zarr").is_dir()
    assert (tmp_path / "exclusion_combined.pdf").read_bytes()[:5] == b"%PDF-"
