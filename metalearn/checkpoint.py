"""Atomic, pickle-free checkpoints of a meta-training run (JSON + npz via ``mirrorlearn._archive``).

One file, ``checkpoint.npz`` in the run folder, rewritten atomically (temp file + ``os.replace``)
after every generation. It holds everything the next generation depends on: the ES state's arrays,
the RNG key, the history, the normalisation baselines and the configuration fingerprint, so a run
killed at any moment (even by SIGKILL) resumes exactly where its last complete generation ended.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mirrorlearn._archive import read_archive, write_archive, write_json_atomic

CHECKPOINT_KIND = "mirrorlearn.metatrain"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.npz"


class ConfigMismatchError(ValueError):
    """The checkpoint folder holds a run of a different configuration (it is left untouched)."""


def checkpoint_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / CHECKPOINT_FILE


def save_checkpoint(folder: str | os.PathLike, *, fingerprint: dict, generation: int, es_arrays: dict,
                    key: np.ndarray, history: list, baselines: dict) -> Path:
    """Write the run's state after ``generation`` complete generations (atomic)."""
    meta = {"kind": CHECKPOINT_KIND, "format_version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
            "generation": int(generation), "history": history, "baselines": baselines}
    arrays = {f"es/{name}": value for name, value in es_arrays.items()}
    arrays["rng/key"] = np.asarray(key)
    path = write_archive(checkpoint_path(folder), meta, arrays)
    write_json_atomic(Path(folder) / "history.json",
                      {"generation": int(generation), "baselines": baselines, "history": history}, sort_keys=True)
    return path


def load_checkpoint(folder: str | os.PathLike) -> dict | None:
    """``{"meta", "es_arrays", "key"}`` of the run in ``folder``, or ``None`` when there is none yet."""
    path = checkpoint_path(folder)
    if not path.exists():
        return None
    meta, arrays = read_archive(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)
    es_arrays = {k[len("es/"):]: v for k, v in arrays.items() if k.startswith("es/")}
    if "rng/key" not in arrays:
        raise ValueError(f"{path} has no RNG key; it is not a complete meta-training checkpoint")
    problem = _meta_problem(meta) or _array_problem(es_arrays, arrays["rng/key"])
    if problem:
        # resuming would train from (and then save) a broken state, over the run's good drift file
        raise ValueError(f"{path} is corrupted ({problem}); it was not used. Move it away to start the run "
                         "afresh in this folder, or pass another checkpoint_dir / --out")
    return {"meta": meta, "es_arrays": es_arrays, "key": arrays["rng/key"], "path": path}


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _meta_problem(meta: dict) -> str | None:
    generation = meta.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        return f"generation must be a whole number >= 0, got {generation!r}"
    if not isinstance(meta.get("fingerprint"), dict):
        return "the configuration fingerprint is missing"
    history = meta.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        return "the history is not a list of per-generation records"
    if len(history) != generation:
        return f"{len(history)} history records for {generation} generations"
    for i, record in enumerate(history):  # what the outputs (log, meta_curve.png, the drift's metadata) read
        if not isinstance(record.get("generation"), int) or isinstance(record.get("generation"), bool):
            return f"history record {i} has no whole-number 'generation'"
        if not _finite_number(record.get("sigma")):
            return f"history record {i} has no finite 'sigma'"
        for key in ("fitness_mean", "fitness_max", "fitness_min", "mean_score"):
            if record.get(key) is not None and not _finite_number(record[key]):
                return f"history record {i}: {key!r} is {record[key]!r}, not a finite number or null"
    baselines = meta.get("baselines")
    if not isinstance(baselines, dict) or not baselines:
        return "the normalisation baselines are missing"
    for env_id, b in baselines.items():
        if not (isinstance(b, dict) and _finite_number(b.get("random")) and _finite_number(b.get("reference"))):
            return f"the baseline of {env_id!r} lacks finite 'random' and 'reference' returns"
    return None


def _array_problem(es_arrays: dict, key: np.ndarray) -> str | None:
    # evosax keeps +inf as the best fitness before the first generation, so only the search
    # distribution itself (its mean and standard deviation) must be finite
    for name, value in es_arrays.items():
        field = name.rsplit(".", 1)[-1]
        if field in ("mean", "std") and not np.all(np.isfinite(value)):
            return f"ES state {name} contains NaN or inf"
        if field == "std" and np.any(np.asarray(value) < 0):
            return f"ES state {name} is negative"
    import jax

    ref = np.asarray(jax.random.PRNGKey(0))  # (2,) uint32 for threefry, (4,) for rbg
    if key.shape != ref.shape or key.dtype != ref.dtype:
        return f"the RNG key has shape {key.shape} / {key.dtype}, expected {ref.shape} / {ref.dtype}"
    return None


# Settings recorded only by newer versions: a checkpoint written before one was recorded resumes whatever
# its value now (its run did not know it), as before.
RECORDED_LATER = ("devices",)


def check_fingerprint(stored: dict, current: dict, path: str | os.PathLike) -> None:
    """Refuse to resume a run whose configuration differs, naming each differing setting."""
    current = {k: v for k, v in current.items() if k in stored or k not in RECORDED_LATER}
    stored_n, current_n = _normalise(stored), _normalise(current)
    if stored_n == current_n:
        return
    diffs = [f"  {k}: checkpoint has {a!r}, this run has {b!r}" for k, a, b in _differences(stored_n, current_n)]
    if any(k == "devices" for k, _, _ in _differences(stored_n, current_n)):
        diffs.append("  (the device count changes float round-off and so the run: resume it with the same "
                     "devices, e.g. the same command line, or pass devices=jax.devices()[:N])")
    raise ConfigMismatchError(
        f"{path} holds a meta-training run with a different configuration:\n" + "\n".join(diffs)
        + "\nIt was not modified. Use another checkpoint_dir (or --out) for this configuration, or restore "
        "the original settings to resume that run."
    )


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


_MISSING = _Missing()


def _differences(stored: Any, current: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted.key, stored, current)`` for each leaf that differs: a changed learning rate reads
    ``inner_configs[0].lr``, not two full nested configs."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(stored) | set(current)):
            path = f"{prefix}.{k}" if prefix else str(k)
            out += _differences(stored.get(k, _MISSING), current.get(k, _MISSING), path)
        return out
    if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
        return [d for i, (a, b) in enumerate(zip(stored, current, strict=True))
                for d in _differences(a, b, f"{prefix}[{i}]")]
    return [] if stored == current else [(prefix or "(configuration)", stored, current)]


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


