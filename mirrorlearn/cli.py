"""The ``mirrorlearn`` command line: train | compare | meta-train | distill | check-drift | plot-drift."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from mirrorlearn._archive import save_figure_atomic, write_json_atomic
from mirrorlearn._outputs import output_folder, removed_if_empty_on_failure, user_path


def _out_dir(path: str | None, command: str, overwrite: bool) -> tuple[Path, bool]:
    return output_folder(path, lambda: Path("runs") / f"{command}-{datetime.now():%Y%m%d-%H%M%S}",
                         writes=("results.json", "learning_curves.png", "*.agent.npz"), overwrite=overwrite)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {value}")
    return value


def file_stem(name: str, taken: set[str]) -> str:
    """A file-name-safe, unique stem for a drift name (expressions hold '/', '*', spaces, ...)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "drift"
    unique, i = stem, 2
    while unique in taken:
        unique, i = f"{stem}-{i}", i + 1
    taken.add(unique)
    return unique


def _agent_for(drift: str, args) -> object:
    from agents.estimators import DPO, LPO, PPO, MirrorAgent

    kwargs = dict(args.overrides, total_timesteps=args.timesteps, n_seeds=args.seeds, seed=args.seed,
                  progress=not args.quiet, check_drift=not args.no_check_drift)
    classes = {"ppo": PPO, "dpo": DPO, "lpo": LPO}
    if drift.lower() in classes:
        return classes[drift.lower()](**kwargs)
    return MirrorAgent(drift=drift, **kwargs)


def _train_all(drifts: list[str], args, out: Path) -> list[dict]:
    """Train each drift, then save every agent file; results in order.

    Every drift is resolved and checked before the first one trains, so that a typo or an invalid drift
    in the list fails in a second, not after the drifts before it have trained. Agents are saved only
    after all have trained: a run that fails or is interrupted partway leaves no agent files of its own
    (which would make a corrected re-run refuse the folder) and, with ``--overwrite``, leaves the earlier
    run whole rather than some of its files replaced under a results.json that describes the old ones.
    """
    from agents.estimators import verify_drift

    for drift in drifts:
        agent = _agent_for(drift, args)
        resolved = agent.make_drift()
        if agent.check_drift:
            verify_drift(resolved)
    taken: set[str] = set()
    results, trained = [], []
    for drift in drifts:
        result, agent = _train_one(drift, args, out, taken)
        results.append(result)
        trained.append((agent, result["agent_file"]))
    for agent, path in trained:
        agent.save(path)
    return results


def _nanmean(x: np.ndarray) -> float:
    """Mean over the finite entries; NaN (written as null) when no seed finished an episode."""
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")


def _train_one(drift: str, args, out: Path, taken: set[str]) -> tuple[dict, object]:
    from mirrorlearn.reporting import smooth_returns

    agent = _agent_for(drift, args)
    start = time.perf_counter()
    agent.fit(args.env)
    seconds = time.perf_counter() - start
    ev = agent.evaluate(n_episodes=args.eval_episodes, seed=(args.seed + 10_000) % 2**32)  # unseen episodes
    per_seed = ev["returns"].mean(axis=1)
    name = agent.drift_.name
    agent_file = out / f"{file_stem(name, taken)}.agent.npz"
    curve = smooth_returns(agent.history_["episode_return"])
    return {
        "drift": name,
        "env": agent.env_id_,
        "seeds": int(agent.n_seeds_),
        "timesteps": int(agent.num_timesteps_),
        "eval_mean": float(per_seed.mean()),
        "eval_stderr": float(per_seed.std(ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else 0.0,
        "eval_per_seed": per_seed.tolist(),
        "final_train_return": _nanmean(curve[:, -1]),
        "fit_seconds": seconds,
        "steps_per_second": agent.num_timesteps_ * agent.n_seeds_ / seconds,
        "curve_x": agent.history_["timesteps"].tolist(),
        "curve_y": curve.tolist(),
        "agent_file": str(agent_file),
    }, agent


def _add_training_args(p: argparse.ArgumentParser, default_steps: int) -> None:
    p.add_argument("--env", default="CartPole-v1", help="environment id (gymnax, 'brax:NAME', 'gymnasium:ID')")
    p.add_argument("--timesteps", type=_positive_int, default=default_steps, help="environment steps per seed")
    p.add_argument("--seeds", type=_positive_int, default=4, help="independent seeds, trained in one vmapped call")
    p.add_argument("--seed", type=_seed, default=0, help="base random seed, in [0, 2**32)")
    p.add_argument("--eval-episodes", type=_positive_int, default=10, help="evaluation episodes per seed")
    p.add_argument("--no-check-drift", action="store_true",
                   help="train even if the drift fails the drift-condition checks (not a Mirror Learning update)")
    p.add_argument("--out", type=user_path, default=None, help="output folder (default: runs/<command>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_set_arg(p)
    p.add_argument("--cpu-threads", type=int, default=None, metavar="N",
                   help="XLA:CPU threads per computation (default: one per core). 1 trains a single seed "
                        "faster on a few cores, e.g. Gymnasium MuJoCo tasks (HalfCheetah here: its learner update "
                        "1.55x, its whole training 1.4x), but seeds sharded over the cores then share that one thread (half speed)")


def add_set_arg(p: argparse.ArgumentParser, what: str = "hyperparameters over the environment's preset") -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",  # repeated: accumulates
                   help=f"{what}, e.g. --set learning_rate=1e-3 num_envs=8 hidden_sizes='(128, 128)'")


def set_overrides(p: argparse.ArgumentParser, items: list[str]) -> dict:
    """``--set FIELD=VALUE ...`` as PPO config overrides; argparse's usage error for a bad item."""
    from agents.config import parse_override

    try:
        overrides = dict(parse_override(item) for item in items)
    except ValueError as err:
        p.error(f"--set: {err}")
    if "total_timesteps" in overrides:
        p.error("--set: use --timesteps for total_timesteps")
    return overrides


def _parse_training_args(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.overrides = set_overrides(p, args.set)
    if args.cpu_threads is not None:
        if args.cpu_threads < 1:
            p.error(f"--cpu-threads must be a positive number of threads, got {args.cpu_threads}")
        from agents.runtime import set_cpu_threads

        set_cpu_threads(args.cpu_threads)
    return args


def _agent_files(out: Path) -> set[str]:
    return {p.name for p in out.glob("*.agent.npz")}


def _write_outputs(results: list[dict], out: Path, title: str, earlier_agents: set[str]) -> None:
    from mirrorlearn.reporting import format_table, plot_learning_curves

    curves = {r["drift"]: (np.asarray(r["curve_x"]), np.asarray(r["curve_y"])) for r in results}
    fig = plot_learning_curves(curves, title=title)
    save_figure_atomic(fig, out / "learning_curves.png", dpi=120)
    write_json_atomic(out / "results.json", results)
    rows = [
        {
            "drift": r["drift"],
            "env": r["env"],
            "seeds": r["seeds"],
            "eval return (mean ± s.e.)": f"{r['eval_mean']:.1f} ± {r['eval_stderr']:.1f}",
            "final train return": r["final_train_return"],
            "fit s (incl. compile)": r["fit_seconds"],
            "steps/s (all seeds)": f"{r['steps_per_second']:,.0f}",
        }
        for r in results
    ]
    print(format_table(rows, list(rows[0])))
    # --overwrite replaces what this run writes; agent files of an earlier run's other drifts stay (a user's
    # files are never deleted) but are named, since results.json no longer lists them.
    stale = sorted(earlier_agents - {Path(r["agent_file"]).name for r in results})
    if stale:
        print(f"note: {out} also holds agent files of an earlier run that results.json does not list: "
              f"{', '.join(stale)}", file=sys.stderr)
    print(f"outputs written to {out}")


def cmd_train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mirrorlearn train", description="Train an agent with one drift over several seeds.")
    p.add_argument("--drift", default="dpo", help="ppo | dpo | lpo | a drift file | an expression in r and A")
    _add_training_args(p, 500_000)
    args = _parse_training_args(p, argv)
    out, existed = _out_dir(args.out, "train", args.overwrite)
    earlier = _agent_files(out)
    with removed_if_empty_on_failure(out, existed):
        results = _train_all([args.drift], args, out)
    _write_outputs(results, out, f"{args.drift} on {args.env}", earlier)
    return 0


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mirrorlearn compare",
        description="Train several drifts on one environment (default: PPO vs DPO on CartPole-v1, 4 seeds) "
        "and write a table, results.json and learning_curves.png.",
    )
    p.add_argument("--drifts", nargs="+", default=["ppo", "dpo"], help="drifts to compare")
    _add_training_args(p, 500_000)
    args = _parse_training_args(p, argv)
    repeated = sorted({d for d in args.drifts if args.drifts.count(d) > 1})
    if repeated:
        p.error(f"--drifts: {', '.join(map(repr, repeated))} given more than once; list each drift once")
    out, existed = _out_dir(args.out, "compare", args.overwrite)
    earlier = _agent_files(out)
    with removed_if_empty_on_failure(out, existed):
        results = _train_all(args.drifts, args, out)
    _write_outputs(results, out, f"{' vs '.join(args.drifts)} on {args.env}", earlier)
    return 0


def _delegate(module: str, function: str, extra: str):
    def run(argv: list[str]) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            print(f"this command needs {extra}: {err}", file=sys.stderr)
            return 2
        return int(getattr(mod, function)(argv) or 0)

    return run


COMMANDS = {
    "train": cmd_train,
    "compare": cmd_compare,
    "meta-train": _delegate("metalearn.cli", "main", "the meta extra (pip install 'mirrorlearn[meta]')"),
    "distill": _delegate("distill.cli", "main", "the sr extra (pip install 'mirrorlearn[sr]')"),
    "check-drift": _delegate("drifts.cli", "check_drift_main", "sympy"),
    "plot-drift": _delegate("drifts.cli", "plot_drift_main", "matplotlib"),
}


def use_all_cores() -> None:
    """Expose every CPU core as a JAX device (before JAX starts) so seeds train in parallel.

    XLA:CPU runs one executable's small matmuls on one core; with N host devices the agents shard
    their seed axis and N cores work at once. Only for this command-line process, and only when the
    user has not chosen XLA_FLAGS or a device count already.
    """
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()


def main(argv: list[str] | None = None) -> int:
    """The ``mirrorlearn`` command; Ctrl-C and a closed output pipe end it with one line, not a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import warnings

    # Warnings here are messages for the user: "warning: ...", not a file, line number and source line.
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # every output is written atomically, so an interrupted run leaves whole files (or none) behind
        print(f"\nmirrorlearn {argv[0] if argv else ''}: interrupted; files already written in --out are "
              "whole, nothing half-written is left", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mirrorlearn --help | head`: the reader has gone, which is not an error
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python would flush into the closed pipe again at exit
        return 0
    finally:
        warnings.formatwarning = formatwarning  # main() may be called in-process (tests, notebooks)


def _main(argv: list[str]) -> int:
    use_all_cores()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mirrorlearn {" + ",".join(COMMANDS) + "} [--help] ...\n\n"
              "  train        train an agent with one drift (JSON, PNG, saved agents)\n"
              "  compare      train and compare drifts side by side (default PPO vs DPO on CartPole-v1)\n"
              "  meta-train   discover a drift with evolution strategies (LPO)\n"
              "  distill      distil a drift into a closed-form expression\n"
              "  check-drift  check the three drift conditions (numeric and symbolic)\n"
              "  plot-drift   picture what a drift does to the policy update\n\n"
              "exit status: 0 done, 1 the run failed (or check-drift: the drift is invalid), 2 bad input\n"
              "mirrorlearn --version prints the version",
              file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from mirrorlearn import __version__

        print(f"mirrorlearn {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        print(f"unknown command {command!r}" + (f"; did you mean {close[0]!r}?" if close else ""), file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except BrokenPipeError:
        raise
    except (ValueError, TypeError, OSError) as err:  # bad input (ids, drifts, --out): 2, as argparse and distill
        print(f"mirrorlearn {command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # the run itself failed (e.g. training diverged)
        print(f"mirrorlearn {command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
