"""The benchmark scripts' own bookkeeping (their studies run for hours, so only the pure parts here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str, file: str):
    # Appended, not prepended: benchmarks/mujoco.py must not shadow the mujoco package.
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sb3_run(seed: int, final: float, curve: list) -> dict:
    return {"wall_s": 10.0 * (seed + 1), "final_returns": [final], "curve_t": [1.0, 2.0, 3.0], "curve_return": curve,
            "per_seed": [{"seed": seed, "wall_s": 10.0 * (seed + 1), "final_return": final}], "seed_curves": [curve]}


def test_merge_sb3_joins_seeds_run_apart():
    bench = _load("bench_mujoco", "mujoco.py")
    old = {"wall_s": 5.0, "final_returns": [1.0], "curve_t": [1.0, 2.0, 3.0], "curve_return": [0.0, None, 2.0]}  # session 2
    merged = bench.merge_sb3(old, _sb3_run(1, 3.0, [2.0, 4.0, None]))
    merged = bench.merge_sb3(merged, _sb3_run(2, 5.0, [4.0, 2.0, 6.0]))
    assert merged["final_returns"] == [1.0, 3.0, 5.0]
    assert merged["wall_s"] == pytest.approx(5.0 + 20.0 + 30.0)
    assert [s["seed"] for s in merged["per_seed"]] == [0, 1, 2]
    assert merged["curve_return"] == pytest.approx([2.0, 3.0, 4.0])  # per point, over the seeds that have one
    with pytest.raises(ValueError, match="run twice"):
        bench.merge_sb3(merged, _sb3_run(2, 5.0, [1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="different budgets"):
        bench.merge_sb3(merged, {**_sb3_run(3, 1.0, [1.0, 1.0]), "curve_t": [1.0, 2.0]})


def test_side_studies_never_overwrite_the_docs_figure_or_an_existing_study(tmp_path):
    import json

    _load("bench_minatar", "minatar.py")  # puts benchmarks/ on sys.path
    from _study import open_study, plot_path

    default, figure = "benchmarks/results/minatar.json", "docs/img/envs_minatar.png"
    assert plot_path(default, default, figure) == figure
    assert plot_path("./benchmarks/results/minatar.json", default, figure) == figure
    assert plot_path("benchmarks/results/minatar_cpu_si.json", default, figure) == "benchmarks/results/minatar_cpu_si.png"
    study = tmp_path / "study.json"
    assert open_study(str(study), {"seeds": 2}, resume=False) == {"settings": {"seeds": 2}, "runs": {}}
    study.write_text(json.dumps({"settings": {"seeds": 2}, "runs": {"a": 1}}))
    with pytest.raises(SystemExit, match="already holds a study.*--overwrite"):
        open_study(str(study), {"seeds": 4}, resume=False)
    assert open_study(str(study), {"seeds": 2}, resume=True)["runs"] == {"a": 1}
    with pytest.raises(SystemExit, match="other settings"):
        open_study(str(study), {"seeds": 4}, resume=True)
    assert open_study(str(study), {"seeds": 4}, resume=False, overwrite=True)["runs"] == {}


def _minatar_study(label: str, seed: int, finals: list, curve: list, timesteps: int = 100) -> dict:
    settings = {"timesteps": timesteps, "seeds": len(finals), "eval_episodes": 2, "drifts": [label]}
    if seed:
        settings["seed"] = seed
    run = {"wall_s": 1.0 + seed, "final_returns": finals, "train_returns": [f - 1 for f in finals],
           "curve_t": [10, 20], "curve_return": curve}
    return {"settings": settings, "runs": {f"G/{label}": run, "G/verdict": "yes"}}


def test_merge_minatar_studies_joins_seed_batches_and_drifts_run_apart():
    bench = _load("bench_minatar", "minatar.py")
    merged = bench.merge_studies([_minatar_study("lpo", 0, [1.0, 3.0], [2.0, None]),
                                  _minatar_study("lpo", 1, [5.0, 7.0, 9.0], [4.0, 6.0]),
                                  _minatar_study("form", 0, [2.0], [1.0, 1.0])])
    lpo = merged["runs"]["G/lpo"]
    assert lpo["final_returns"] == [1.0, 3.0, 5.0, 7.0, 9.0] and lpo["train_returns"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert lpo["seed_batches"] == [0, 1] and lpo["wall_s"] == [1.0, 2.0]
    assert lpo["curve_return"] == pytest.approx([(2 * 2.0 + 3 * 4.0) / 5, 6.0])  # seed-weighted, over batches with a point
    assert "G/verdict" not in merged["runs"] and merged["runs"]["G/form"]["final_returns"] == [2.0]
    assert merged["settings"]["drifts"] == ["lpo", "form"] and merged["settings"]["seeds"] == [1, 5]
    with pytest.raises(ValueError, match="seed batch 1 twice"):
        bench.merge_studies([_minatar_study("lpo", 1, [1.0], [1.0, 1.0]), _minatar_study("lpo", 1, [2.0], [1.0, 1.0])])
    with pytest.raises(ValueError, match="different timesteps"):
        bench.merge_studies([_minatar_study("lpo", 0, [1.0], [1.0, 1.0]), _minatar_study("lpo", 1, [1.0], [1.0, 1.0], 200)])


def test_minatar_merge_command_writes_a_new_study_and_never_replaces_one(tmp_path):
    import json

    bench = _load("bench_minatar", "minatar.py")
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "ab.json"
    a.write_text(json.dumps(_minatar_study("lpo", 0, [1.0, 3.0], [2.0, 2.0])))
    b.write_text(json.dumps(_minatar_study("lpo", 1, [5.0], [4.0, 4.0])))
    bench.main(["--merge", str(a), str(b), "--out", str(out)])
    assert json.loads(out.read_text())["runs"]["G/lpo"]["final_returns"] == [1.0, 3.0, 5.0]
    assert out.with_suffix(".png").exists()
    with pytest.raises(SystemExit, match="already holds a study"):
        bench.main(["--merge", str(a), str(b), "--out", str(out)])
    with pytest.raises(SystemExit, match="seed batch 0 twice"):
        bench.main(["--merge", str(a), str(a), "--out", str(tmp_path / "aa.json")])


def _gen_results() -> dict:
    def run(finals):
        return {"final_returns": finals}

    return {"random": {"CartPole-v1": 20.0, "Catch-bsuite": -1.0},
            "runs": {"CartPole-v1@16384/ppo": run([120.0, 100.0, 80.0]), "CartPole-v1@16384/x": run([220.0, 200.0, 180.0]),
                     "Catch-bsuite@16384/ppo": run([0.0, 0.0, 0.0]), "Catch-bsuite@16384/x": run([-1.0, -1.0, -1.0])}}


def test_generalisation_scores_are_normalised_between_random_and_ppo():
    bench = _load("bench_generalisation", "generalisation.py")
    assert bench.parse_cell("Breakout-MinAtar@500000@network=mlp,num_envs=8") == (
        "Breakout-MinAtar", 500000, {"network": "mlp", "num_envs": 8})
    with pytest.raises(SystemExit, match="ENV@TIMESTEPS"):
        bench.parse_cell("CartPole-v1")
    results = _gen_results()
    # CartPole: PPO 100 +- 11.5, random 20 (scale 80); x = 200 -> (200 - 20) / 80 = 2.25
    score, se = bench.normalised(results, "CartPole-v1@16384", "x")
    assert score == pytest.approx(2.25) and se == pytest.approx(20 / 3**0.5 / 80)
    assert bench.normalised(results, "CartPole-v1@16384", "ppo")[0] == pytest.approx(1.0)
    diff, diff_se = bench.versus_ppo(results, "CartPole-v1@16384", "x")
    assert diff == pytest.approx(1.25) and diff_se == pytest.approx(2**0.5 * 20 / 3**0.5 / 80)
    s = bench.summary(results, ["CartPole-v1@16384", "Catch-bsuite@16384"], "x")
    assert s["score"] == pytest.approx((2.25 + 0.0) / 2)  # Catch: x at random scores 0
    assert s["worse_than_ppo"] == ["Catch-bsuite@16384"]  # exactly PPO's spread below it, no noise
    assert bench.summary(results, ["Acrobot-v1@16384"], "x") is None  # a missing cell gives no summary
