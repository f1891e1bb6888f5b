"""Helpers for users' own test suites: assert that a drift is valid, and (r, A) strategies.

Example (pytest; ``hypothesis`` is only needed for the strategy)::

    import jax.numpy as jnp
    from hypothesis import given, settings
    from drifts.testing import assert_valid_drift, ratio_advantage_pairs

    def my_drift(r, A):
        return jnp.maximum(0.0, (r - 1.0) ** 2 * A**2 - 1e-3 * (r - 1.0) ** 2)

    def test_my_drift_is_valid():
        assert_valid_drift(my_drift)            # AssertionError names the condition, worst value, (r, A)

    @settings(max_examples=50, deadline=None)  # a Drift compiles on its first call (> 200 ms)
    @given(ratio_advantage_pairs())
    def test_my_drift_is_nonnegative(pair):
        r, A = pair
        assert float(my_drift(r, A)) >= 0.0
"""

from __future__ import annotations

import math
from typing import Any

from drifts.checks import DriftReport, check_drift


def assert_valid_drift(f: Any, **check_kwargs: Any) -> DriftReport:
    """Run :func:`drifts.checks.check_drift` and raise ``AssertionError`` if a condition fails.

    The message names every violated condition with its worst value and where it occurs, e.g.
    ``zero_grad_at_identity failed: worst 1 at (r=1, A=-5) ...``. Returns the report when valid.
    Keyword arguments (domain, tolerances, ``t_values``...) are passed to ``check_drift``.
    """
    report = check_drift(f, **check_kwargs)
    if not report.valid:
        parts = []
        for name in report.failed:
            c = report.conditions[name]
            where = "" if c.where is None else " at (" + ", ".join(
                f"{n}={v:.6g}" for n, v in zip(("r", "A", "t"), c.where, strict=False)) + ")"
            parts.append(f"{name} failed: worst {c.worst:.3g}{where} (tol {c.tol:.0e}); {c.detail}")
        head = f"drift {report.name!r} is not a valid drift"
        if report.error:
            head += f" ({report.error})"
        raise AssertionError(head + ":\n  " + "\n  ".join(parts))
    return report


def ratio_advantage_pairs(log_r_range: tuple[float, float] = (-1.5, 1.5), A_range: tuple[float, float] = (-5.0, 5.0),
                          near_identity: bool = True):
    """A hypothesis strategy of ``(r, A)`` float pairs with ``r = exp(log r)`` in the range.

    With ``near_identity`` a third of the draws have ``log r`` within ``1e-6 ... 1e-2`` of 0 (either
    side) and some have ``r = 1`` exactly, where drift conditions are most often broken.

    Every ``r`` and ``A`` is a number float32 holds exactly, and no ``r`` other than 1 lies closer to 1
    than ``1e-6`` (about 16 float32 steps): a drift in ``jax.numpy`` computes in float32, and a ratio
    below that resolution (``exp(-1e-8)``) rounds to 1 inside ``jnp.log`` but not in Python's
    ``r - 1``, so a valid drift mixing both, ``0.1 * (r - 1 - jnp.log(r))``, would come out at -1e-9.
    With these draws the documented ``assert float(my_drift(r, A)) >= 0.0`` agrees with
    :func:`assert_valid_drift`. Imports hypothesis lazily: the drifts package does not depend on it.
    """
    import numpy as np
    from hypothesis import strategies as st

    lo, hi = log_r_range
    log_r = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    if near_identity:
        tiny = st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(-6, -2)).map(lambda p: p[0] * 10.0 ** p[1])
        log_r = st.one_of(log_r, tiny, st.just(0.0))
    adv = st.floats(A_range[0], A_range[1], allow_nan=False, allow_infinity=False, width=32)

    def ratio(x: float) -> float:
        r = float(np.float32(math.exp(x)))
        # a draw of the main range can land within float32's resolution of 1 too (log r = 1e-7): make it 1
        return 1.0 if abs(math.log(r)) < MIN_LOG_RATIO else r

    return st.tuples(log_r.map(ratio), adv)


# No ratio drawn (other than 1 itself) is closer to 1 than this in log r (about 16 float32 steps; see above).
MIN_LOG_RATIO = 0.9e-6
