"""``mirrorlearn distill DRIFT --budget 60 --out DIR``: distil a drift, write JSON, drift file and PNG."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from mirrorlearn._outputs import user_path


def build_parser(prog: str = "mirrorlearn distill") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Distil a drift (name, drift file) into a closed form that is valid by construction; "
                    "writes result.json, distilled.drift and distill.png to --out and prints that folder.",
    )
    p.add_argument("drift", help="drift name (ppo, dpo, lpo, ...), a drift file or an expression in r and A")
    p.add_argument("--budget", type=float, default=60.0, help="seconds for the symbolic-regression search")
    p.add_argument("--out", type=user_path, help="output folder, created (default: a new runs/distill-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--backend", default="auto", help="auto | pyoperon | pysr | linear")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default="drift", choices=["drift", "derivative"])
    p.add_argument("--n-samples", type=int, default=4000)
    p.add_argument("--no-split", action="store_true", help="one model for both advantage signs")
    p.add_argument("--max-length", type=int, default=30)
    p.add_argument("--max-front", type=int, default=8, help="front members built and checked")
    p.add_argument("--t", type=float, default=None, help="training progress for temporal drifts")
    p.add_argument("--record-env", action="append", default=None, metavar="ENV",
                   help="fit on (r, A) pairs recorded while the drift trains on ENV (e.g. CartPole-v1) instead "
                        "of the default spread over r in [e^-1, e]: fidelity where agents actually live. Repeated, it "
                        "pools an equal share of pairs from each environment: --record-env CartPole-v1 --record-env "
                        "SpaceInvaders-MinAtar --record-steps 16384 --record-steps 131072 is the design of the closed "
                        "form that trains within 2%% of the shipped LPO on SpaceInvaders (docs/results.md)")
    p.add_argument("--record-steps", type=int, action="append", default=None, metavar="STEPS",
                   help="training steps of the recorded run (default 16384; needs --record-env). Given once, it is "
                        "every --record-env's budget; repeated, the budgets of the --record-env environments in order")
    from mirrorlearn.cli import add_set_arg

    add_set_arg(p, "the recorded run's hyperparameters over the environment's preset (small budgets on MinAtar "
                   "or Brax need a smaller batch)")
    return p


def record_pooled_pairs(drift, envs: list, steps: list[int], n_samples: int, seed: int, overrides: dict):
    """``n_samples`` (r, A) pairs recorded while ``drift`` trains, an equal share from each environment.

    Equal shares, not equal steps: an environment's ratios move further per update on some games than
    on others, and a pooled fit should weigh each environment's region of (r, A) alike."""
    import numpy as np

    from distill import record_training_pairs

    shares = [n_samples // len(envs) + (i < n_samples % len(envs)) for i in range(len(envs))]
    pairs = []
    for env, budget, share in zip(envs, steps, shares, strict=True):
        print(f"recording {share} (r, A) pairs while the drift trains on {env} for {budget} steps ...", file=sys.stderr)
        try:
            pairs.append(record_training_pairs(drift, env, share, total_timesteps=budget, seed=seed, **overrides))
        except ValueError as err:
            raise ValueError(f"recording pairs on --record-env {env!r} for --record-steps {budget}: {err}") from None
    return np.concatenate([r for r, _ in pairs]), np.concatenate([a for _, a in pairs])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mirrorlearn.cli import set_overrides

    overrides = set_overrides(parser, args.set)
    if overrides and args.record_env is None:
        parser.error("--set changes the recorded run's hyperparameters: it needs --record-env")
    if args.record_steps is not None and args.record_env is None:
        parser.error("--record-steps sets the recorded run's budget: it needs --record-env")
    envs = args.record_env or []
    steps = args.record_steps or [16_384]
    if len(steps) not in (1, len(envs)):
        parser.error(f"--record-steps is given {len(steps)} times for {len(envs)} --record-env environments: give it "
                     "once (one budget for all) or once per environment, in the same order")
    steps = steps * len(envs) if len(steps) == 1 else steps
    from distill import distill
    from distill.backends import resolve_backend
    from distill.core import _check_arguments
    from drifts import get_drift
    from mirrorlearn._archive import save_figure_atomic
    from mirrorlearn._outputs import output_folder, removed_if_empty_on_failure

    try:  # everything that can be checked is checked before a recorded run or a search takes minutes
        _check_arguments(args.budget, args.target, args.max_length, 1e-3, args.max_front, args.seed)
        resolve_backend(args.backend)
        drift = get_drift(args.drift)  # a typo is named now, not after minutes of recording
        out, existed = output_folder(args.out, lambda: Path("runs") / f"distill-{datetime.now():%Y%m%d-%H%M%S}",
                                     writes=("result.json", "distilled.drift", "distill.png"), overwrite=args.overwrite)
    except (ValueError, TypeError) as err:
        print(f"mirrorlearn distill: error: {err}", file=sys.stderr)
        return 2
    try:
        with removed_if_empty_on_failure(out, existed):
            samples = record_pooled_pairs(drift, envs, steps, args.n_samples, args.seed, overrides) if envs else None
            print(f"searching for closed forms ({args.backend} backend, {args.budget:g} s), then checking each ...",
                  file=sys.stderr)
            result = distill(drift, backend=args.backend, time_budget=args.budget, seed=args.seed,
                             n_samples=args.n_samples, target=args.target, split_advantage=not args.no_split,
                             max_length=args.max_length, max_front=args.max_front, t=args.t, samples=samples)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"mirrorlearn distill: error: {err}", file=sys.stderr)
        return 2
    result.save_json(out / "result.json")
    print(result.summary(), file=sys.stderr)
    if result.best is None:
        print("mirrorlearn distill: error: no valid candidate (see result.json); try a larger --budget or --backend linear "
              "(with --overwrite to reuse this --out)", file=sys.stderr)
        print(out)
        return 1
    result.save(out / "distilled.drift")
    fig = result.plot()
    save_figure_atomic(fig, out / "distill.png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
