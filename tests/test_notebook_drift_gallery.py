"""Execute notebooks/drift_gallery.ipynb end to end with the venv's own kernel."""

import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "drift_gallery.ipynb"


def test_drift_gallery_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3": jupyter_client launches a spec whose argv starts with "python" with sys.executable,
    # i.e. this venv's interpreter and its ipykernel; the first cell prints it so we can verify.
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent.parent)}})
    client.execute()
    outputs = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    kernel_line = next(o for o in outputs if o.startswith("kernel:"))
    assert Path(kernel_line.split(":", 1)[1].strip()).resolve() == Path(sys.executable).resolve(), kernel_line
    text = "".join(outputs)
    assert "VALID" in text and "INVALID" in text
