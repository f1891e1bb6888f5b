"""Randomised inner settings: a pool of PPO configurations the ES meets one at a time.

A drift meta-trained under one inner configuration (one budget, one learning rate) can specialise to
it: the CartPole LPO shipped first was twice PPO's return at its 16k-step budget and worse than PPO
at 4x that budget. Here the inner runs' settings are drawn from declared ranges instead, so a drift
can only score well by working across them.

``sample_tasks(base, ranges, n_tasks, seed)`` draws ``n_tasks`` configurations once, at the start of
a run, by stratified (Latin hypercube) sampling: each field's range is cut into ``n_tasks`` equal
strata (in log space for scale-like fields) and every stratum is used exactly once, so a pool of 8
covers a 1x-8x budget range from end to end. Each generation then picks one task per environment
and every member trains on it. A pool rather than a fresh draw per generation keeps the number of
compiled programs (one per distinct configuration) and of PPO baselines fixed.

``ranges`` maps a :class:`agents.config.PPOConfig` field, ``"budget"`` (a multiple of the inner
estimator's own ``total_timesteps``: ``(1, 8)`` is 1x-8x) or ``"width"`` (every hidden layer's width,
the depth kept) to ``(low, high)``, a range, or a list of choices.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.config import PPOConfig

# Drawn log-uniformly: their effect is multiplicative (twice the budget, a tenth of the step size).
LOG_FIELDS = ("budget", "total_timesteps", "learning_rate")
INT_FIELDS = ("total_timesteps", "update_epochs", "num_minibatches", "num_envs", "num_steps", "width")
FLOAT_FIELDS = ("learning_rate", "ent_coef", "vf_coef", "gamma", "gae_lambda", "max_grad_norm")
# "budget" multiplies the inner estimator's own total_timesteps (1x-8x), "width" sets every hidden layer.
VARIABLE_FIELDS = ("budget",) + INT_FIELDS + FLOAT_FIELDS
MAX_TASKS = 64


def check_ranges(ranges: Any) -> dict[str, tuple | list]:
    """``ranges`` as ``{field: (low, high) | [choices]}``, or a ValueError naming the bad entry and the fix."""
    if ranges is None:
        return {}
    if not isinstance(ranges, Mapping):
        raise ValueError(f"inner_ranges must be a mapping of field -> (low, high) or [choices], got {ranges!r}; "
                         "e.g. {'total_timesteps': (16384, 131072), 'update_epochs': [2, 4, 8]}")
    out: dict[str, tuple | list] = {}
    for field, spec in ranges.items():
        if field not in VARIABLE_FIELDS:
            import difflib

            close = difflib.get_close_matches(str(field), VARIABLE_FIELDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"inner_ranges: {field!r} cannot be varied.{hint} Fields that can: "
                             f"{', '.join(VARIABLE_FIELDS)}")
        is_int = field in INT_FIELDS
        if isinstance(spec, tuple):
            if len(spec) != 2 or not all(_number(v, is_int) for v in spec) or not spec[0] <= spec[1]:
                raise ValueError(f"inner_ranges[{field!r}] = {spec!r}: a range is (low, high) with low <= high"
                                 f"{' (whole numbers)' if is_int else ''}; for a list of choices pass a list")
            values = list(spec)
        elif isinstance(spec, list):
            if not spec or not all(_number(v, is_int) for v in spec):
                raise ValueError(f"inner_ranges[{field!r}] = {spec!r}: choices are a non-empty list of "
                                 f"{'whole numbers' if is_int else 'finite numbers'}")
            values = spec
        else:
            raise ValueError(f"inner_ranges[{field!r}] = {spec!r}: give a range (low, high) or a list of choices")
        if field in LOG_FIELDS or is_int:
            if min(values) <= 0:
                raise ValueError(f"inner_ranges[{field!r}] = {spec!r}: values must be > 0")
        elif field in ("gamma", "gae_lambda") and not all(0 <= v <= 1 for v in values):
            raise ValueError(f"inner_ranges[{field!r}] = {spec!r}: values must lie in [0, 1]")
        elif min(values) < 0:
            raise ValueError(f"inner_ranges[{field!r}] = {spec!r}: values must be >= 0")
        out[str(field)] = tuple(spec) if isinstance(spec, tuple) else list(spec)
    return out


def _number(v: Any, integer: bool) -> bool:
    if isinstance(v, bool):
        return False
    if integer:
        return isinstance(v, numbers.Integral)
    return isinstance(v, numbers.Real) and math.isfinite(v)


def _draw(field: str, spec: tuple | list, u: float) -> Any:
    """The value at quantile ``u`` in [0, 1) of ``spec``: a point of a range, or one of the choices."""
    if isinstance(spec, list):
        return spec[min(int(u * len(spec)), len(spec) - 1)]
    low, high = spec
    if field in LOG_FIELDS:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if field in INT_FIELDS:
        return int(min(high, max(low, round(value))))
    return float(value)


def apply_setting(base: PPOConfig, setting: Mapping[str, Any]) -> PPOConfig:
    """``base`` with ``setting`` applied, made consistent: the budget rounded to whole batches, the
    minibatch count moved to the nearest divisor of the batch. Raises ValueError if still invalid."""
    changes = {k: v for k, v in setting.items() if k not in ("width", "budget")}
    if "budget" in setting:
        changes["total_timesteps"] = int(round(changes.get("total_timesteps", base.total_timesteps) * setting["budget"]))
    if "width" in setting:
        changes["hidden_sizes"] = (int(setting["width"]),) * len(base.hidden_sizes)
    config = base.replace(**changes)
    batch = config.batch_size
    if config.batch_size % config.num_minibatches:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        config = config.replace(num_minibatches=min(divisors, key=lambda d: (abs(d - config.num_minibatches), d)))
    config = config.replace(total_timesteps=max(1, round(config.total_timesteps / batch)) * batch)
    return config.validate()


def sample_settings(ranges: Mapping[str, tuple | list], n_tasks: int, seed: int) -> list[dict]:
    """``n_tasks`` settings by Latin hypercube sampling over ``ranges`` (deterministic in ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x7A5C]))
    settings: list[dict] = [{} for _ in range(n_tasks)]
    for field in sorted(ranges):  # sorted: the draw does not depend on the mapping's order
        strata = rng.permutation(n_tasks)
        offsets = rng.random(n_tasks)
        for i in range(n_tasks):
            settings[i][field] = _draw(field, ranges[field], (strata[i] + offsets[i]) / n_tasks)
    return settings


def sample_tasks(base: PPOConfig, ranges: Mapping[str, tuple | list], n_tasks: int, seed: int) -> list[PPOConfig]:
    """The pool of inner configurations: ``base`` under each of :func:`sample_settings`' draws.

    Without ranges the pool is ``[base]``. The budget is drawn first and rounded to whole batches of
    the drawn ``num_envs x num_steps``; a ``num_minibatches`` that does not divide the batch becomes
    the nearest divisor.
    """
    if not ranges:
        return [base]
    if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or not 1 <= n_tasks <= MAX_TASKS:
        raise ValueError(f"n_tasks must be an integer in [1, {MAX_TASKS}], got {n_tasks!r}")
    tasks = []
    for setting in sample_settings(ranges, n_tasks, seed):
        try:
            tasks.append(apply_setting(base, setting))
        except ValueError as err:
            raise ValueError(f"inner_ranges drew {setting}, which gives no valid PPO configuration: {err}") from None
    return tasks


def describe(config: PPOConfig, ranges: Sequence[str]) -> str:
    """The varied fields of one task, e.g. ``total_timesteps=32768 learning_rate=0.00041``."""
    parts = []
    if "budget" in ranges and "total_timesteps" not in ranges:
        parts.append(f"total_timesteps={config.total_timesteps}")
    for field in sorted(ranges):
        if field == "budget":
            continue  # shown as total_timesteps
        value = config.hidden_sizes[0] if field == "width" else getattr(config, field)
        parts.append(f"{field}={value:.3g}" if isinstance(value, float) else f"{field}={value}")
    return " ".join(parts)


def parse_vary(item: str) -> tuple[str, tuple | list]:
    """A command line's ``--vary FIELD=LOW:HIGH`` (a range) or ``FIELD=A,B,C`` (choices)."""
    import ast

    field, sep, text = item.partition("=")
    field, text = field.strip(), text.strip()
    if not sep or not field or not text:
        raise ValueError(f"{item!r}: expected FIELD=LOW:HIGH or FIELD=A,B,C, e.g. total_timesteps=16384:131072")

    def literal(s: str):
        try:
            return ast.literal_eval(s.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"{item!r}: {s.strip()!r} is not a number") from None

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 2:
            raise ValueError(f"{item!r}: a range is LOW:HIGH")
        return field, (literal(parts[0]), literal(parts[1]))
    return field, [literal(s) for s in text.split(",")]
