"""The drift library: PPO, DPO (paper eq. 9), LPO (eq. 8), LPO-Zero, and ``get_drift``."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from drifts.base import Drift, register_family

LPO_SHIFT = 1e-6  # the paper's xi (its text): keeps f = 0 in a small neighbourhood of r = 1
# The paper's released code orders the eight inputs differently and shifts by 1e-4; a drift file records
# both (kwargs "inputs" and "shift") so that networks trained with that code load and check as they ran.
LPO_INPUT_ORDERS = {
    "mirrorlearn": (0, 1, 2, 3, 4, 5, 6, 7),   # 1-r, (1-r)^2, (1-r)A, (1-r)^2 A, log r, log^2 r, A log r, A log^2 r
    "paper-code": (4, 5, 0, 1, 6, 7, 2, 3),    # log r, log^2 r, 1-r, (1-r)^2, A log r, A log^2 r, A(1-r), A(1-r)^2
}
PAPER_CODE_SHIFT = 1e-4
# Drift files choose ``hidden``, and default weights are drawn before the file's are compared with them
# (LPO-Zero's middle layer is hidden x hidden), so a bound keeps a hostile file from exhausting memory.
MAX_HIDDEN = 4096


# -- argument checks shared by the constructors and by drift files (which rebuild through them) ----------
def _positive(family: str, name: str, value: Any) -> float:
    """``value`` as a float, or an exception unless it is a finite number > 0."""
    if isinstance(value, (bool, str, bytes)):  # float() would accept "0.2" and True
        raise TypeError(f"{family}: {name} must be a number > 0, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{family}: {name} must be a number > 0, got {type(value).__name__}") from None
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"{family}: {name} must be a finite number > 0, got {x}")
    return x


def _hidden(family: str, hidden: Any) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral):
        raise TypeError(f"{family}: hidden must be a whole number of units, got {hidden!r}")
    if not 1 <= hidden <= MAX_HIDDEN:
        raise ValueError(f"{family}: hidden must be between 1 and {MAX_HIDDEN} units, got {hidden}")
    return int(hidden)


def _seed(family: str, seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{family}: seed must be a whole number, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"{family}: seed must be in [0, 2**32), got {seed}")
    return int(seed)


def _flag(family: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):  # "yes" or 1 in a file is a mistake, not True
        raise TypeError(f"{family}: {name} must be True or False, got {value!r}")
    return bool(value)


def _check_weights(family: str, params: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    got = {k: tuple(jnp.shape(params[k])) for k in shapes if k in params} if isinstance(params, Mapping) else {}
    if got != shapes:
        raise ValueError(f"{family}: expected weights {shapes}, got {got or type(params).__name__}")


def _ppo_fn(params, r, A):
    eps = params["eps"]
    return jax.nn.relu((r - jnp.clip(r, 1.0 - eps, 1.0 + eps)) * A)


def ppo(eps: float = 0.2) -> Drift:
    """PPO's clip objective as a drift: ``ReLU((r - clip(r, 1-eps, 1+eps)) * A)`` (paper eq. 6)."""
    _positive("ppo", "eps", eps)
    return Drift("ppo", _ppo_fn, {"eps": jnp.asarray(eps, dtype=float)}, family="ppo")


def _check_ppo_params(params: Mapping[str, Any]) -> None:
    _positive("ppo", "eps", params["eps"])


def _dpo_fn(params, r, A):
    alpha, beta = params["alpha"], params["beta"]
    x_pos = (r - 1.0) * A
    x_neg = jnp.log(r) * A
    pos = jax.nn.relu(x_pos - alpha * jnp.tanh(x_pos / alpha))
    neg = jax.nn.relu(x_neg - beta * jnp.tanh(x_neg / beta))
    return jnp.where(A >= 0, pos, neg)


def dpo(alpha: float = 2.0, beta: float = 0.6) -> Drift:
    """Discovered Policy Optimisation's drift (paper eq. 9, ``alpha = 2``, ``beta = 0.6``)."""
    _check_dpo_params({"alpha": alpha, "beta": beta})
    params = {"alpha": jnp.asarray(alpha, dtype=float), "beta": jnp.asarray(beta, dtype=float)}
    return Drift("dpo", _dpo_fn, params, family="dpo")


def _check_dpo_params(params: Mapping[str, Any]) -> None:
    # alpha and beta divide inside tanh(x / alpha): zero gives NaN, a negative one breaks f >= 0
    _positive("dpo", "alpha", params["alpha"])
    _positive("dpo", "beta", params["beta"])


def lpo_features(r: jax.Array, A: jax.Array, t: jax.Array | None = None) -> jax.Array:
    """The eight LPO inputs (eq. 8), all zero at ``r = 1``; with ``t``, eight more: ``t`` times each."""
    r, A = jnp.broadcast_arrays(jnp.asarray(r), jnp.asarray(A))
    d = 1.0 - r
    lr = jnp.log(r)
    feats = [d, d**2, d * A, d**2 * A, lr, lr**2, lr * A, lr**2 * A]
    x = jnp.stack(feats, axis=-1)
    if t is not None:
        t = jnp.broadcast_to(jnp.asarray(t, dtype=x.dtype), r.shape)[..., None]
        x = jnp.concatenate([x, t * x], axis=-1)
    return x


@functools.cache  # one function object per shape, so compiled training is reused
def _lpo_fn_factory(temporal: bool, eps: float = 0.2, inputs: str = "mirrorlearn", shift: float = LPO_SHIFT) -> Callable:
    order = LPO_INPUT_ORDERS[inputs]
    permute = order != LPO_INPUT_ORDERS["mirrorlearn"]
    index = jnp.asarray(order + tuple(8 + i for i in order)) if temporal else jnp.asarray(order)

    def fn(params, r, A, t=None):
        x = lpo_features(r, A, t if temporal else None)
        if permute:
            x = x[..., index]
        hidden = jnp.tanh(x @ params["w1"])
        out = (hidden @ params["w2"])[..., 0]
        ppo_term = jax.nn.relu((r - jnp.clip(r, 1.0 - eps, 1.0 + eps)) * A)
        return jax.nn.relu(out - shift + ppo_term)

    return fn


def lpo(hidden: int = 128, temporal: bool = False, params: Any = None, seed: int = 0, init_scale: float = 0.0,
        eps: float = 0.2, inputs: str = "mirrorlearn", shift: float = LPO_SHIFT) -> Drift:
    """LPO's drift network (paper eq. 8): one hidden layer of tanh units, no biases, PPO-initialised.

    ``ReLU(net(x) - 1e-6 + PPO(r, A))`` with the eight ratio/advantage features ``x`` of
    :func:`lpo_features`. ``temporal=True`` gives TA-LPO (training progress ``t`` times each input).
    With ``init_scale=0`` (default) the output layer starts at zero so the drift is exactly PPO's
    (minus the 1e-6 shift); pass ``params`` to use meta-learned weights. ``eps`` (> 0) is the PPO term's
    clip range; ``hidden`` is at most :data:`MAX_HIDDEN`.

    ``inputs="paper-code"`` and ``shift=1e-4`` (:data:`PAPER_CODE_SHIFT`) read weights trained with the
    paper's released code, whose eight inputs come in another order (:data:`LPO_INPUT_ORDERS`) and whose
    shift is 1e-4 where its text says 1e-6; both are stored in drift files.
    """
    hidden, temporal = _hidden("lpo", hidden), _flag("lpo", "temporal", temporal)
    eps = _positive("lpo", "eps", eps)  # eps <= 0 would make f(1, A) = -eps A, not 0
    if inputs not in LPO_INPUT_ORDERS:
        raise ValueError(f"lpo: inputs must be one of {sorted(LPO_INPUT_ORDERS)}, got {inputs!r}")
    # shift > 0 keeps f = 0 near r = 1 (so df/dr = 0 there); at 0 the network's slope would show at r = 1
    shift = _positive("lpo", "shift", shift)
    n_in = 16 if temporal else 8
    if params is None:
        seed = _seed("lpo", seed)
        if isinstance(init_scale, (bool, str, bytes)) or not isinstance(init_scale, numbers.Real) \
                or not math.isfinite(init_scale) or init_scale < 0:
            raise ValueError(f"lpo: init_scale must be a finite number >= 0, got {init_scale!r}")
        params = lpo_init(jax.random.PRNGKey(seed), hidden=hidden, temporal=temporal, init_scale=init_scale)
    _check_weights("lpo", params, {"w1": (n_in, hidden), "w2": (hidden, 1)})
    if shift > 0.1:
        raise ValueError(f"lpo: shift={shift} would hide the network's output near r = 1; the paper uses 1e-6 "
                         f"(text) or 1e-4 (code)")
    name = "ta-lpo" if temporal else "lpo"
    kwargs = {"hidden": hidden, "temporal": temporal, "eps": eps}
    if inputs != "mirrorlearn" or shift != LPO_SHIFT:  # recorded only when set: earlier files keep their kwargs
        kwargs.update(inputs=inputs, shift=shift)
    return Drift(name, _lpo_fn_factory(temporal, eps, inputs, shift), params, temporal=temporal, family="lpo",
                 kwargs=kwargs)


def lpo_init(key: jax.Array, hidden: int = 128, temporal: bool = False, init_scale: float = 0.0) -> dict:
    """Initial LPO weights: LeCun-normal input layer, output layer ``init_scale``-scaled normal."""
    n_in = 16 if temporal else 8
    k1, k2 = jax.random.split(key)
    w1 = jax.random.normal(k1, (n_in, hidden)) / jnp.sqrt(n_in)
    w2 = init_scale * jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden)
    return {"w1": w1.astype(float), "w2": w2.astype(float)}


@functools.cache
def _lpo_zero_fn_factory(temporal: bool) -> Callable:
    def fn(params, r, A, t=None):
        x = lpo_features(r, A, t if temporal else None)
        h = jax.nn.relu(x @ params["w1"])
        h = jax.nn.relu(h @ params["w2"])
        out = (h @ params["w3"])[..., 0]
        return jax.nn.relu(out - LPO_SHIFT)

    return fn


def lpo_zero(hidden: int = 256, temporal: bool = False, params: Any = None, seed: int = 0) -> Drift:
    """LPO-Zero: two hidden layers of ReLU units, no biases, no PPO term (learned from scratch)."""
    hidden, temporal = _hidden("lpo_zero", hidden), _flag("lpo_zero", "temporal", temporal)
    n_in = 16 if temporal else 8
    if params is None:
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(_seed("lpo_zero", seed)), 3)
        params = {
            "w1": (jax.random.normal(k1, (n_in, hidden)) * jnp.sqrt(2.0 / n_in)).astype(float),
            "w2": (jax.random.normal(k2, (hidden, hidden)) * jnp.sqrt(2.0 / hidden)).astype(float),
            "w3": (jax.random.normal(k3, (hidden, 1)) * jnp.sqrt(1.0 / hidden)).astype(float),
        }
    _check_weights("lpo_zero", params, {"w1": (n_in, hidden), "w2": (hidden, hidden), "w3": (hidden, 1)})
    name = "ta-lpo-zero" if temporal else "lpo-zero"
    return Drift(name, _lpo_zero_fn_factory(temporal), params, temporal=temporal, family="lpo_zero",
                 kwargs={"hidden": hidden, "temporal": temporal})


def from_callable(fn: Callable, name: str | None = None) -> Drift:
    """Wrap a user function ``f(r, A)`` (or ``f(r, A, t)``) as a parameter-free ``Drift``."""
    if not callable(fn):
        raise TypeError(f"expected a callable f(r, A), got {type(fn).__name__}")
    try:
        n_args = len([p for p in inspect.signature(fn).parameters.values()
                      if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        n_args = 2
    temporal = n_args == 3
    if temporal:
        def wrapped(params, r, A, t):
            return fn(r, A, t)
    else:
        def wrapped(params, r, A):
            return fn(r, A)
    return Drift(name or getattr(fn, "__name__", "custom"), wrapped, {}, temporal=temporal)


register_family("ppo", ppo, check_params=_check_ppo_params)
register_family("dpo", dpo, check_params=_check_dpo_params)
register_family("lpo", lambda hidden=128, temporal=False, eps=0.2, inputs="mirrorlearn", shift=LPO_SHIFT: lpo(
    hidden=hidden, temporal=temporal, eps=eps, inputs=inputs, shift=shift))
register_family("lpo_zero", lambda hidden=256, temporal=False: lpo_zero(hidden=hidden, temporal=temporal))

_NAMED: dict[str, Callable[[], Drift]] = {
    "ppo": ppo,
    "dpo": dpo,
    "lpo": lambda: default_lpo(),
    "lpo-cartpole": lambda: cartpole_lpo(),
    "lpo-init": lpo,
    "lpo_zero": lpo_zero,
    "lpo-zero": lpo_zero,
    "ta-lpo": lambda: lpo(temporal=True),
}


def default_lpo() -> Drift:
    """The meta-trained LPO shipped with the package, or the PPO-initialised network if none ships."""
    shipped = Path(__file__).parent / "data" / "lpo.drift"
    if shipped.exists():
        return Drift.load(shipped)
    return lpo()


def cartpole_lpo() -> Drift:
    """The first LPO meta-trained here: CartPole-v1 alone, 16,384-step inner runs (docs/results.md).
    Kept for comparison: it doubles PPO's return at that budget and does not transfer."""
    return Drift.load(Path(__file__).parent / "data" / "lpo_cartpole.drift")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def get_drift(spec: str | os.PathLike | Drift | Callable) -> Drift:
    """Resolve a name (``"ppo"``, ``"dpo"``, ``"lpo"``...), a drift file path, an expression string in
    ``r`` and ``A`` (e.g. ``"Max(0, (r - 1)**2 * A)"``, parsed safely), a Drift or a callable."""
    if isinstance(spec, Drift):
        return spec
    if isinstance(spec, os.PathLike):  # a path object is always a file, even one named like a built-in drift
        if not os.path.exists(spec):
            raise FileNotFoundError(f"no such drift file: {os.fspath(spec)!r}")
        return Drift.load(spec)
    if isinstance(spec, str):
        key = spec.strip()  # " ppo" from a config file or a shell quote is still PPO
        if key.lower() in _NAMED:
            return _NAMED[key.lower()]()
        if os.path.exists(key):
            return Drift.load(key)
        if key.endswith((".drift", ".npz")):
            raise FileNotFoundError(f"no such drift file: {key!r}")  # not an expression with '/' and '-' in it
        # operators, a bare variable or a bare number ("0": no drift at all, plain policy gradient)
        if any(ch in key for ch in "()*+-/") or key in ("r", "A", "t") or _is_number(key):
            from drifts.symbolic import to_jax  # an expression in r and A, parsed safely (no eval)

            try:
                return to_jax(key)
            except ValueError as err:
                if os.sep in key or "/" in key:  # e.g. 'runs/lpo/drift': most likely a path that does not exist
                    raise FileNotFoundError(f"no such drift file: {key!r} (nor is it an expression in r and A: "
                                            f"{err})") from None
                raise
        close = difflib.get_close_matches(key.lower(), list(_NAMED), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown drift {key!r}: not a drift name ({', '.join(sorted(_NAMED))}) nor an existing file.{hint}"
        )
    if callable(spec):
        return from_callable(spec)
    raise TypeError(f"cannot make a drift from {type(spec).__name__}; pass a name, a file path, a Drift or f(r, A)")
