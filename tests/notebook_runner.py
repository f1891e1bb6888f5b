"""Run a notebook end to end with this venv's own kernel (shared by the notebook tests)."""

import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, timeout: int = 300) -> tuple[str, list[dict]]:
    """Execute ``notebooks/<name>`` and return (all text output, all output records).

    Kernel "python3": jupyter_client launches a spec whose argv starts with "python" with
    sys.executable, i.e. this venv's interpreter; each notebook prints ``kernel: <executable>`` first
    so the test can check that.
    """
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS.parent)}})
    client.execute()  # the kernel inherits os.environ (budgets set by the calling test)
    records = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    texts = [o.get("text", "") for o in records]
    kernel_line = next(t for t in texts if t.startswith("kernel:"))
    assert Path(kernel_line.split(":", 1)[1].strip()).resolve() == Path(sys.executable).resolve(), kernel_line
    return "".join(texts), records


def png_outputs(records: list[dict]) -> list[dict]:
    return [o for o in records if "image/png" in o.get("data", {})]
