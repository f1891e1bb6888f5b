"""``mirrorlearn meta-train``: discover a drift with evolution strategies (resumes if --out holds a run)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mirrorlearn._outputs import user_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirrorlearn meta-train",
        description="Meta-train a drift (LPO by default) with Open-ES; PPO is the inner loop. Writes the "
                    "checkpoint, history.json, meta_curve.png, drift.drift (and drift.png) to --out; "
                    "re-running with the same --out resumes the run.")
    p.add_argument("--env", action="append", default=None,
                   help="training environment id (repeat for several; default CartPole-v1)")
    p.add_argument("--generations", type=int, default=100, help="ES generations in all (default 100; a resumed run "
                   "continues up to this many)")
    p.add_argument("--population", type=int, default=32, help="ES population size (even: antithetic pairs)")
    p.add_argument("--timesteps", type=int, default=100_000, help="inner PPO budget per run")
    p.add_argument("--drift", default="lpo", help="genome: lpo | ta-lpo | lpo_zero | dpo | a drift file")
    p.add_argument("--out", type=user_path, required=True, help="run folder (checkpoint and outputs)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run's outputs but no checkpoint to resume")
    p.add_argument("--inner-seeds", type=int, default=1, help="inner PPO runs per member and environment")
    p.add_argument("--sigma-init", type=float, default=0.04, help="ES perturbation scale at the start (0.04)")
    p.add_argument("--sigma-decay", type=float, default=0.999, help="sigma's factor per generation, in (0, 1] (0.999)")
    p.add_argument("--sigma-limit", type=float, default=0.01, help="the floor sigma never decays below (0.01)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate on the ES mean")
    p.add_argument("--fitness", choices=("eval", "train", "curve", "eval+curve"), default="eval",
                   help="score members by deterministic evaluation episodes (eval), by training returns over "
                   "the last 10%% of updates (train) or the last half (curve), or by the mean of eval and curve")
    p.add_argument("--vary", action="append", default=[], metavar="FIELD=LOW:HIGH|A,B,C",
                   help="randomise an inner setting over a range or choices (repeat for several), e.g. "
                   "--vary budget=1:8 (1x-8x --timesteps) --vary learning_rate=1e-4:1e-3 --vary update_epochs=2,4,8; "
                   "a pool of --tasks settings is drawn once and each generation trains on one of them")
    p.add_argument("--tasks", type=int, default=8, help="size of the pool of inner settings drawn for --vary (8)")
    p.add_argument("--combine", choices=("mean", "min"), default="mean",
                   help="fitness over several --env: the mean of the normalised scores, or the worst one (mean)")
    p.add_argument("--eval-episodes", type=int, default=16, help="episodes per member evaluation (16)")
    p.add_argument("--eval-every", type=int, default=10, help="evaluate the ES mean every K generations (0: never)")
    p.add_argument("--chunk-size", type=int, default=None, help="members per compiled call (memory bound)")
    p.add_argument("--seed", type=int, default=0, help="seeds the ES and the inner runs (0)")
    p.add_argument("--quiet", action="store_true", help="no per-generation progress lines")
    d = p.add_argument_group("several processes (jax.distributed; every process runs the same command)")
    d.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="process 0's address, e.g. 10.0.0.1:5000 (with --num-processes and --process-id)")
    d.add_argument("--num-processes", type=int, default=None, help="how many processes take part")
    d.add_argument("--process-id", type=int, default=None, help="this process's index, 0 to N-1 (0 writes --out)")
    d.add_argument("--distributed", action="store_true",
                   help="join a cluster described by the environment (SLURM, Open MPI, TPU pods, or "
                   "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), without the three flags above")
    d.add_argument("--heartbeat-timeout", type=int, default=30, metavar="S",
                   help="seconds without a peer's heartbeat before the others stop with an error (30)")
    from mirrorlearn.cli import add_set_arg

    add_set_arg(p, "the inner PPO's hyperparameters over the environment's preset (small budgets on MinAtar "
                   "or Brax need a smaller batch)")
    return p


def resolve_drift_arg(drift: str):
    """``--drift``: a genome name first, then a drift file (as ``drifts.get_drift`` does).

    Names win so that a folder called ``lpo`` (e.g. a previous ``--out lpo``) cannot shadow the genome.
    """
    from metalearn.trainer import is_genome_name

    if is_genome_name(drift):
        return drift
    if Path(drift).suffix == ".drift" or Path(drift).exists():
        from drifts import Drift

        return Drift.load(drift)
    return drift  # not a name nor a file: MetaTrainer's validation names the known genomes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mirrorlearn.cli import set_overrides

    overrides = set_overrides(parser, args.set)
    multi = args.distributed or any(v is not None for v in (args.coordinator, args.num_processes, args.process_id))
    if multi:
        from metalearn import distributed

        try:  # before any other JAX work
            distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   heartbeat_timeout_s=args.heartbeat_timeout)
        except (ValueError, RuntimeError) as err:
            print(f"mirrorlearn meta-train: error: {err}", file=sys.stderr)
            return 2
        if not distributed.is_writer():  # process 0 alone writes --out, prints the results
            args.quiet = True
    writer = not multi or distributed.is_writer()
    from metalearn.tasks import parse_vary

    try:
        ranges = dict(parse_vary(item) for item in args.vary)
    except ValueError as err:
        parser.error(f"--vary: {err}")
    from metalearn.checkpoint import checkpoint_path
    from metalearn.trainer import OUTPUT_FILES
    from mirrorlearn._outputs import output_folder

    created = None
    if writer and not checkpoint_path(args.out).exists():  # a fresh run: never over an earlier run's learned drift
        try:
            out, existed = output_folder(args.out, lambda: Path(args.out), overwrite=args.overwrite,
                                         writes=OUTPUT_FILES)
        except ValueError as err:
            print(f"mirrorlearn meta-train: error: {err}", file=sys.stderr)
            return 2
        created = None if existed else out

    def drop_if_empty() -> None:  # a run refused before it wrote anything leaves no empty folder behind
        if created is not None and created.is_dir() and not any(created.iterdir()):
            created.rmdir()
    from agents.estimators import PPO
    from metalearn.distributed import PeerLostError
    from metalearn.es import MissingDependencyError
    from metalearn.trainer import MetaTrainer, MetaTrainingDivergedError

    try:  # ConfigMismatchError is a ValueError; MissingDependencyError names the pip command
        trainer = MetaTrainer(
            envs=args.env or ["CartPole-v1"], inner=PPO(total_timesteps=args.timesteps, **overrides),
            drift=resolve_drift_arg(args.drift), population_size=args.population, generations=args.generations,
            sigma_init=args.sigma_init, sigma_decay=args.sigma_decay, sigma_limit=args.sigma_limit,
            learning_rate=args.lr, n_inner_seeds=args.inner_seeds, fitness=args.fitness,
            n_eval_episodes=args.eval_episodes, eval_every=args.eval_every, checkpoint_dir=args.out, seed=args.seed,
            progress=not args.quiet, chunk_size=args.chunk_size, inner_ranges=ranges or None, n_tasks=args.tasks,
            combine=args.combine)
        learned = trainer.fit(overwrite=args.overwrite)
    except (ValueError, OSError, MissingDependencyError) as err:
        drop_if_empty()
        print(f"mirrorlearn meta-train: error: {err}", file=sys.stderr)
        return 2
    except MetaTrainingDivergedError as err:
        print(f"mirrorlearn meta-train: error: {err}", file=sys.stderr)
        return 1
    except PeerLostError as err:
        print(f"mirrorlearn meta-train: error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # jax.distributed's shutdown would wait for the lost peer and then abort the process: leave at once
        os._exit(3)
    except KeyboardInterrupt:  # the checkpoint holds every completed generation: say how to go on
        if not checkpoint_path(args.out).exists():  # stopped during compilation or the baselines
            drop_if_empty()
            print("\nmirrorlearn meta-train: interrupted before the first generation finished; nothing was saved.",
                  file=sys.stderr)
            return 130
        print(f"\nmirrorlearn meta-train: interrupted. {args.out} keeps every completed generation; run the same command "
              "again to resume from the last one.", file=sys.stderr)
        return 130
    if not writer:
        print(f"mirrorlearn meta-train: process {distributed.process_index()} done (process 0 wrote {args.out})",
              file=sys.stderr)
        return 0
    out = Path(args.out)
    summary = {"drift": str(out / "drift.drift"), "generations": trainer.generation_,
               "baselines": trainer.baselines_, "last": trainer.history_[-1] if trainer.history_ else None}
    print(json.dumps(summary, indent=1))
    print(f"outputs in {out.resolve()}  (load with drifts.get_drift({str(out / 'drift.drift')!r}))")
    del learned
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
