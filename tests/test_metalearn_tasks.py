"""Randomised inner settings (metalearn.tasks) and the fitness modes that weigh the learning curve."""

import math

import jax
import numpy as np
import pytest

from agents.config import PPOConfig
from agents.estimators import PPO
from metalearn import MetaTrainer
from metalearn import tasks as tasks_lib
from metalearn.checkpoint import ConfigMismatchError

BASE = PPOConfig(total_timesteps=1024, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2)
INNER = dict(total_timesteps=1024, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2)
RANGES = {"budget": (1, 2), "update_epochs": [1, 2]}


def test_latin_hypercube_uses_every_stratum_once():
    settings = tasks_lib.sample_settings({"budget": (1, 8), "ent_coef": (0.0, 0.02)}, 8, seed=3)
    u_budget = sorted(math.log(s["budget"]) / math.log(8) for s in settings)
    u_ent = sorted(s["ent_coef"] / 0.02 for s in settings)
    for k in range(8):  # one draw in each eighth of each range (log space for the budget)
        assert k / 8 <= u_budget[k] < (k + 1) / 8
        assert k / 8 <= u_ent[k] < (k + 1) / 8
    assert settings == tasks_lib.sample_settings({"ent_coef": (0.0, 0.02), "budget": (1, 8)}, 8, seed=3)
    assert settings != tasks_lib.sample_settings({"budget": (1, 8), "ent_coef": (0.0, 0.02)}, 8, seed=4)


def test_choices_are_spread_evenly():
    settings = tasks_lib.sample_settings({"update_epochs": [2, 4, 8, 16]}, 8, seed=0)
    assert sorted(s["update_epochs"] for s in settings) == [2, 2, 4, 4, 8, 8, 16, 16]


def test_apply_setting_keeps_the_config_consistent():
    c = tasks_lib.apply_setting(BASE, {"budget": 2.7, "num_minibatches": 3, "width": 16})
    assert c.total_timesteps == 2816 and c.total_timesteps % c.batch_size == 0  # 2764.8 -> 22 batches of 128
    assert c.num_minibatches == 2  # 3 does not divide 128: the nearest divisor (ties to the smaller)
    assert c.hidden_sizes == (16, 16)
    assert tasks_lib.apply_setting(BASE, {"total_timesteps": 100}).total_timesteps == 128  # at least one batch


def test_sample_tasks_without_ranges_is_the_base_config():
    assert tasks_lib.sample_tasks(BASE, {}, 8, 0) == [BASE]
    pool = tasks_lib.sample_tasks(BASE, {"budget": (1, 8)}, 4, 0)
    assert len(pool) == 4 and len({t.total_timesteps for t in pool}) == 4
    assert min(t.total_timesteps for t in pool) >= 1024 and max(t.total_timesteps for t in pool) <= 8192
    assert tasks_lib.describe(pool[0], {"budget": (1, 8)}) == f"total_timesteps={pool[0].total_timesteps}"


@pytest.mark.parametrize("ranges, match", [
    ({"lerning_rate": (1e-4, 1e-3)}, "Did you mean 'learning_rate'"),
    ({"hidden_sizes": [(8,), (16,)]}, "cannot be varied"),
    ({"budget": (8, 1)}, "low <= high"),
    ({"update_epochs": (1.5, 4)}, "whole numbers"),
    ({"learning_rate": (0.0, 1e-3)}, "> 0"),
    ({"gamma": [0.9, 1.2]}, r"\[0, 1\]"),
    ({"ent_coef": 0.01}, "range .low, high. or a list"),
    ({"budget": []}, "non-empty list"),
    ([("budget", (1, 2))], "mapping"),
])
def test_bad_ranges_are_refused_by_name(ranges, match):
    with pytest.raises(ValueError, match=match):
        tasks_lib.check_ranges(ranges)


def test_parse_vary():
    assert tasks_lib.parse_vary("budget=1:8") == ("budget", (1, 8))
    assert tasks_lib.parse_vary("learning_rate = 1e-4:1e-3") == ("learning_rate", (1e-4, 1e-3))
    assert tasks_lib.parse_vary("update_epochs=2,4,8") == ("update_epochs", [2, 4, 8])
    for bad in ("budget", "budget=", "budget=1:2:3", "budget=a:b"):
        with pytest.raises(ValueError, match="budget|FIELD"):
            tasks_lib.parse_vary(bad)


def test_eval_plus_curve_is_the_mean_of_eval_and_curve():
    from agents.envs import make_env
    from drifts import lpo
    from metalearn import inner as inner_lib

    env, genome = make_env("CartPole-v1"), lpo()
    mesh = inner_lib.make_mesh(jax.devices()[:1], 2)
    params = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (2,) + np.shape(x)), genome.params)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(1), 4)).reshape(2, 2, -1)
    scores = {}
    for mode in ("eval", "curve", "eval+curve"):
        fn = inner_lib.compiled_population_fn(BASE, env, genome.fn, False, mode, 4)
        scores[mode] = inner_lib.run_population(fn, params, keys, 2, mesh)
    np.testing.assert_allclose(scores["eval+curve"], 0.5 * (scores["eval"] + scores["curve"]), rtol=1e-6)
    assert np.all(scores["curve"] > 9)  # CartPole episodes last at least ~9 steps under any policy


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool") / "run"
    mt = MetaTrainer(inner=PPO(**INNER), population_size=4, generations=3, n_eval_episodes=4, eval_every=2,
                     progress=False, inner_ranges=RANGES, n_tasks=2, checkpoint_dir=folder)
    return mt, mt.fit(), folder


def test_task_pool_run_records_tasks_and_per_task_baselines(pool_run):
    mt, _, _ = pool_run
    b = mt.baselines_["CartPole-v1"]
    assert len(b["tasks"]) == 2 and all("setting" in t for t in b["tasks"])
    assert b["reference"] == pytest.approx(np.mean([t["reference"] for t in b["tasks"]]))
    assert all(h["tasks"]["CartPole-v1"] in (0, 1) for h in mt.history_)
    assert mt.history_[1]["mean_score"] is not None


def test_task_pool_resume_equals_uninterrupted(pool_run, tmp_path):
    mt_ref, drift_ref, _ = pool_run
    kw = dict(inner=PPO(**INNER), population_size=4, n_eval_episodes=4, eval_every=2, progress=False,
              inner_ranges=RANGES, n_tasks=2, checkpoint_dir=tmp_path)
    MetaTrainer(generations=1, **kw).fit()
    mt = MetaTrainer(generations=3, **kw)
    drift = mt.fit()
    for x, y in zip(jax.tree_util.tree_leaves(drift.params), jax.tree_util.tree_leaves(drift_ref.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    strip = [{k: v for k, v in h.items() if "seconds" not in k} for h in mt.history_]
    assert strip == [{k: v for k, v in h.items() if "seconds" not in k} for h in mt_ref.history_]


def test_changed_ranges_refuse_to_resume(pool_run):
    _, _, folder = pool_run
    mt = MetaTrainer(inner=PPO(**INNER), population_size=4, generations=4, n_eval_episodes=4, eval_every=2,
                     progress=False, inner_ranges={"budget": (1, 3), "update_epochs": [1, 2]}, n_tasks=2,
                     checkpoint_dir=folder)
    with pytest.raises(ConfigMismatchError, match="inner_ranges.budget"):
        mt.fit()


def test_runs_without_ranges_keep_their_fingerprint():
    s = MetaTrainer(inner=PPO(**INNER), population_size=4, progress=False)._setup()
    assert "inner_ranges" not in s["fingerprint"] and "combine" not in s["fingerprint"]
    assert len(s["tasks"][0]) == 1


@pytest.mark.parametrize("kw, match", [
    (dict(combine="median"), "combine must be one of"),
    (dict(inner_ranges=RANGES, n_tasks=0), "n_tasks must be an integer"),
    (dict(inner_ranges={"widht": [8]}), "Did you mean 'width'"),
])
def test_bad_task_options_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        MetaTrainer(inner=PPO(**INNER), population_size=4, progress=False, **kw).fit()


def test_min_combine_takes_the_worst_environment():
    mt = MetaTrainer(combine="min")
    np.testing.assert_array_equal(mt._combine([np.array([1.0, 0.2]), np.array([0.5, 0.9])]), [0.5, 0.2])
    np.testing.assert_array_equal(MetaTrainer()._combine([np.array([1.0, 0.2]), np.array([0.5, 0.9])]), [0.75, 0.55])
