"""Evolution strategies over drift parameters: discover a drift (LPO) by meta-training PPO.

>>> from metalearn import MetaTrainer            # doctest: +SKIP
>>> from agents.estimators import PPO            # doctest: +SKIP
>>> mt = MetaTrainer(envs=["CartPole-v1"], inner=PPO(total_timesteps=100_000), generations=100)  # doctest: +SKIP
>>> learned = mt.fit()                           # doctest: +SKIP

Multi-host runs: start the same script on every host after ``jax.distributed.initialize(...)``
(see :mod:`metalearn.inner`); the population axis is then sharded over every device of every host.
"""

from metalearn.trainer import MetaTrainer, MetaTrainingDivergedError, resolve_genome

__all__ = ["MetaTrainer", "MetaTrainingDivergedError", "resolve_genome"]
