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


def open_study(path: str, settings: dict, resume: bool, overwrite: bool = False) -> dict:
    """The results so far (``{"settings": ..., "runs": {...}}``); empty unless resuming the same settings.

    An existing study file is never replaced by accident (the committed studies are what docs/results.md
    reports): without ``--resume`` or ``--overwrite`` the script stops and says which flag to pass.
    """
    file = Path(path)
    if file.exists() and not overwrite:
        old = json.loads(file.read_text())
        if not resume:
            raise SystemExit(f"{path} already holds a study ({old.get('settings')}); pass --out NEW.json for a new "
                             "one, --resume to finish this one, or --overwrite to replace it")
        if old.get("settings") == settings:
            return old
        raise SystemExit(f"{path} holds a study with other settings ({old.get('settings')}); "
                         "drop --resume or pass --out for a new file")
    return {"settings": settings, "runs": {}}


def plot_path(out: str, default_out: str, docs_figure: str) -> str:
    """The docs figure for the study that docs/results.md shows; beside its JSON for any other."""
    return docs_figure if Path(out) == Path(default_out) else str(Path(out).with_suffix(".png"))


def add_study_args(p, default_out: str, docs_figure: str) -> None:
    p.add_argument("--resume", action="store_true", help="keep the finished runs of --out and do the rest")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (default: refuse)")
    p.add_argument("--out", default=default_out)
    p.add_argument("--plot", default=None, help=f"the learning-curve PNG (default: {docs_figure} for the default "
                   "--out, else --out with .png, so that a side study never overwrites the docs figure)")


def save_study(path: str, results: dict) -> None:
    atomic_write(path, lambda h: h.write(json.dumps(results, indent=1)), mode="w")


def mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def finite_or_none(values) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, np.float64)]


def _binned_mean(t: np.ndarray, y: np.ndarray, bins: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Curves of thousands of noisy per-update points (one env, short rollouts) as means over ``bins``
    equal spans of steps; short curves unchanged."""
    if len(t) <= 2 * bins:
        return t, y
    edges = np.linspace(t.min(), t.max(), bins + 1)
    index = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    filled = counts > 0
    return (np.bincount(index, t, bins)[filled] / counts[filled], np.bincount(index, y, bins)[filled] / counts[filled])


def plot_curves(results: dict, panels: list[str], title, path: str) -> None:
    """One panel per environment: the training-return curve of every run ``"<panel>/<label>"``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: run for k, run in results["runs"].items() if isinstance(run, dict) and "curve_return" in run}
    labels = sorted({k.split("/", 1)[1] for k in curves})  # one colour per label in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for key, run in curves.items():
            if key.startswith(panel + "/"):
                label = key.split("/", 1)[1]
                y = np.array([np.nan if v is None else v for v in run["curve_return"]], np.float64)
                keep = np.isfinite(y)  # updates in which no episode ended have no return
                t, y = _binned_mean(np.asarray(run["curve_t"], np.float64)[keep], y[keep])
                ax.plot(t, y, marker="." if len(t) <= 60 else None, label=label, color=f"C{labels.index(label)}")
        ax.set_title(title(panel))
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_agent(spec: str, **kwargs):
    """An estimator for a study's drift spec: ``ppo``, ``dpo`` or ``label=spec`` (any ``get_drift`` spec)."""
    from agents.estimators import DPO, PPO, MirrorAgent
    from drifts import get_drift

    if spec == "ppo":
        return PPO(**kwargs)
    if spec == "dpo":
        return DPO(**kwargs)
    return MirrorAgent(drift=get_drift(spec.split("=", 1)[-1]), **kwargs)
