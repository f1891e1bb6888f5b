"""The outer loop's strategy (evosax 0.3 Open-ES) and a pickle-free form of its state.

The paper's LPO settings (Appendix A, Table 1): OpenAI-ES with antithetic sampling, centred-rank
fitness shaping, Adam on the mean, sigma ``0.04 * 0.999**(g - 1)`` (``0.04`` for generations 0 and 1: evosax
reads the schedule at the generation count before the update) floored at ``0.01``. evosax *minimises*,
so the trainer tells it the negated fitness.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


class MissingDependencyError(ImportError):
    """An optional dependency of meta-training (evosax) is not installed; the message says how to add it."""


def sigma_schedule(sigma_init: float, sigma_decay: float, sigma_limit: float) -> optax.Schedule:
    """``sigma_init * sigma_decay**g``, never below ``sigma_limit`` (a floor: it must not exceed ``sigma_init``).

    With ``sigma_decay == 1`` sigma stays at ``sigma_init``: optax treats ``end_value`` as an *upper*
    bound when the rate is not below 1, which would silently pin sigma at the floor, so none is passed.
    """
    floor = float(sigma_limit) if sigma_decay < 1 else None
    return optax.exponential_decay(init_value=float(sigma_init), transition_steps=1, decay_rate=float(sigma_decay),
                                   end_value=floor)


def make_strategy(population_size: int, solution: Any, sigma_init: float, sigma_decay: float, sigma_limit: float,
                  learning_rate: float):
    """An evosax ``Open_ES`` over pytrees shaped like ``solution`` (the drift's params).

    Raises :class:`MissingDependencyError` (an ``ImportError``) naming the install command when evosax
    is missing: it is an optional extra, not a core dependency.
    """
    try:
        from evosax.algorithms import Open_ES
        from evosax.core.fitness_shaping import centered_rank_fitness_shaping_fn
    except ImportError as err:
        raise MissingDependencyError(
            f"meta-training needs evosax 0.3 ({err}); install the 'meta' extra: pip install -e \".[meta]\" from a "
            "source checkout, or pip install \"mirrorlearn[meta]\"") from err

    return Open_ES(
        population_size=int(population_size),
        solution=solution,
        use_antithetic_sampling=True,
        optimizer=optax.adam(float(learning_rate)),
        std_schedule=sigma_schedule(sigma_init, sigma_decay, sigma_limit),
        fitness_shaping_fn=centered_rank_fitness_shaping_fn,
    )


def _leaf_name(i: int, path) -> str:
    # Index first (keeps the order stable and names unique), then a readable key path.
    readable = re.sub(r"[^A-Za-z0-9_]+", ".", jax.tree_util.keystr(path)).strip(".")
    return f"{i:03d}.{readable}"


def state_to_arrays(state: Any) -> dict[str, np.ndarray]:
    """Flatten an evosax state (a flax struct of arrays) into ``{stable name: numpy array}``."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
    return {_leaf_name(i, path): np.asarray(leaf) for i, (path, leaf) in enumerate(leaves)}


def state_from_arrays(template: Any, arrays: dict[str, np.ndarray], source: str = "checkpoint") -> Any:
    """Rebuild a state shaped like ``template`` (from ``es.init``) from :func:`state_to_arrays` output.

    Refuses (``ValueError``) any mismatch in names, shapes or dtypes, e.g. a checkpoint written by a
    different evosax version or a different genome.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(template)
    names = [_leaf_name(i, path) for i, (path, _) in enumerate(flat)]
    if sorted(names) != sorted(arrays):
        raise ValueError(f"{source}: the ES state does not match this strategy (expected leaves {names}, "
                         f"found {sorted(arrays)}); it was written by another evosax version or genome")
    leaves = []
    for name, (_, ref) in zip(names, flat, strict=True):
        value = arrays[name]
        ref = np.asarray(ref)
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise ValueError(f"{source}: ES state leaf {name} has shape {value.shape} / {value.dtype}, "
                             f"expected {ref.shape} / {ref.dtype}")
        leaves.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
