"""The ``Drift`` value: a drift function together with its parameters.

A drift is a function ``f(r, A)`` of the probability ratio ``r`` and the (normalised) advantage ``A``
that penalises moving away from the old policy. Mirror Learning requires, for all ``r > 0`` and ``A``:
(1) ``f >= 0``, (2) ``f(1, A) = 0``, (3) ``df/dr (1, A) = 0``.

Like an optax transformation, a ``Drift`` is a tiny immutable value: a pure function ``fn`` plus its
parameters ``params`` (a pytree of nested dicts of arrays). Keeping the parameters separate from the
function is what lets the PPO core take ``drift_params`` as a traced argument, so a whole evolution
strategies population of drifts can be vmapped through one compiled training function.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mirrorlearn._archive import ArchiveError, flatten_tree, read_archive, unflatten_tree, write_archive

DRIFT_FILE_KIND = "mirrorlearn.drift"
DRIFT_FILE_VERSION = 1

# family name -> builder(**kwargs) -> Drift (with default params). Used to rebuild a drift from a file.
_FAMILIES: dict[str, Callable[..., Drift]] = {}
# family name -> check_params(params), raising ValueError when loaded params break the family's rules.
_PARAM_CHECKS: dict[str, Callable[[Any], None]] = {}


def register_family(name: str, builder: Callable[..., Drift],
                    check_params: Callable[[Any], None] | None = None) -> None:
    """Register a drift family so that drifts of it can be saved to and loaded from files.

    ``builder(**kwargs)`` must validate its arguments (file kwargs reach it unchecked).
    ``check_params(params)`` should raise ``ValueError`` for parameter values the family's constructor
    would refuse (e.g. PPO's ``eps <= 0``); loaded parameters go through it, since a file's parameters
    never pass through the constructor.
    """
    _FAMILIES[name] = builder
    if check_params is None:
        _PARAM_CHECKS.pop(name, None)
    else:
        _PARAM_CHECKS[name] = check_params


@dataclasses.dataclass(frozen=True, eq=False)  # identity equality: params are arrays
class Drift:
    """A drift function ``fn(params, r, A)`` (or ``fn(params, r, A, t)`` if ``temporal``) and its params.

    ``family`` and ``kwargs`` say how to rebuild ``fn`` from a file (``None`` for arbitrary callables,
    which can be used but not saved).
    """

    name: str
    fn: Callable[..., jax.Array]
    params: Any = None
    temporal: bool = False
    family: str | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    # -- evaluation -----------------------------------------------------------------------------------
    def apply(self, params: Any, r: jax.Array, A: jax.Array, t: jax.Array | float | None = None) -> jax.Array:
        """Evaluate with explicit ``params`` (the form the PPO core and ES use). ``t`` in [0, 1]."""
        if self.temporal:
            t = jnp.zeros_like(jnp.asarray(r, dtype=jnp.result_type(float))) if t is None else t
            return self.fn(params, r, A, t)
        return self.fn(params, r, A)

    def __call__(self, r: jax.Array, A: jax.Array, t: jax.Array | float | None = None) -> jax.Array:
        """Elementwise, broadcasting, jax-traceable evaluation with this drift's own parameters."""
        try:
            r, A = jnp.asarray(r), jnp.asarray(A)
        except TypeError:
            raise TypeError(f"drift {self.name!r}: r and A must be numbers or arrays of numbers, got "
                            f"{type(r).__name__} and {type(A).__name__}") from None
        if t is not None:
            if not self.temporal:  # silently ignoring it would hide a mix-up of drifts
                raise ValueError(f"drift {self.name!r} takes no training progress t; call it as drift(r, A)")
            if isinstance(t, (numbers.Real, np.ndarray)) and np.ndim(t) == 0:
                t = check_progress(t)
            t = jnp.asarray(t)
        return self.apply(self.params, r, A, t)

    def replace(self, **changes: Any) -> Drift:
        return dataclasses.replace(self, **changes)

    def with_params(self, params: Any) -> Drift:
        return dataclasses.replace(self, params=params)

    def __repr__(self) -> str:
        extra = ", temporal" if self.temporal else ""
        n = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(self.params))
        return f"Drift({self.name!r}, {n} params{extra})"

    # -- files ------------------------------------------------------------------------------------------
    @property
    def savable(self) -> bool:
        return self.family is not None and self.family in _FAMILIES

    def to_spec(self) -> dict:
        """JSON-serialisable description (without params) from which ``fn`` can be rebuilt."""
        if not self.savable:
            raise ValueError(
                f"drift {self.name!r} wraps an arbitrary Python callable, which cannot be saved safely. "
                "Save a registered family (ppo, dpo, lpo, lpo_zero, expression) or register yours with "
                "drifts.register_family."
            )
        return {"name": self.name, "family": self.family, "kwargs": dict(self.kwargs), "temporal": self.temporal}

    def save(self, path: str | os.PathLike, extra_meta: Mapping[str, Any] | None = None) -> Path:
        """Write a versioned, pickle-free drift file (atomic)."""
        meta = {
            "kind": DRIFT_FILE_KIND,
            "format_version": DRIFT_FILE_VERSION,
            "package_version": _package_version(),
            "drift": self.to_spec(),
            "extra": dict(extra_meta or {}),
        }
        if self.params is not None and not isinstance(self.params, Mapping):
            raise TypeError("drift params must be a dict (nested dicts of arrays) to be saved")
        params = jax.device_get(self.params)
        source = f"drift {self.name!r}"
        try:  # what load would refuse is not written: a saved file must load back
            checked_params(drift_from_spec(meta["drift"], source=source), params, source, fix="")
        except (ArchiveError, ValueError) as err:
            raise ValueError(f"not saved to {os.fspath(path)!r}: {err}") from None
        arrays = {f"params/{k}": v for k, v in flatten_tree(params).items()}
        return write_archive(path, meta, arrays)

    @staticmethod
    def load(path: str | os.PathLike) -> Drift:
        """Read a drift file; :class:`~mirrorlearn._archive.ArchiveError` names the file and the problem."""
        path = os.path.expanduser(path)  # as read_archive does, so that the folder check below sees the same path
        if os.path.isdir(path):  # the archive reader would call a folder a corrupted file
            inside = os.path.join(path, "drift.drift")
            hint = f"; the drift a meta-train run learned is {inside!r}" if os.path.isfile(inside) else ""
            raise IsADirectoryError(f"{os.fspath(path)!r} is a folder, not a drift file{hint}")
        meta, arrays = read_archive(path, DRIFT_FILE_KIND, DRIFT_FILE_VERSION)
        source = str(path)
        try:
            drift = drift_from_spec(meta.get("drift"), source=source)
            params = unflatten_tree({k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")})
        except ArchiveError as err:
            raise ArchiveError(f"{source}: {err}") from None
        except ValueError as err:  # drift_from_spec's messages already name the file
            raise ArchiveError(str(err)) from None
        return drift.with_params(checked_params(drift, params, source))


def drift_from_spec(spec: Any, source: str = "spec") -> Drift:
    """Rebuild a drift (with its family's default params) from :meth:`Drift.to_spec` output."""
    if not isinstance(spec, Mapping) or "family" not in spec:
        raise ValueError(f"{source}: drift description is missing or malformed")
    family = spec["family"]
    if not isinstance(family, str):
        raise ValueError(f"{source}: drift family must be a name (a string), got {type(family).__name__}")
    if family not in _FAMILIES:
        _load_builtin_families()
    if family not in _FAMILIES:
        raise ValueError(f"{source}: unknown drift family {family!r}; known: {sorted(_FAMILIES)}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{source}: drift kwargs must be a mapping")
    try:  # the builders validate their arguments (types and ranges) before building anything
        drift = _FAMILIES[family](**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: invalid arguments for drift family {family!r} ({err})") from None
    if "name" in spec:
        drift = drift.replace(name=str(spec["name"]))
    return drift


def checked_params(drift: Drift, loaded: Any, source: str, fix: str = "; re-save the drift from a valid one") -> Any:
    """Loaded parameters for ``drift``'s family: same keys and shapes as its template, real finite numbers,
    and values its constructor would accept. Raises :class:`ArchiveError` naming ``source`` (and ``fix``)."""
    params = _match_params(drift.params, loaded, source)
    check = _PARAM_CHECKS.get(drift.family or "")
    if check is not None:
        try:
            check(params)
        except (ValueError, TypeError) as err:
            raise ArchiveError(f"{source}: invalid drift parameters ({err}){fix}") from None
    return params


def _match_params(template: Any, loaded: dict, source: str) -> Any:
    """Check a loaded params tree against the family's template (same keys and shapes, real finite values)."""
    flat_t = flatten_tree(jax.device_get(template))
    flat_l = flatten_tree(loaded)
    if set(flat_t) != set(flat_l):
        raise ArchiveError(
            f"{source}: drift parameters do not match the family (expected {sorted(flat_t)}, got {sorted(flat_l)})"
        )
    for key, ref in flat_t.items():
        value = flat_l[key]
        # strings would crash isfinite and complex numbers would silently lose their imaginary part
        if value.dtype == np.bool_ or not (np.issubdtype(value.dtype, np.floating)
                                           or np.issubdtype(value.dtype, np.integer)):
            raise ArchiveError(f"{source}: parameter {key} has dtype {value.dtype}, expected real numbers")
        if value.shape != ref.shape:
            raise ArchiveError(f"{source}: parameter {key} has shape {value.shape}, expected {ref.shape}")
        if not np.all(np.isfinite(value)):
            raise ArchiveError(f"{source}: parameter {key} contains NaN or inf")
    if not flat_l:
        return template
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.result_type(float)), unflatten_tree(flat_l))


def _package_version() -> str:
    from mirrorlearn import __version__

    return __version__


def _load_builtin_families() -> None:
    # The expression family lives in drifts.symbolic (it needs sympy); import registers it.
    import importlib

    for module in ("drifts.library", "drifts.symbolic"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def number_pair(name: str, value: Any) -> tuple[float, float]:
    """``(low, high)`` as two finite floats, or a ValueError naming ``name`` (ranges of r, log r and A)."""
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return lo, hi


def check_progress(t: Any) -> float:
    """``t`` (training progress, what temporal drifts take) as a float in [0, 1], or a ValueError naming it."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t <= 1:  # NaN fails the range too
        raise ValueError(f"t is training progress and must be a number in [0, 1], got {t!r}")
    return float(t)
