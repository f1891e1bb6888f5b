"""``MetaTrainer``: evolve a drift's parameters so that PPO trained with it ends with the highest return.

Each generation: ask Open-ES for a population of drift parameters, train one PPO run per member (x
inner seeds x environments) in one compiled, sharded call per environment, score the final policies
(normalised per environment between a random policy and the starting drift), tell the ES, and
checkpoint. The returned drift is the ES mean.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from drifts.base import Drift
from metalearn import checkpoint as ckpt
from metalearn import distributed as dist
from metalearn import es as es_lib
from metalearn import inner as inner_lib
from metalearn import tasks as tasks_lib
from mirrorlearn._archive import save_figure_atomic

GENOMES = ("lpo", "ta-lpo", "lpo_zero", "dpo")
COMBINE_MODES = ("mean", "min")
GENOME_ALIASES = {"lpo-zero": "lpo_zero"}


def is_genome_name(name: Any) -> bool:
    """Whether ``name`` names a genome (case-insensitive), so that it wins over a file of that name."""
    return isinstance(name, str) and (name.lower() in GENOMES or name.lower() in GENOME_ALIASES)


def resolve_genome(drift: str | Drift, seed: int = 0) -> Drift:
    """The drift whose params the ES evolves: a name in ``GENOMES``, a drift file or any parametrised ``Drift``.

    ``"lpo"`` is the PPO-initialised LPO network (zero output layer: exactly PPO at the start, as in
    the paper), not the shipped meta-trained one; ``"ta-lpo"`` its temporally aware form.
    """
    from drifts.library import dpo, lpo, lpo_zero

    if isinstance(drift, os.PathLike) or (isinstance(drift, str) and not is_genome_name(drift)
                                          and (os.path.exists(drift) or drift.endswith(".drift"))):
        if not os.path.exists(drift):
            raise FileNotFoundError(f"no such drift file: {os.fspath(drift)!r} (drift=, the genome to evolve)")
        drift = Drift.load(drift)  # a drift file: evolve from its parameters (e.g. continue a learned LPO)
    if isinstance(drift, Drift):
        if not jax.tree_util.tree_leaves(drift.params):
            raise ValueError(f"drift {drift.name!r} has no parameters to evolve; pass a parametrised drift "
                             f"(e.g. drifts.lpo(), drifts.dpo()) or one of {GENOMES}")
        return drift
    builders = {"lpo": lambda: lpo(seed=seed), "ta-lpo": lambda: lpo(temporal=True, seed=seed),
                "lpo_zero": lambda: lpo_zero(seed=seed), "dpo": lambda: dpo()}
    if not is_genome_name(drift):
        import difflib

        close = difflib.get_close_matches(str(drift).lower(), GENOMES, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown drift genome {drift!r}. {hint}Use one of {GENOMES}, a drift file (*.drift) "
                         "or a parametrised Drift")
    return builders[GENOME_ALIASES.get(drift.lower(), drift.lower())]()


def _params_digest(params: Any) -> str:
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()[:16]


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_finite_number(x: Any) -> bool:
    return isinstance(x, (numbers.Real, np.floating, np.integer)) and not isinstance(x, bool) and math.isfinite(x)


# What a run writes into checkpoint_dir beside the checkpoint: history.json with every checkpoint, the rest
# when it finishes (MetaTrainer._write_outputs).
OUTPUT_FILES = ("drift.drift", "history.json", "meta_curve.png", "drift.png")


def env_list(envs: Any) -> list:
    """``envs`` as a list: one environment (an id string or an environment object) becomes ``[envs]``."""
    from agents.envs import JaxEnv

    # A JaxEnv is a dataclass (not iterable) but strings are iterable: test both before iterating.
    if isinstance(envs, (str, JaxEnv)) or not isinstance(envs, Iterable):
        return [envs]
    return list(envs)


def check_inner(inner: Any) -> None:
    """Refuse an ``inner`` that is not an estimator; warn when the estimator's own drift will be ignored.

    The inner loop takes only the estimator's hyperparameters (``inner.make_config(env)``); the drift it
    trains with is always the evolved genome (``drift=``).
    """
    from agents.estimators import PPO

    if inner is None:
        return
    if not callable(getattr(inner, "make_config", None)):
        raise TypeError(f"inner must be an estimator such as PPO(total_timesteps=100_000), got {type(inner).__name__} "
                        f"{inner!r}; it supplies the inner PPO's hyperparameters (a PPOConfig's settings go in "
                        "as PPO(**settings), a budget as PPO(total_timesteps=...))")
    if not isinstance(inner, PPO):
        warnings.warn(f"inner={type(inner).__name__}(...) supplies only hyperparameters: its drift is ignored and "
                      "every inner run trains with the evolved genome (MetaTrainer(drift=...)); pass PPO(...) with "
                      "the same settings to silence this", UserWarning, stacklevel=5)
    elif inner.eps != PPO().eps:
        warnings.warn(f"inner=PPO(eps={inner.eps}) sets PPO's clip drift, which the inner runs do not use: they train "
                      "with the evolved genome; for an LPO genome with another clip range pass "
                      f"MetaTrainer(drift=drifts.lpo(eps={inner.eps}))", UserWarning, stacklevel=5)
    if getattr(inner, "seed", 0) != 0:
        warnings.warn(f"inner seed={inner.seed} is ignored: the inner runs' keys come from MetaTrainer(seed=...); "
                      "set that instead", UserWarning, stacklevel=5)
    if getattr(inner, "n_seeds", 1) != 1:
        warnings.warn(f"inner n_seeds={inner.n_seeds} is ignored: each population member trains "
                      "MetaTrainer(n_inner_seeds=...) seeds; set that instead", UserWarning, stacklevel=5)


def check_checkpoint_dir(folder: Any) -> None:
    """Refuse a ``checkpoint_dir`` that is (or lies inside) an existing regular file, before any training."""
    if folder is None:
        return
    path = Path(folder)
    for p in (path, *path.parents):  # the nearest existing ancestor must be a folder for mkdir to succeed
        if p.exists():
            if not p.is_dir():
                where = "is" if p == path else f"lies inside {str(p)!r}, which is"
                raise ValueError(f"checkpoint_dir {str(path)!r} {where} an existing file, not a folder; give a "
                                 "folder path (--out), which is created if missing and resumed if it holds a run")
            return


class MetaTrainingDivergedError(RuntimeError):
    """The ES mean (the drift being learned) became NaN or inf."""


class MetaTrainer:
    """Open-ES over a drift's parameters with PPO as the inner loop (the paper's LPO discovery).

    Constructor arguments are hyperparameters only (scikit-learn style); ``fit()`` validates them,
    runs (or resumes) the meta-training and returns the ES mean as a :class:`Drift`. Learned state:
    ``history_`` (one dict per generation), ``drift_``, ``baselines_``, ``generation_``.

    ``fitness="eval"`` scores a trained policy by ``n_eval_episodes`` deterministic episodes,
    ``"train"`` by its training returns over the last 10% of updates, ``"curve"`` by its training
    returns over the last half of the updates, ``"eval+curve"`` by the mean of the two. Scores are
    normalised per environment, 0 = a random policy and 1 = the starting drift (PPO for the LPO and
    DPO genomes) under the same inner settings, then combined over environments (``combine="mean"``,
    or ``"min"``: the worst environment's score); where
    the starting drift is not clearly above random (too small an inner budget) the scale is floored at
    10% of the returns' magnitude and a warning names the environment (:func:`metalearn.inner.normalise`).
    ``chunk_size`` bounds how many members train at once (memory); it must divide ``population_size``
    and does not change results.

    ``envs`` is a list of environment ids or objects (one alone is taken as ``[env]``); ``inner`` an
    estimator whose hyperparameters the inner runs use (default ``PPO(total_timesteps=100_000)``); the
    drift they train with is always the evolved genome ``drift``.

    ``inner_ranges`` randomises the inner settings (:mod:`metalearn.tasks`): e.g.
    ``{"budget": (1, 8), "learning_rate": (1e-4, 1e-3), "update_epochs": [2, 4, 8]}`` draws a pool of
    ``n_tasks`` inner configurations once (stratified over every range); each generation picks one of
    them per environment, the same for every member, and the normalisation uses the starting drift's
    return measured on that very configuration (``baselines_[env]["tasks"]``).
    """

    def __init__(self, envs: Sequence[Any] = ("CartPole-v1",), inner: Any = None, drift: str | Drift = "lpo", *,
                 population_size: int = 32, generations: int = 100, sigma_init: float = 0.04,
                 sigma_decay: float = 0.999, sigma_limit: float = 0.01, learning_rate: float = 0.01,
                 n_inner_seeds: int = 1, fitness: str = "eval", n_eval_episodes: int = 16, eval_every: int = 10,
                 checkpoint_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
                 chunk_size: int | None = None, devices: Sequence[Any] | None = None,
                 inner_ranges: dict | None = None, n_tasks: int = 8, combine: str = "mean"):
        self.envs = envs
        self.inner = inner
        self.drift = drift
        self.population_size = population_size
        self.generations = generations
        self.sigma_init = sigma_init
        self.sigma_decay = sigma_decay
        self.sigma_limit = sigma_limit
        self.learning_rate = learning_rate
        self.n_inner_seeds = n_inner_seeds
        self.fitness = fitness
        self.n_eval_episodes = n_eval_episodes
        self.eval_every = eval_every
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.progress = progress
        self.chunk_size = chunk_size
        self.devices = devices
        self.inner_ranges = inner_ranges
        self.n_tasks = n_tasks
        self.combine = combine

    # -- configuration --------------------------------------------------------------------------------
    def _validate(self) -> None:
        p = self.population_size
        if not _is_int(p) or p < 2:
            raise ValueError(f"population_size must be an integer >= 2, got {p!r}")
        if p % 2:
            raise ValueError(f"population_size={p} is odd, but antithetic sampling pairs every perturbation "
                             f"with its negation; use an even population (e.g. {p + 1})")
        if not _is_int(self.generations) or self.generations <= 0:
            raise ValueError(f"generations must be a positive integer, got {self.generations!r}")
        for name in ("n_inner_seeds", "n_eval_episodes"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.eval_every is not None and (not _is_int(self.eval_every) or self.eval_every < 0):
            raise ValueError(f"eval_every must be a non-negative integer (0 or None: never), got {self.eval_every!r}")
        for name in ("sigma_init", "sigma_limit", "sigma_decay", "learning_rate"):
            if not _is_finite_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if not (self.sigma_init > 0 and self.sigma_limit > 0 and 0 < self.sigma_decay <= 1):
            raise ValueError("need sigma_init > 0, sigma_limit > 0 and 0 < sigma_decay <= 1, got "
                             f"{self.sigma_init}, {self.sigma_limit}, {self.sigma_decay}")
        if self.sigma_limit > self.sigma_init:  # a floor above the start would replace sigma_init altogether
            raise ValueError(f"sigma_limit={self.sigma_limit} > sigma_init={self.sigma_init}: sigma_limit is the floor "
                             "the decaying sigma never goes below, so it must not exceed sigma_init; lower sigma_limit "
                             "(or raise sigma_init)")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.fitness not in inner_lib.FITNESS_MODES:
            raise ValueError(f"fitness must be one of {inner_lib.FITNESS_MODES}, got {self.fitness!r}")
        if self.chunk_size is not None and (not _is_int(self.chunk_size) or self.chunk_size < 1
                                            or p % self.chunk_size):
            raise ValueError(f"chunk_size={self.chunk_size!r} must be a positive integer dividing "
                             f"population_size={p}")
        if not _is_int(self.seed) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not env_list(self.envs):
            raise ValueError("envs is empty: give at least one environment id, e.g. envs=['CartPole-v1']")
        if self.combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {self.combine!r}")
        ranges = tasks_lib.check_ranges(self.inner_ranges)
        if ranges and (not _is_int(self.n_tasks) or not 1 <= self.n_tasks <= tasks_lib.MAX_TASKS):
            raise ValueError(f"n_tasks must be an integer in [1, {tasks_lib.MAX_TASKS}], got {self.n_tasks!r}")
        check_inner(self.inner)
        check_checkpoint_dir(self.checkpoint_dir)
        if self.devices is not None:
            inner_lib.check_devices(self.devices)

    def _setup(self) -> dict:
        """Resolve environments, inner configurations, genome and strategy (no training yet)."""
        from agents.envs import JaxEnv, make_env
        from agents.estimators import PPO, warn_partial_batch

        self._validate()
        envs = []
        for spec in env_list(self.envs):
            env = make_env(spec)
            if not isinstance(env, JaxEnv):
                raise ValueError(f"meta-training needs JAX-native environments (gymnax, Brax); {spec!r} is "
                                 "stepped on the host and cannot be vmapped over a population")
            envs.append(env)
        inner = self.inner if self.inner is not None else PPO(total_timesteps=100_000)
        configs = [inner.make_config(env) for env in envs]
        for config in dict.fromkeys(configs):  # a budget that drops 5% or more to whole batches is named, as by fit
            warn_partial_batch(inner, config, stacklevel=4)
        ranges = tasks_lib.check_ranges(self.inner_ranges)
        tasks = [tasks_lib.sample_tasks(c, ranges, int(self.n_tasks), int(self.seed)) for c in configs]
        genome = resolve_genome(self.drift, int(self.seed))
        strategy = es_lib.make_strategy(self.population_size, genome.params, self.sigma_init, self.sigma_decay,
                                        self.sigma_limit, self.learning_rate)
        chunk = int(self.chunk_size or self.population_size)
        fingerprint = {
            "format": 1,
            "envs": [env.id for env in envs],
            "inner_configs": [c.to_dict() for c in configs],
            "drift": genome.to_spec() if genome.savable else {"name": genome.name},
            "drift_init": _params_digest(genome.params),
            "population_size": int(self.population_size),
            "sigma_init": float(self.sigma_init), "sigma_decay": float(self.sigma_decay),
            "sigma_limit": float(self.sigma_limit), "learning_rate": float(self.learning_rate),
            "n_inner_seeds": int(self.n_inner_seeds), "fitness": self.fitness,
            "n_eval_episodes": int(self.n_eval_episodes), "eval_every": int(self.eval_every or 0),
            "seed": int(self.seed), "evosax": _evosax_version(),
        }
        if ranges:  # only then: runs without ranges keep the fingerprint (and so the resumability) they had
            fingerprint["inner_ranges"] = {k: list(v) if isinstance(v, tuple) else {"choices": v} for k, v in ranges.items()}
            fingerprint["inner_tasks"] = [[tasks_lib.describe(t, ranges) for t in env_tasks] for env_tasks in tasks]
        if self.combine != "mean":
            fingerprint["combine"] = self.combine
        fns = [[inner_lib.compiled_population_fn(t, env, genome.fn, genome.temporal, self.fitness,
                                                 int(self.n_eval_episodes)) for t in env_tasks]
               for env_tasks, env in zip(tasks, envs, strict=True)]
        mesh = inner_lib.make_mesh(self.devices, chunk)
        # XLA partitions the population program differently on another device count, and float round-off then
        # grows through training: over 60 generations one and two devices ended 0.23 apart. So a run records
        # its device count, and a resume on another count is refused instead of silently changing the run.
        fingerprint["devices"] = int(mesh.devices.size)
        return {"envs": envs, "configs": configs, "tasks": tasks, "ranges": ranges, "genome": genome, "strategy": strategy,
                "es_params": strategy.default_params, "chunk": chunk, "mesh": mesh, "fingerprint": fingerprint, "fns": fns}

    # -- the run --------------------------------------------------------------------------------------
    def fit(self, *, overwrite: bool = False) -> Drift:
        """Run (or resume from ``checkpoint_dir``) the meta-training; return the ES mean as a Drift.

        A ``checkpoint_dir`` holding an earlier run's outputs (``drift.drift``, ``history.json``, ...)
        but no checkpoint to resume is refused, so that a learned drift is never replaced by accident;
        ``overwrite=True`` starts afresh there and replaces them.
        """
        s = self._setup()
        if self.checkpoint_dir is None:
            return self._fit(s, None, overwrite)
        if not dist.is_writer():  # another process of a jax.distributed run: process 0 reads and writes the folder
            return self._fit(s, Path(self.checkpoint_dir), overwrite)
        from mirrorlearn._outputs import exclusive_folder

        # one writer per run folder: two runs started on one --out would both report results, and only the
        # later one's would survive
        with exclusive_folder(Path(self.checkpoint_dir), "meta-training run") as folder:
            return self._fit(s, folder, overwrite)

    def _fit(self, s: dict, folder: Path | None, overwrite: bool) -> Drift:
        strategy, es_params, genome = s["strategy"], s["es_params"], s["genome"]

        def refuse_earlier_outputs(stored) -> None:
            if folder is not None and stored is None and not overwrite:
                held = [name for name in OUTPUT_FILES if (folder / name).exists()]
                if held:
                    raise ValueError(f"checkpoint_dir {str(folder)!r} holds an earlier run's outputs ({', '.join(held)}) "
                                     "but no checkpoint to resume; use another checkpoint_dir (--out), or pass "
                                     "fit(overwrite=True) (--overwrite) to start afresh and replace them")

        stored, refused = dist.shared_checkpoint(folder, ckpt.load_checkpoint, refuse_earlier_outputs)
        if refused:
            raise ValueError(refused)
        writes = folder if dist.is_writer() else None  # only process 0 writes
        template = strategy.init(jax.random.PRNGKey(0), genome.params, es_params)
        if stored is not None:
            ckpt.check_fingerprint(stored["meta"]["fingerprint"], s["fingerprint"], stored["path"])
            missing = [env.id for env, env_tasks in zip(s["envs"], s["tasks"], strict=True)
                       if env.id not in stored["meta"]["baselines"]
                       or (len(env_tasks) > 1 and len(stored["meta"]["baselines"][env.id].get("tasks", [])) != len(env_tasks))]
            if missing:
                raise ValueError(f"{stored['path']} is corrupted (no normalisation baseline for {missing}); it was "
                                 "not used. Move it away to start afresh, or pass another checkpoint_dir / --out")
            state = es_lib.state_from_arrays(template, stored["es_arrays"], str(stored["path"]))
            key = jnp.asarray(stored["key"])
            history = _one_based(list(stored["meta"]["history"]))
            baselines = stored["meta"]["baselines"]
            start = int(stored["meta"]["generation"])
            if start > int(self.generations):
                warnings.warn(f"{folder} already holds {start} generations, more than the {self.generations} requested; "
                              f"nothing is trained and the result is the {start}-generation one (use another "
                              "checkpoint_dir / --out for a shorter run)", UserWarning, stacklevel=2)
            self._log(f"resuming {folder} at generation {start}/{self.generations}" if start < int(self.generations)
                      else f"{folder} already holds {start} generations: nothing to train")
        else:
            key, k_init = jax.random.split(jax.random.PRNGKey(int(self.seed)))
            state = _strong_types(strategy.init(k_init, genome.params, es_params))
            history, start = [], 0
            baselines = self._collective(lambda: self._measure_baselines(s), 0, None)
            if writes is not None:
                self._checkpoint(writes, s, 0, state, key, history, baselines)
        _warn_floored_baselines(baselines)
        self.baselines_ = baselines

        for gen in range(start, int(self.generations)):
            key, state, record = self._collective(
                lambda gen=gen, key=key, state=state: self._generation(s, gen, key, state, baselines), gen, folder)
            history.append(record)
            self._check_finite_mean(strategy, state, gen + 1, folder, history)
            if writes is not None:
                self._checkpoint(writes, s, gen + 1, state, key, history, baselines)
            self._log(_progress_line(record, int(self.generations)))

        self.history_ = history
        self.generation_ = max(start, int(self.generations))
        mean = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), strategy.get_mean(state))
        self.drift_ = genome.with_params(mean)
        self.es_state_ = state
        if writes is not None:
            self._write_outputs(writes, s)
        return self.drift_

    def _collective(self, step, generation: int, folder: Path | None):
        """``step()``; on several processes a failed gather (a peer stopped) becomes a :class:`PeerLostError`."""
        if dist.process_count() == 1:
            return step()
        try:
            return step()
        except (ValueError, RuntimeError) as err:
            if not any(word in str(err) for word in _COLLECTIVE_FAILURES):
                raise
            raise dist.peer_lost(err, generation, folder) from None

    def _check_finite_mean(self, strategy, state, generation: int, folder: Path | None, history: list) -> None:
        """Stop before a non-finite ES mean is checkpointed or returned: the checkpoint keeps the last good one."""
        if all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(strategy.get_mean(state))):
            return
        self.history_ = history
        kept = (f"; {folder} keeps generation {generation - 1}" if folder is not None and generation > 1 else "")
        raise MetaTrainingDivergedError(
            f"the ES mean became NaN or inf in generation {generation}, so there is no drift to return{kept}. "
            f"Lower learning_rate ({self.learning_rate}) or sigma_init ({self.sigma_init}); history_ holds the "
            "fitness of every generation run")

    def _generation(self, s: dict, gen: int, key, state, baselines: dict):
        """One ask / evaluate / tell step; returns the new key and state and the history record."""
        t0 = time.perf_counter()
        strategy, es_params = s["strategy"], s["es_params"]
        sigma = float(state.std)
        key, k_ask, k_inner, k_tell = jax.random.split(key, 4)
        population, state = strategy.ask(k_ask, state, es_params)
        seeds = jax.random.split(k_inner, int(self.n_inner_seeds))
        keys = np.broadcast_to(np.asarray(seeds), (self.population_size,) + seeds.shape).copy()
        task_of_env = self._draw_tasks(s, k_inner)
        t_inner = time.perf_counter()
        scores, raw = self._score(s, population, keys, baselines, task_of_env)
        t_inner = time.perf_counter() - t_inner
        finite = np.isfinite(scores)
        nan_members = [int(i) for i in np.flatnonzero(~finite)]
        if nan_members:
            self._log(f"generation {gen}: members {nan_members} had NaN/inf fitness; counted as worst")
        es_fitness = jnp.asarray(np.where(finite, -scores, np.inf), jnp.float32)  # evosax minimises
        state, _ = strategy.tell(k_tell, population, es_fitness, state, es_params)
        state = _strong_types(state)
        record = {
            "generation": gen + 1,  # counted from 1, as the log and the checkpoint count completed generations
            "fitness_mean": _stat(np.mean, scores[finite]),
            "fitness_max": _stat(np.max, scores[finite]),
            "fitness_min": _stat(np.min, scores[finite]),
            "return_mean": {env.id: _stat(np.nanmean, r) for env, r in zip(s["envs"], raw, strict=True)},
            "n_nan": len(nan_members), "nan_members": nan_members,
            "sigma": sigma,
            "inner_seconds": t_inner,
        }
        if s["ranges"]:
            record["tasks"] = {env.id: int(k) for env, k in zip(s["envs"], task_of_env, strict=True)}
        every = int(self.eval_every or 0)
        if every and (gen + 1) % every == 0:  # by index only, so history never depends on `generations`
            mean = strategy.get_mean(state)
            record["mean_score"], record["mean_return"] = self._evaluate_params(s, mean, baselines)
        record["seconds"] = time.perf_counter() - t0
        return key, state, record

    def _draw_tasks(self, s: dict, k_inner) -> list[int]:
        """Each environment's inner task this generation (0 without ``inner_ranges``), from the generation's key."""
        n = [len(t) for t in s["tasks"]]
        if max(n) == 1:
            return [0] * len(n)
        k_task = jax.random.fold_in(k_inner, 0x7A5C)
        return [int(jax.random.randint(jax.random.fold_in(k_task, i), (), 0, n_i)) for i, n_i in enumerate(n)]

    def _combine(self, per_env: list[np.ndarray]) -> np.ndarray:
        """Members' scores over environments: their mean, or the worst environment's (``combine="min"``)."""
        with np.errstate(invalid="ignore"):
            return np.min(per_env, axis=0) if self.combine == "min" else np.mean(per_env, axis=0)

    def _score(self, s: dict, population, keys: np.ndarray, baselines: dict, task_of_env: Sequence[int]):
        """Normalised fitness per member (combined over envs, mean over inner seeds) and raw returns per env."""
        per_env, raw = [], []
        for env, fns, k in zip(s["envs"], s["fns"], task_of_env, strict=True):
            returns = inner_lib.run_population(fns[k], population, keys, s["chunk"], s["mesh"])  # (P, seeds)
            b = _task_baseline(baselines[env.id], k)
            per_env.append(inner_lib.normalise(returns, b["random"], b["reference"]).mean(axis=1))
            raw.append(returns.mean(axis=1))
        return self._combine(per_env), raw

    def _reference_keys(self) -> np.ndarray:
        """Fixed, distinct keys (one per member slot x inner seed) for precise single-drift estimates."""
        k = jax.random.fold_in(jax.random.PRNGKey(int(self.seed)), 0x5EED)
        keys = jax.random.split(k, self.population_size * int(self.n_inner_seeds))
        return np.asarray(keys).reshape(self.population_size, int(self.n_inner_seeds), -1)

    def _replicate(self, params, n: int | None = None) -> Any:
        n = self.population_size if n is None else n
        return jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), params)

    def _evaluate_params(self, s: dict, params, baselines: dict) -> tuple[float, dict]:
        """Normalised score and raw return of one drift, over population x inner-seed fixed seeds.

        With a task pool, the fixed seeds are shared out over the tasks (population / tasks member
        slots each), so that one evaluation costs one generation whatever the pool's size.
        """
        keys = self._reference_keys()
        scores, returns = [], {}
        for env, fns in zip(s["envs"], s["fns"], strict=True):
            env_scores, env_returns = [], []
            for k, (fn, slots) in enumerate(zip(fns, self._task_slots(s, len(fns)), strict=True)):
                r = inner_lib.run_population(fn, self._replicate(params, len(slots)), keys[slots],
                                             math.gcd(len(slots), s["chunk"]), s["mesh"])
                b = _task_baseline(baselines[env.id], k)
                env_scores.append(inner_lib.normalise(r, b["random"], b["reference"]))
                env_returns.append(r)
            scores.append(float(np.nanmean(np.concatenate(env_scores, axis=None))))
            returns[env.id] = float(np.nanmean(np.concatenate(env_returns, axis=None)))
        combined = min(scores) if self.combine == "min" else float(np.mean(scores))
        return float(combined), returns

    def _task_slots(self, s: dict, n_tasks: int) -> list[np.ndarray]:
        """Which of the fixed member slots evaluate each task: all of them for one task, else an equal share
        (a multiple of the mesh's size, at least one per device), taken in turn."""
        p = int(self.population_size)
        if n_tasks == 1:
            return [np.arange(p)]
        width = int(s["mesh"].devices.size)
        m = max(width, (p // n_tasks) // width * width)
        return [np.arange(k * m, (k + 1) * m) % p for k in range(n_tasks)]

    def _measure_baselines(self, s: dict) -> dict:
        """Per env: a random policy's return, the starting drift's return (on the reference seeds) and the
        normalisation scale (see :func:`metalearn.inner.normalise`).

        Raises ``ValueError`` when the starting drift has no finite return on an env (for
        ``fitness="train"``: no episode ended in the last 10% of updates), since every member's fitness
        would then be NaN and the ES would learn nothing.
        """
        t0 = time.perf_counter()
        keys = self._reference_keys()
        out = {}
        for env, env_tasks, fns in zip(s["envs"], s["tasks"], s["fns"], strict=True):
            rand = inner_lib.random_policy_return(env, 64, jax.random.fold_in(jax.random.PRNGKey(int(self.seed)), 7))
            per_task = []
            for config, fn in zip(env_tasks, fns, strict=True):
                ref = inner_lib.run_population(fn, self._replicate(s["genome"].params), keys, s["chunk"], s["mesh"])
                if not np.isfinite(ref).any():
                    raise ValueError(_no_reference_message(self.fitness, env, config, s["genome"].name))
                reference = float(np.nanmean(ref))  # some NaN seeds are fine, as NaN members count as worst
                per_task.append({"random": rand, "reference": reference,
                                 "reference_sem": float(np.nanstd(ref) / math.sqrt(max(1, np.isfinite(ref).sum()))),
                                 "scale": inner_lib.normalisation_scale(rand, reference)})
                if len(env_tasks) > 1:
                    per_task[-1]["setting"] = tasks_lib.describe(config, s["ranges"])
                    self._log(f"baseline {env.id} task {len(per_task) - 1} ({per_task[-1]['setting']}): starting "
                              f"drift {reference:.1f} ({time.perf_counter() - t0:.1f} s incl. compile)")
            if len(per_task) == 1:
                out[env.id] = per_task[0]
            else:  # the env's summary over the pool; fitness uses each task's own numbers
                reference = float(np.mean([b["reference"] for b in per_task]))
                out[env.id] = {"random": rand, "reference": reference,
                               "reference_sem": float(math.sqrt(sum(b["reference_sem"] ** 2 for b in per_task)))
                               / len(per_task), "scale": inner_lib.normalisation_scale(rand, reference),
                               "tasks": per_task}
            self._log(f"baseline {env.id}: random policy {rand:.1f}, starting drift ({s['genome'].name}) "
                      f"{out[env.id]['reference']:.1f} +- {out[env.id]['reference_sem']:.1f} "
                      f"({time.perf_counter() - t0:.1f} s incl. compile)")
        return out

    def _checkpoint(self, folder: Path, s: dict, generation: int, state, key, history, baselines) -> None:
        ckpt.save_checkpoint(folder, fingerprint=s["fingerprint"], generation=generation,
                             es_arrays=es_lib.state_to_arrays(state), key=np.asarray(key), history=history,
                             baselines=baselines)

    def _write_outputs(self, folder: Path, s: dict) -> None:
        """The learned drift file, the meta-training curve and the drift's picture (when available)."""
        meta = {"meta_training": {"envs": s["fingerprint"]["envs"], "generations": self.generation_,
                                  "population_size": int(self.population_size), "baselines": self.baselines_,
                                  "final_mean_score": _last_mean_score(self.history_)}}
        if self.drift_.savable:
            self.drift_.save(folder / "drift.drift", extra_meta=meta)
        try:
            from metalearn.plotting import plot_history

            fig = plot_history(self.history_, title=f"meta-training {self.drift_.name} on {', '.join(meta['meta_training']['envs'])}")
            save_figure_atomic(fig, folder / "meta_curve.png", dpi=110, bbox_inches="tight")
            _close(fig)
        except ImportError:  # matplotlib missing: the numbers are in history.json
            pass
        try:
            from drifts.plotting import plot_drift
        except ImportError:  # drifts.plotting not available in this installation
            return
        fig = plot_drift(self.drift_)
        save_figure_atomic(fig, folder / "drift.png", dpi=110, bbox_inches="tight")
        _close(fig)

    def _log(self, message: str) -> None:
        if self.progress and dist.is_writer():  # one log for a multi-process run
            print(f"[meta-train] {message}", file=sys.stderr, flush=True)


# Words of the runtime errors a collective raises when a peer process has gone (gloo on CPUs, the
# coordination service's heartbeats elsewhere): other errors are the run's own and keep their message.
_COLLECTIVE_FAILURES = ("Gloo", "gloo", "UNAVAILABLE", "Connection closed", "Connection reset", "DEADLINE_EXCEEDED",
                        "heartbeat", "coordination service")


def _one_based(history: list) -> list:
    """History records as this version writes them: ``generation`` counts from 1 (earlier versions wrote the
    0-based index, which read "generation 2" after the log's "gen 3/3"); old records are renumbered."""
    if history and all(h.get("generation") == i for i, h in enumerate(history)):
        return [{**h, "generation": i + 1} for i, h in enumerate(history)]
    return history


def _task_baseline(baseline: dict, task: int) -> dict:
    """The baseline that normalises one task's returns: the task's own when the env has a task pool."""
    return baseline["tasks"][task] if "tasks" in baseline else baseline


def _no_reference_message(fitness: str, env, config, drift_name: str) -> str:
    """Why the starting drift scored NaN on ``env``, and what to change."""
    if fitness == "eval":
        return (f"the starting drift ({drift_name}) scored NaN/inf on {env.id} in every reference run, so no member "
                "can be compared with it; its training diverged. Check the drift and the inner hyperparameters")
    part, fraction = ("10%", 10) if fitness == "train" else ("half", 2)
    n_last = max(1, config.num_updates // fraction)
    window = n_last * config.num_steps
    # Enough updates that the scored window spans one full episode per environment.
    need = fraction * math.ceil(env.max_episode_steps / config.num_steps) * config.batch_size
    return (f"fitness={fitness!r} scores a run by the returns of episodes that end in its last {part} of updates, but no "
            f"episode of the starting drift ({drift_name}) ended there on {env.id}: that window is {n_last} update(s) "
            f"x {config.num_steps} steps = {window} steps per environment, and {env.id}'s episodes last up to "
            f"{env.max_episode_steps} steps. Every member would score NaN. Raise the inner budget (e.g. "
            f"PPO(total_timesteps={need}) or more; --timesteps on the command line) or use fitness='eval' (--fitness eval)")


def _warn_floored_baselines(baselines: dict) -> None:
    """Warn for each env (or task of an env's pool) whose starting drift is not clearly above random (its scale
    is the floor)."""
    for env_id, b in baselines.items():
        for i, task in enumerate(b.get("tasks", [])):
            if inner_lib.is_floored(task["random"], task["reference"]):
                warnings.warn(f"{env_id}, task {i} ({task.get('setting', '')}): the starting drift's return "
                              f"({task['reference']:.1f}) is not clearly above the random policy's ({task['random']:.1f}), "
                              "so that task is normalised by the floor scale and carries little signal; narrow "
                              "inner_ranges (--vary) towards larger budgets", UserWarning, stacklevel=3)
        if "tasks" in b:
            continue
        if inner_lib.is_floored(b["random"], b["reference"]):
            warnings.warn(
                f"{env_id}: the starting drift's return ({b['reference']:.1f}) is not clearly above the random "
                f"policy's ({b['random']:.1f}), so its fitness is normalised by the floor scale "
                f"{inner_lib.normalisation_scale(b['random'], b['reference']):.1f} (10% of the returns' magnitude) "
                f"instead of their difference, and this env carries little signal. Raise the inner budget "
                "(PPO(total_timesteps=...), --timesteps) until the starting drift learns on it", UserWarning,
                stacklevel=3)


def _strong_types(state):
    """The state as a checkpoint restores it (plain, strongly typed arrays).

    evosax's ``init`` returns weakly typed scalars that ``tell`` makes strong, which would recompile
    ``ask``/``tell`` in generation 1 and make resumed runs take other compiled paths; normalising
    every generation gives one compilation and identical code before and after a resume.
    """
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), jax.device_get(state))


def _stat(fn, values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def _last_mean_score(history: list) -> float | None:
    scores = [h["mean_score"] for h in history if h.get("mean_score") is not None]
    return scores[-1] if scores else None


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.3f}"


def _progress_line(record: dict, total: int) -> str:
    line = (f"gen {record['generation']}/{total}  fitness mean {_fmt(record['fitness_mean'])} "
            f"max {_fmt(record['fitness_max'])}  sigma {record['sigma']:.4f}  {record['seconds']:.1f} s/gen")
    if record.get("mean_score") is not None:
        line += f"  | ES mean score {record['mean_score']:.3f}"
    if record["n_nan"]:
        line += f"  ({record['n_nan']} NaN)"
    return line


def _evosax_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evosax")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
