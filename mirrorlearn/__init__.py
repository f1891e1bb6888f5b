"""mirrorlearn: Mirror Learning policy optimisation (PPO, DPO, LPO) in JAX.

The user-facing packages are ``agents``, ``drifts``, ``metalearn`` and ``distill``; this package
holds what they share (version, the pickle-free archive format) and the command line.
"""

__version__ = "0.1.0"
