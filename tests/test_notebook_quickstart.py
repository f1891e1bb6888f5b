"""Execute notebooks/quickstart.ipynb end to end at a small budget with the venv's own kernel."""

from notebook_runner import png_outputs, run_notebook


def test_quickstart_notebook_runs(monkeypatch):
    monkeypatch.setenv("MIRRORLEARN_NOTEBOOK_STEPS", "8192")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    text, records = run_notebook("quickstart.ipynb")
    assert "Gymnasium episode return" in text and "reloaded DPO" in text
    assert png_outputs(records)
