"""Scikit-learn-like Mirror-Learning agents around one jitted, vmappable PPO core."""

from agents.config import PRESETS, PPOConfig, preset
from agents.core import TrainOutput, make_evaluate, make_learner, make_policy_fn, make_train, make_train_parts, policy_loss
from agents.envs import ActionSpec, JaxEnv, make_env
from agents.estimators import (
    DPO,
    LPO,
    PPO,
    DriftConditionError,
    MirrorAgent,
    NotFittedError,
    TrainingDivergedError,
)

__all__ = [
    "DPO",
    "LPO",
    "PPO",
    "PRESETS",
    "DriftConditionError",
    "MirrorAgent",
    "NotFittedError",
    "TrainingDivergedError",
    "ActionSpec",
    "JaxEnv",
    "PPOConfig",
    "TrainOutput",
    "make_env",
    "make_evaluate",
    "make_learner",
    "make_policy_fn",
    "make_train",
    "make_train_parts",
    "policy_loss",
    "preset",
]
