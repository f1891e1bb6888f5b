"""Execute notebooks/drift_gallery.ipynb end to end with the venv's own kernel."""

from notebook_runner import run_notebook


def test_drift_gallery_notebook_runs():
    text, _ = run_notebook("drift_gallery.ipynb", timeout=120)
    assert "VALID" in text and "INVALID" in text
