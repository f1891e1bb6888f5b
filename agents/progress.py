"""A progress bar fed from inside jitted training through a host callback."""

from __future__ import annotations

import time

import numpy as np


class ProgressBar:
    """tqdm bar over one seed's environment steps showing mean episode return, steps per second and the time left.

    ``__call__`` is what ``jax.debug.callback`` invokes with the update index and that update's
    mean episode return (a scalar, or per-seed values); it runs on the host while the compiled scan
    continues. The rate counts every seed's steps, as the results table's "steps/s (all seeds)" does,
    and both it and the time left start after compilation: tqdm's own estimate, fed by the first
    update only after XLA compiled the scan, said hours for a one-minute run.
    """

    def __init__(self, total_timesteps: int, steps_per_update: int, desc: str = "training", n_seeds: int = 1):
        from tqdm.auto import tqdm

        self.steps_per_update = steps_per_update
        import sys

        self.bar = tqdm(
            total=total_timesteps, desc=desc, unit="step", unit_scale=True, dynamic_ncols=True,
            mininterval=0.2 if sys.stderr.isatty() else 5.0,
            # tqdm's own rate and time left would include compilation; the postfix shows both without it
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps per seed [{elapsed}{postfix}]",
        )
        self.n_seeds = int(n_seeds)
        self.bar.set_postfix({"status": "compiling"}, refresh=True)
        self.last_return = float("nan")
        self.start = None

    def __call__(self, update_index, episode_return) -> None:
        now = time.perf_counter()
        if self.start is None:  # the first callback marks the end of compilation
            self.start = (now, int(update_index))
        done = (int(update_index) + 1) * self.steps_per_update
        ret = np.asarray(episode_return, dtype=np.float64)
        if np.isfinite(ret).any():
            self.last_return = float(np.nanmean(ret))
        t0, u0 = self.start
        postfix = {"ret": f"{self.last_return:.1f}"}
        if int(update_index) > u0:  # a rate needs two callbacks; the first would show 0 steps/s
            per_seed = (int(update_index) - u0) * self.steps_per_update / max(now - t0, 1e-9)
            postfix["steps/s (all seeds)"] = f"{per_seed * self.n_seeds:,.0f}"
            postfix["left"] = _duration(max(0, self.bar.total - done) / per_seed)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(min(done, self.bar.total) - self.bar.n)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def _duration(seconds: float) -> str:
    """``1:05`` or ``2:03:04``, like tqdm's own times."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
