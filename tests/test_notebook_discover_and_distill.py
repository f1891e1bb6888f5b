"""Execute notebooks/discover_and_distill.ipynb end to end at a tiny budget with the venv's own kernel."""

import pytest
from notebook_runner import png_outputs, run_notebook


@pytest.mark.slow
def test_discover_and_distill_notebook_runs(monkeypatch):
    monkeypatch.setenv("MIRRORLEARN_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    text, records = run_notebook("discover_and_distill.ipynb")
    assert "check_drift valid: True" in text and "closed form valid: True" in text
    assert "distilled drift, CartPole return:" in text
    assert len(png_outputs(records)) >= 2
