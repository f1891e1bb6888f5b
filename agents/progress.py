"""A progress bar fed from inside jitted training through a host callback."""

from __future__ import annotations

import time

import numpy as np


class ProgressBar:
    """tqdm bar over environment steps showing mean episode return and steps per second.

    ``__call__`` is what ``jax.debug.callback`` invokes with the update index and that update's
    mean episode return (a scalar, or per-seed values); it runs on the host while the compiled scan
    continues.
    """

    def __init__(self, total_timesteps: int, steps_per_update: int, desc: str = "training"):
        from tqdm.auto import tqdm

        self.steps_per_update = steps_per_update
        import sys

        self.bar = tqdm(
            total=total_timesteps, desc=desc, unit="step", unit_scale=True, dynamic_ncols=True,
            mininterval=0.2 if sys.stderr.isatty() else 5.0,
            # tqdm's own rate would include compilation; the postfix shows the training rate instead
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        )
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
        if int(update_index) > u0:  # a rate needs two callbacks; the first would show sps=0
            postfix["sps"] = f"{(int(update_index) - u0) * self.steps_per_update / max(now - t0, 1e-9):,.0f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(min(done, self.bar.total) - self.bar.n)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()
