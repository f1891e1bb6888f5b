"""Execute notebooks/discover_and_distill.ipynb end to end at a tiny budget with the venv's own kernel."""

import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "discover_and_distill.ipynb"


@pytest.mark.slow
def test_discover_and_distill_notebook_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MIRRORLEARN_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent.parent)}})
    client.execute()
    outputs = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    kernel_line = next(o for o in outputs if o.startswith("kernel:"))
    assert Path(kernel_line.split(":", 1)[1].strip()).resolve() == Path(sys.executable).resolve(), kernel_line
    text = "".join(outputs)
    assert "check_drift valid: True" in text and "closed form valid: True" in text
    assert "distilled drift, CartPole return:" in text
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2
