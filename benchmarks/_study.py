"""Incremental, resumable result files for the long benchmark studies (MuJoCo, MinAtar).

A study is many independent runs; each is written to the JSON file as soon as it finishes (atomic
write), and a re-run with the same settings skips the runs already there. So a study stopped by a
session limit keeps what it measured, and ``--resume`` finishes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mirrorlearn._archive import atomic_write


def open_study(path: str, settings: dict, resume: bool) -> dict:
    """The results so far (``{"settings": ..., "runs": {...}}``); empty unless resuming the same settings."""
    file = Path(path)
    if resume and file.exists():
        old = json.loads(file.read_text())
        if old.get("settings") == settings:
            return old
        raise SystemExit(f"{path} holds a study with other settings ({old.get('settings')}); "
                         "drop --resume or pass --out for a new file")
    return {"settings": settings, "runs": {}}


def save_study(path: str, results: dict) -> None:
    atomic_write(path, lambda h: h.write(json.dumps(results, indent=1)), mode="w")


def mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def finite_or_none(values) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, np.float64)]
