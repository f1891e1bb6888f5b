"""Execute notebooks/quickstart.ipynb end to end at a small budget with the venv's own kernel."""

import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MIRRORLEARN_NOTEBOOK_STEPS", "8192")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent.parent)}})
    client.execute()  # the kernel inherits os.environ, including the small budget set above
    outputs = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    kernel_line = next(o for o in outputs if o.startswith("kernel:"))
    assert Path(kernel_line.split(":", 1)[1].strip()).resolve() == Path(sys.executable).resolve(), kernel_line
    text = "".join(outputs)
    assert "Gymnasium episode return" in text and "reloaded DPO" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
