"""Where the distillation looks: (r, A) samples, the source's targets, and the held-out split.

The default design is log-uniform in ``r`` (ratios below and above 1 matter equally, and
``log r`` is what a policy update moves) and uniform in ``A`` (advantages are normalised per
minibatch). Pairs recorded during real training can be passed instead, so that the fit spends its
accuracy where an agent actually lives.
"""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from drifts.base import number_pair

DEFAULT_R_RANGE = (float(np.exp(-1.0)), float(np.exp(1.0)))
DEFAULT_A_RANGE = (-4.0, 4.0)
TARGETS = ("drift", "derivative")


@dataclasses.dataclass(frozen=True)
class Samples:
    """Training and held-out ``(r, A)`` pairs with the source drift ``f`` and ``df/dr`` at each."""

    r: np.ndarray
    A: np.ndarray
    f: np.ndarray
    dfdr: np.ndarray
    test: np.ndarray  # boolean mask: held-out pairs

    def target(self, name: str) -> np.ndarray:
        return self.f if name == "drift" else self.dfdr

    def subset(self, mask: np.ndarray) -> Samples:
        return Samples(self.r[mask], self.A[mask], self.f[mask], self.dfdr[mask], self.test[mask])


def sample_pairs(n: int, r_range=DEFAULT_R_RANGE, A_range=DEFAULT_A_RANGE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs: ``r`` log-uniform in ``r_range``, ``A`` uniform in ``A_range``."""
    (r_lo, r_hi), (a_lo, a_hi) = _check_ranges(r_range, A_range)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < MIN_SAMPLES:
        raise ValueError(f"n_samples must be an integer >= {MIN_SAMPLES} (pairs are split by advantage sign and held "
                         f"out, and each part needs enough to fit), got {n!r}")
    rng = np.random.default_rng(seed)
    r = np.exp(rng.uniform(np.log(r_lo), np.log(r_hi), int(n)))
    A = rng.uniform(a_lo, a_hi, int(n))
    return r, A


def recorded_pairs(samples) -> tuple[np.ndarray, np.ndarray]:
    """Validate user-provided pairs: ``(r, A)`` arrays or an ``(n, 2)`` array, ``r > 0``, finite."""
    shape_hint = "samples must be a pair (r, A) of arrays or an array of shape (n, 2)"
    try:
        if isinstance(samples, tuple | list) and len(samples) == 2:
            r, A = (np.asarray(x, dtype=float).ravel() for x in samples)
        else:
            arr = np.asarray(samples, dtype=float)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise ValueError(shape_hint)
            r, A = arr[:, 0], arr[:, 1]
    except (TypeError, ValueError) as err:  # e.g. a dict, strings, ragged lists, complex numbers
        raise ValueError(f"{shape_hint}, got {type(samples).__name__}" + ("" if str(err) == shape_hint else
                                                                          f" ({err})")) from None
    if r.shape != A.shape:
        raise ValueError(f"samples: r and A have different lengths ({r.size} and {A.size})")
    if r.size < 20:
        raise ValueError(f"samples: need at least 20 (r, A) pairs to fit and hold out, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(A)) and np.all(r > 0)):
        raise ValueError("samples: r must be finite and > 0, A finite")
    return r, A


MIN_SAMPLES = 100


def _check_ranges(r_range, A_range):
    r_lo, r_hi = number_pair("r_range", r_range)
    a_lo, a_hi = number_pair("A_range", A_range)
    if not (0 < r_lo < r_hi):
        raise ValueError(f"r_range must satisfy 0 < low < high, got {r_range}")
    if not a_lo < a_hi:
        raise ValueError(f"A_range must satisfy low < high, got {A_range}")
    return (r_lo, r_hi), (a_lo, a_hi)


def check_traceable(drift, t=None) -> None:
    """Fail early, with the fix, when a drift cannot be traced by JAX (we need its r-derivative)."""
    def call(r, A):
        return drift(r, A) if t is None else drift(r, A, t)

    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    try:
        out = jax.eval_shape(call, spec, spec)
    except Exception as err:  # noqa: BLE001 - any tracing failure means the same thing to the user
        raise TypeError(
            f"the drift is not JAX-traceable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "Write it with jax.numpy operations (no float(), numpy calls or Python branches on r or A), "
            "e.g. jnp.where instead of if/else."
        ) from None
    if getattr(out, "shape", None) != (3,):
        raise TypeError(f"the drift must be elementwise: f(r, A) on shape (3,) gave shape {getattr(out, 'shape', None)}")


def evaluate_source(drift, r: np.ndarray, A: np.ndarray, t=None) -> tuple[np.ndarray, np.ndarray]:
    """The source drift and its exact ratio-derivative (autodiff, float64) at each pair."""
    def f(r1, a1):
        return drift(r1, a1) if t is None else drift(r1, a1, t)

    with jax.enable_x64(True):
        rj, aj = jnp.asarray(r, dtype=jnp.float64), jnp.asarray(A, dtype=jnp.float64)
        values = jax.jit(jax.vmap(f))(rj, aj)
        grads = jax.jit(jax.vmap(jax.grad(lambda a, b: f(a, b).astype(jnp.float64).sum())))(rj, aj)
        values, grads = np.asarray(values, dtype=float), np.asarray(grads, dtype=float)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(grads))):
        bad = int(np.argmax(~(np.isfinite(values) & np.isfinite(grads))))
        raise ValueError(
            f"the source drift is not finite at r={r[bad]:.4g}, A={A[bad]:.4g}; narrow r_range/A_range or fix the drift"
        )
    return values, grads


def make_samples(drift, n_samples: int, r_range, A_range, samples, holdout: float, seed: int, t=None) -> Samples:
    """Draw (or take) pairs, evaluate the source, and mark a random ``holdout`` fraction as held out."""
    if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) or not 0 < holdout < 1:
        raise ValueError(f"holdout must be a number in (0, 1), got {holdout!r}")
    r, A = sample_pairs(n_samples, r_range, A_range, seed) if samples is None else recorded_pairs(samples)
    f, dfdr = evaluate_source(drift, r, A, t)
    rng = np.random.default_rng(seed + 1)
    test = rng.random(r.size) < holdout
    return Samples(r, A, f, dfdr, test)
