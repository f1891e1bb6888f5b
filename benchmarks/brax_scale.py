"""PPO vs DPO (or any drifts) on Brax at the paper's scale: a GPU study, one vmapped call per drift.

    python benchmarks/brax_scale.py                                    # ant, the paper's preset (30M steps), 4 seeds
    python benchmarks/brax_scale.py --envs hopper --timesteps 200000 --seeds 2 --num-envs 64   # a CPU smoke run

Every agent uses the preset ``fit`` picks for the env (``PRESETS["brax:ant"]``: the paper's Brax PPO
hyperparameters, Table 1) unless ``--timesteps`` / ``--num-envs`` shrink it, and trains all seeds in
one vmapped, jitted call on the default JAX device. Reported per run: compile seconds (JAX's own
compile-duration events), training seconds, environment steps per second over all seeds, and the
deterministic evaluation return of each seed's final policy. Each run is written to the JSON file as
it finishes (``--resume`` finishes a stopped study); prints a table, writes a learning-curve PNG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    # benchmarks/mujoco.py shadows the ``mujoco`` package Brax imports: the folder leaves sys.path's
    # front (the repository root takes it, for ``agents``) and goes to its end (for _study).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    sys.path.append(str(Path(__file__).resolve().parent))

from _study import add_study_args, finite_or_none, make_agent, mean_se, open_study, plot_curves, plot_path, save_study  # noqa: E402


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling while it is installed (jax.monitoring events)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        from jax import monitoring

        self.seconds = 0.0
        monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name: str, duration: float, **_) -> None:
        if name in self.EVENTS:
            self.seconds += duration



def run(spec: str, name: str, args, clock: CompileClock) -> dict:
    import jax

    from agents.brax_env import from_brax

    env = from_brax(name, backend=args.backend)
    overrides = {}
    if args.timesteps:
        overrides["total_timesteps"] = args.timesteps
    if args.num_envs:  # fewer parallel envs, the preset's unroll length and minibatch count
        overrides["num_envs"] = args.num_envs
    agent = make_agent(spec, n_seeds=args.seeds, seed=0, progress=args.progress, **overrides)
    compile_before = clock.seconds
    start = time.perf_counter()
    agent.fit(env)
    wall = time.perf_counter() - start
    compile_s = clock.seconds - compile_before
    config = agent.config_
    steps = config.num_updates * config.batch_size * args.seeds
    finals = agent.evaluate(n_episodes=args.eval_episodes, seed=1000)["returns"].mean(axis=1)
    with np.errstate(all="ignore"):
        curve = np.nanmean(np.asarray(agent.history_["episode_return"], np.float64), axis=0)
    return {"wall_s": wall, "compile_s": compile_s, "train_s": wall - compile_s,
            "steps_per_s": steps / max(wall - compile_s, 1e-9), "timesteps_per_seed": config.num_updates * config.batch_size,
            "num_envs": config.num_envs, "device": str(jax.devices()[0]), "final_returns": finals.tolist(),
            "curve_t": agent.history_["timesteps"].tolist(), "curve_return": finite_or_none(curve)}


def _shim_device_put_replicated() -> None:
    """Brax 0.14's trainer calls ``jax.device_put_replicated``, which JAX 0.10 removed: the peer gets
    the documented replacement (a stacked copy per device, sharded over them)."""
    import jax
    import jax.numpy as jnp

    try:
        jax.device_put_replicated  # noqa: B018
        return
    except AttributeError:
        pass

    def device_put_replicated(x, devices):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        sharding = NamedSharding(Mesh(np.asarray(devices), ("d",)), PartitionSpec("d"))
        return jax.tree_util.tree_map(lambda a: jax.device_put(jnp.stack([jnp.asarray(a)] * len(devices)), sharding), x)

    jax.device_put_replicated = device_put_replicated


def run_brax_ppo(name: str, args, clock: CompileClock) -> dict:
    """The peer: Brax's own PPO trainer with the preset's hyperparameters, one seed after the other.

    Same budget, envs, unroll, minibatches, epochs, discount, GAE lambda, learning rate, entropy and
    value coefficients, clip range (our PPO drift's eps = 0.2), gradient clipping, reward scaling and
    observation normalisation as ``PRESETS["brax:NAME"]``; Brax's own networks (policy 32x4, value
    256x5, tanh-squashed Gaussian with a state-dependent scale) and its deterministic evaluator
    (128 episodes at the end). Its batch_size counts unrolls per minibatch.
    """
    import jax
    from brax import envs
    from brax.training.agents.ppo import train as brax_ppo

    from agents.config import PRESETS

    _shim_device_put_replicated()
    pre = {**PRESETS[f"brax:{name}" if f"brax:{name}" in PRESETS else "brax"]}
    if args.timesteps:
        pre["total_timesteps"] = args.timesteps
    if args.num_envs:
        pre["num_envs"] = args.num_envs
    batch = pre["num_envs"] * pre["num_steps"] // pre["num_minibatches"]
    seeds = args.peer_seeds if args.peer_seeds is not None else list(range(args.seeds))
    finals, curves, wall, compile_s = [], [], 0.0, 0.0
    for seed in seeds:
        points: list[tuple[int, float]] = []

        def record(step, metrics, points=points):
            points.append((int(step), float(metrics["eval/episode_reward"])))

        compile_before = clock.seconds
        start = time.perf_counter()
        brax_ppo.train(
            environment=envs.get_environment(name, backend=args.backend), num_timesteps=pre["total_timesteps"],
            episode_length=1000, action_repeat=1, num_envs=pre["num_envs"], batch_size=batch // pre["num_steps"],
            unroll_length=pre["num_steps"], num_minibatches=pre["num_minibatches"],
            num_updates_per_batch=pre["update_epochs"], discounting=pre["gamma"], gae_lambda=pre["gae_lambda"],
            learning_rate=pre["learning_rate"], entropy_cost=pre["ent_coef"], vf_loss_coefficient=0.5,
            clipping_epsilon=0.2, max_grad_norm=pre["max_grad_norm"], reward_scaling=pre["reward_scale"],
            normalize_observations=True, normalize_advantage=True, seed=seed,
            num_evals=11, num_eval_envs=128, deterministic_eval=True,
            progress_fn=record)
        wall += time.perf_counter() - start
        compile_s += clock.seconds - compile_before
        finals.append(points[-1][1])
        curves.append(points)
        print(f"  seed {seed}: {points[-1][1]:.1f}", flush=True)
    steps = pre["total_timesteps"] * len(seeds)
    curve_t = [t for t, _ in curves[0]]
    return {"wall_s": wall, "compile_s": compile_s, "train_s": wall - compile_s,
            "steps_per_s": steps / max(wall - compile_s, 1e-9), "timesteps_per_seed": pre["total_timesteps"],
            "num_envs": pre["num_envs"], "device": str(jax.devices()[0]), "final_returns": finals, "seeds": seeds,
            "curve_t": curve_t, "curve_return": [float(np.mean([c[i][1] for c in curves])) for i in range(len(curve_t))]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["ant"], help="Brax names (presets: ant, humanoid, halfcheetah, reacher)")
    p.add_argument("--drifts", nargs="+", default=["ppo", "dpo", "brax"],
                   help="ppo, dpo, label=drift-spec, or brax (the peer: Brax's own PPO trainer)")
    p.add_argument("--peer-seeds", type=int, nargs="+", default=None, help="the peer's seeds (default: 0..seeds-1)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=None, help="per seed (default: the preset's)")
    p.add_argument("--num-envs", type=int, default=None, help="parallel envs per seed (default: the preset's 2048)")
    p.add_argument("--backend", default="spring", help="Brax physics backend")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--progress", action="store_true", help="print training progress (steps, return, steps/s)")
    add_study_args(p, "benchmarks/results/brax.json", "docs/img/envs_brax.png")
    args = p.parse_args(argv)
    if args.plot is None:
        args.plot = plot_path(args.out, p.get_default("out"), "docs/img/envs_brax.png")

    labels = [d.split("=", 1)[0] for d in args.drifts]
    settings = {"timesteps": args.timesteps, "seeds": args.seeds, "num_envs": args.num_envs, "backend": args.backend,
                "eval_episodes": args.eval_episodes, "drifts": args.drifts}
    results = open_study(args.out, settings, args.resume, args.overwrite)
    clock = CompileClock()
    for name in args.envs:
        for spec, label in zip(args.drifts, labels, strict=True):
            key = f"{name}/{label}"
            if key in results["runs"]:
                continue
            print(f"{name} {label} ...", flush=True)
            r = results["runs"][key] = (run_brax_ppo(name, args, clock) if spec == "brax" else run(spec, name, args, clock))
            save_study(args.out, results)
            m, se = mean_se(r["final_returns"])
            print(f"  {m:9.1f} +- {se:7.1f}   compile {r['compile_s']:.0f} s, train {r['train_s']:.0f} s, "
                  f"{r['steps_per_s']:,.0f} steps/s", flush=True)

    print(f"\n{'env':12s} {'drift':6s} {'seeds':>5s} {'steps/seed':>11s} {'compile s':>9s} {'train s':>8s} "
          f"{'steps/s':>11s} {'final return (mean +- s.e.)':>30s}")
    for key, r in results["runs"].items():
        name, label = key.split("/")
        m, se = mean_se(r["final_returns"])
        print(f"{name:12s} {label:6s} {len(r['final_returns']):5d} {r['timesteps_per_seed']:11,d} {r['compile_s']:9.1f} "
              f"{r['train_s']:8.1f} {r['steps_per_s']:11,.0f} {m:22.1f} +- {se:.1f}")
    plot_curves(results, args.envs, lambda name: f"brax:{name} ({args.seeds} seeds)", args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return results


if __name__ == "__main__":
    main()
