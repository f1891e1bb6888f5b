"""distill: symbolic distillation of drifts into closed forms, valid by construction and checked.

>>> from distill import distill
>>> result = distill("dpo", backend="linear", time_budget=5)    # doctest: +SKIP
>>> result.best.expression, result.best.fidelity, result.best.report.valid   # doctest: +SKIP

The paper's step from LPO to DPO, automated: sample (r, A), fit expressions per advantage sign,
project each onto the valid drifts (conditions (2) and (3) exactly, (1) by a final ReLU), check every
candidate symbolically and numerically, and keep the Pareto front of complexity vs fidelity.
"""

from distill.backends import BACKENDS, available_backends
from distill.core import distill
from distill.recording import record_training_pairs
from distill.result import Candidate, DistillResult
from distill.sampling import recorded_pairs, sample_pairs

__all__ = ["BACKENDS", "Candidate", "DistillResult", "available_backends", "distill", "record_training_pairs",
           "recorded_pairs", "sample_pairs"]
