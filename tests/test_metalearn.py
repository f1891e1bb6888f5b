"""Meta-training: a tiny run gives a valid drift; resume (also after SIGKILL) and two devices change nothing."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

from agents.estimators import PPO
from drifts import Drift, get_drift
from metalearn import MetaTrainer
from metalearn import es as es_lib
from metalearn.checkpoint import CHECKPOINT_FILE, ConfigMismatchError

INNER = dict(total_timesteps=1024, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2)
TINY = dict(population_size=4, n_eval_episodes=4, eval_every=2, progress=False, seed=0)
ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw) -> MetaTrainer:
    return MetaTrainer(inner=PPO(**INNER), **{**TINY, **kw})


def leaves(drift: Drift) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(drift.params)]


def assert_same_run(a: Drift, b: Drift, hist_a: list, hist_b: list) -> None:
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    strip = [{k: v for k, v in h.items() if "seconds" not in k} for h in hist_a]
    assert strip == [{k: v for k, v in h.items() if "seconds" not in k} for h in hist_b]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meta") / "ref"
    mt = tiny(generations=3, checkpoint_dir=folder)
    return mt, mt.fit(), folder


def test_tiny_run_gives_valid_loadable_drift(reference):
    from drifts import check_drift

    mt, drift, folder = reference
    assert len(mt.history_) == 3 and mt.generation_ == 3
    assert {"fitness_mean", "fitness_max", "fitness_min", "sigma", "seconds"} <= set(mt.history_[0])
    assert mt.history_[1]["mean_score"] is not None and mt.history_[0].get("mean_score") is None
    assert mt.history_[2]["sigma"] < mt.history_[0]["sigma"] <= 0.04  # the schedule decays
    assert not np.allclose(leaves(drift)[1], 0.0)  # the output layer moved away from PPO's zero
    loaded = get_drift(folder / "drift.drift")
    for x, y in zip(leaves(drift), leaves(loaded), strict=True):
        np.testing.assert_array_equal(x, y)
    assert check_drift(loaded).valid
    saved = json.loads((folder / "history.json").read_text())
    assert saved["generation"] == 3 and len(saved["history"]) == 3
    assert [h["generation"] for h in saved["history"]] == [1, 2, 3]  # as the log counts: "gen 3/3" is the last
    assert set(saved["baselines"]["CartPole-v1"]) >= {"random", "reference"}
    assert (folder / "meta_curve.png").stat().st_size > 0


def test_resume_equals_uninterrupted(reference, tmp_path):
    mt_ref, drift_ref, _ = reference
    tiny(generations=1, checkpoint_dir=tmp_path).fit()
    resumed = tiny(generations=3, checkpoint_dir=tmp_path)
    assert_same_run(resumed.fit(), drift_ref, resumed.history_, mt_ref.history_)
    again = tiny(generations=3, checkpoint_dir=tmp_path)  # already complete: nothing recomputed
    assert_same_run(again.fit(), drift_ref, again.history_, mt_ref.history_)


KILLED_RUN = textwrap.dedent("""
    import sys, time
    from agents.estimators import PPO
    import metalearn.trainer as trainer
    from metalearn import MetaTrainer

    inner, tiny, folder = eval(sys.argv[1]), eval(sys.argv[2]), sys.argv[3]
    original, calls = trainer.inner_lib.run_population, [0]

    def stall(*args, **kwargs):  # call 4 is generation 1's evaluation of the ES mean, before its checkpoint
        calls[0] += 1
        if calls[0] == 4:
            print("KILL-ME", flush=True)
            time.sleep(120)
        return original(*args, **kwargs)

    trainer.inner_lib.run_population = stall
    MetaTrainer(inner=PPO(**inner), generations=3, checkpoint_dir=folder, **tiny).fit()
""")

TWO_DEVICES = textwrap.dedent("""
    import sys
    import jax
    from agents.estimators import PPO
    from metalearn import MetaTrainer

    inner, tiny, folder = eval(sys.argv[1]), eval(sys.argv[2]), sys.argv[3]
    print("devices", jax.device_count(), flush=True)
    MetaTrainer(inner=PPO(**inner), generations=3, checkpoint_dir=folder, **tiny).fit()
    print("DONE", flush=True)
""")


def run_script(script: str, folder: Path, timeout: float, kill_on: str | None = None, devices: int = 1):
    """Run ``script`` in a fresh interpreter; SIGKILL it when it prints ``kill_on`` or after ``timeout``."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags += [f"--xla_force_host_platform_device_count={devices}"] if devices > 1 else []
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)}
    proc = subprocess.Popen([sys.executable, "-c", script, repr(INNER), repr(TINY), str(folder)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)  # a wedged subprocess fails the test instead of hanging it
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_on is not None and line.startswith(kill_on):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
        timed_out = not timer.is_alive()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
    return proc, lines, timed_out


@pytest.mark.slow
def test_sigkill_mid_generation_then_resume_equals_uninterrupted(reference, tmp_path):
    mt_ref, drift_ref, _ = reference
    proc, lines, timed_out = run_script(KILLED_RUN, tmp_path, timeout=150, kill_on="KILL-ME")
    assert not timed_out and "KILL-ME\n" in lines, (lines, proc.stderr.read())
    assert proc.returncode == -signal.SIGKILL
    stored = json.loads((tmp_path / "history.json").read_text())
    assert stored["generation"] == 1  # killed inside generation index 1, before its checkpoint
    assert not (tmp_path / "drift.drift").exists()
    resumed = tiny(generations=3, checkpoint_dir=tmp_path)
    assert_same_run(resumed.fit(), drift_ref, resumed.history_, mt_ref.history_)


@pytest.mark.slow
def test_two_devices_give_the_same_result(reference, tmp_path):
    _, drift_ref, _ = reference
    proc, lines, timed_out = run_script(TWO_DEVICES, tmp_path, timeout=75, devices=2)
    assert not timed_out, "the 2-device run wedged (see metalearn.inner.compiled_population_fn on batched QR)"
    assert "devices 2\n" in lines and "DONE\n" in lines, (lines, proc.stderr.read())
    two = get_drift(tmp_path / "drift.drift")
    for x, y in zip(leaves(two), leaves(drift_ref), strict=True):
        np.testing.assert_array_equal(x, y)
    # equal here, but not over long runs (round-off differs): a resume on another device count is refused
    with pytest.raises(ConfigMismatchError, match=r"(?s)devices: checkpoint has 2, this run has 1.*same devices"):
        tiny(generations=4, checkpoint_dir=tmp_path, devices=jax.devices()[:1]).fit()


def test_checkpoints_from_before_the_device_count_was_recorded_still_resume():
    from metalearn.checkpoint import check_fingerprint

    check_fingerprint({"seed": 0}, {"seed": 0, "devices": 2}, "old.npz")  # no error
    with pytest.raises(ConfigMismatchError, match="devices"):
        check_fingerprint({"seed": 0, "devices": 1}, {"seed": 0, "devices": 2}, "new.npz")


@pytest.mark.parametrize("kw, match", [
    (dict(population_size=5), "odd"),
    (dict(population_size=1), ">= 2"),
    (dict(generations=0), "generations"),
    (dict(generations=-3), "generations"),
    (dict(chunk_size=3), "chunk_size"),
    (dict(envs=["CartPoel-v1"]), "CartPole-v1"),
    (dict(envs=[]), "envs is empty"),
    (dict(drift="lpoo"), "unknown drift genome .lpoo.. Did you mean .lpo.?"),
    (dict(fitness="best"), "fitness"),
    (dict(sigma_limit=0.05), r"sigma_limit=0.05 > sigma_init=0.04"),
    (dict(learning_rate=float("inf")), "learning_rate must be a finite number, got inf"),
    (dict(sigma_init="0.04"), "sigma_init must be a finite number, got '0.04'"),
    (dict(devices="cpu"), r"devices must be a sequence of JAX devices, got 'cpu'; pass a list of JAX devices"),
    (dict(devices=[]), "devices is empty"),
    (dict(devices=["cpu:0"]), "devices holds 'cpu:0', not a JAX device"),
])
def test_bad_configurations_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(generations=kw.pop("generations", 2), **kw).fit()


def test_earlier_outputs_without_checkpoint_are_kept_unless_overwrite(tmp_path):
    from drifts import dpo

    dpo(alpha=3.0).save(tmp_path / "drift.drift")
    (tmp_path / "history.json").write_text("{}")
    before = (tmp_path / "drift.drift").read_bytes()
    with pytest.raises(ValueError, match=r"holds an earlier run's outputs \(drift.drift, history.json\) but no "
                       r"checkpoint to resume.*overwrite=True"):
        tiny(generations=1, checkpoint_dir=tmp_path).fit()
    assert (tmp_path / "drift.drift").read_bytes() == before and not (tmp_path / CHECKPOINT_FILE).exists()
    learned = tiny(generations=1, checkpoint_dir=tmp_path).fit(overwrite=True)
    assert get_drift(tmp_path / "drift.drift").name == learned.name == "lpo"


def test_diverging_es_mean_stops_before_it_is_saved(tmp_path, monkeypatch):
    from metalearn import MetaTrainingDivergedError

    generation = MetaTrainer._generation

    def diverging_second_generation(self, s, gen, key, state, baselines):
        key, state, record = generation(self, s, gen, key, state, baselines)
        return key, (state.replace(mean=state.mean * np.nan) if gen == 1 else state), record

    monkeypatch.setattr(MetaTrainer, "_generation", diverging_second_generation)
    mt = tiny(generations=3, checkpoint_dir=tmp_path)
    with pytest.raises(MetaTrainingDivergedError, match=r"NaN or inf in generation 2.*keeps generation 1.*Lower "
                       "learning_rate"):
        mt.fit()
    assert not (tmp_path / "drift.drift").exists() and len(mt.history_) == 2
    assert json.loads((tmp_path / "history.json").read_text())["generation"] == 1  # the last good state


def test_checkpoint_of_other_configuration_refused_and_untouched(reference):
    _, _, folder = reference
    before = (folder / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ConfigMismatchError, match=r"sigma_init: checkpoint has 0.04, this run has 0.05"):
        tiny(generations=3, checkpoint_dir=folder, sigma_init=0.05).fit()
    with pytest.raises(ConfigMismatchError, match=r"inner_configs\[0\]\.total_timesteps: checkpoint has \d+, this run "
                       r"has 2048\n") as err:
        MetaTrainer(inner=PPO(**{**INNER, "total_timesteps": 2048}), generations=3, checkpoint_dir=folder, **TINY).fit()
    assert "num_envs" not in str(err.value)  # the one changed setting, not the whole inner configuration
    assert (folder / CHECKPOINT_FILE).read_bytes() == before


@pytest.mark.parametrize("edit, message", [
    (lambda m, a: a.update({"es/003.mean": a["es/003.mean"] * np.nan}), "003.mean contains NaN"),
    (lambda m, a: a.update({"es/004.std": -a["es/004.std"]}), "004.std is negative"),
    (lambda m, a: m.update(generation=-5), "generation must be a whole number >= 0"),
    (lambda m, a: m.update(history="x"), "history is not a list"),
    # a tampered history passed resume and failed at output time (KeyError: 'generation', "Singular matrix")
    (lambda m, a: [h.pop("generation") for h in m["history"]], "history record 0 has no whole-number 'generation'"),
    (lambda m, a: m["history"][1].update(fitness_mean="big"), "history record 1: 'fitness_mean' is 'big'"),
    (lambda m, a: m.update(baselines={"CartPole-v1": {"scale": 0}}), "lacks finite 'random'"),
    (lambda m, a: a.update({"rng/key": a["rng/key"].astype(np.float32)}), "RNG key has shape"),
])
def test_corrupted_checkpoint_is_refused_and_the_drift_file_kept(reference, tmp_path, edit, message):
    import shutil

    from mirrorlearn._archive import write_archive

    _, _, folder = reference
    run = tmp_path / "run"
    shutil.copytree(folder, run)
    with np.load(run / CHECKPOINT_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    edit(meta, arrays)
    write_archive(run / CHECKPOINT_FILE, meta, arrays)
    drift_before = (run / "drift.drift").read_bytes()
    with pytest.raises(ValueError, match=f"corrupted \\(.*{message}"):
        tiny(generations=4, checkpoint_dir=run).fit()  # resuming would train from it and save over drift.drift
    assert (run / "drift.drift").read_bytes() == drift_before


def test_es_state_round_trip_and_mismatch():
    from drifts import lpo

    strategy = es_lib.make_strategy(4, lpo(hidden=8).params, 0.04, 0.999, 0.01, 0.01)
    state = strategy.init(jax.random.PRNGKey(1), lpo(hidden=8).params, strategy.default_params)
    arrays = es_lib.state_to_arrays(state)
    back = es_lib.state_from_arrays(state, arrays)
    for x, y in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    other = es_lib.make_strategy(4, lpo(hidden=16).params, 0.04, 0.999, 0.01, 0.01)
    template = other.init(jax.random.PRNGKey(1), lpo(hidden=16).params, other.default_params)
    with pytest.raises(ValueError, match="shape"):
        es_lib.state_from_arrays(template, arrays)


def test_sigma_schedule_matches_paper():
    sched = es_lib.sigma_schedule(0.04, 0.999, 0.01)
    assert float(sched(0)) == pytest.approx(0.04)
    assert float(sched(100)) == pytest.approx(0.04 * 0.999**100, rel=1e-5)
    assert float(sched(5000)) == pytest.approx(0.01)
    assert float(es_lib.sigma_schedule(0.04, 1.0, 0.01)(100)) == pytest.approx(0.04)  # no decay: no floor either


def test_cli_meta_train_writes_outputs_and_resumes(tmp_path, capsys):
    from metalearn.cli import main

    argv = ["--generations", "1", "--population", "4", "--timesteps", "1024", "--eval-episodes", "4",
            "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert (tmp_path / "drift.drift").exists() and (tmp_path / "history.json").exists()
    assert main(argv[:1] + ["2"] + argv[2:]) == 0  # resumes for one more generation
    assert json.loads((tmp_path / "history.json").read_text())["generation"] == 2
    assert main(argv[:5] + ["2048"] + argv[6:]) == 2  # other configuration: refused
    assert "different configuration" in capsys.readouterr().err


def test_nan_fitness_counts_as_worst_and_is_logged(monkeypatch, capsys):
    import metalearn.trainer as trainer

    def fake_run_population(fn, pop_params, keys, chunk, mesh):
        n = keys.shape[0]
        if np.unique(keys.reshape(n, -1), axis=0).shape[0] > 1:  # the baseline: distinct keys per member
            return np.full((n, keys.shape[1]), 50.0)
        w2 = np.asarray(pop_params["w2"]).reshape(n, -1)
        returns = 100.0 + 1000.0 * w2.sum(axis=1)
        returns[2] = np.nan
        return np.repeat(returns[:, None], keys.shape[1], axis=1)

    monkeypatch.setattr(trainer.inner_lib, "run_population", fake_run_population)
    mt = tiny(generations=1, eval_every=0, progress=True)
    drift = mt.fit()
    record = mt.history_[0]
    assert record["n_nan"] == 1 and record["nan_members"] == [2]
    assert np.isfinite([record["fitness_mean"], record["fitness_max"], record["fitness_min"]]).all()
    assert all(np.isfinite(x).all() for x in leaves(drift))
    assert "members [2] had NaN/inf fitness; counted as worst" in capsys.readouterr().err


def fake_population(reference: float):
    """A stand-in for ``run_population``: ``reference`` for the baseline's distinct keys, 100 for members."""
    def run(fn, pop_params, keys, chunk, mesh):
        n = keys.shape[0]
        value = reference if np.unique(keys.reshape(n, -1), axis=0).shape[0] > 1 else 100.0
        return np.full((n, keys.shape[1]), value)
    return run


def test_normalise_floors_an_uninformative_env_and_keeps_normal_ones_exact():
    from metalearn import inner

    returns = np.array([-1495.0, -1180.9, -1000.0])
    pendulum = inner.normalise(returns, -1180.9, -1324.0)  # starting drift below random (tiny inner budget)
    assert inner.is_floored(-1180.9, -1324.0) and np.abs(pendulum).max() < 3  # was ~ -240 with a 1e-3 floor
    np.testing.assert_array_equal(inner.normalise(np.array([24.6, 75.9, 100.0]), 24.6, 75.9),
                                  (np.array([24.6, 75.9, 100.0]) - 24.6) / (75.9 - 24.6))
    assert not inner.is_floored(24.6, 75.9)


def test_uninformative_baseline_warns_naming_env_numbers_and_fix(monkeypatch):
    import metalearn.trainer as trainer

    monkeypatch.setattr(trainer.inner_lib, "run_population", fake_population(reference=10.0))  # random ~ 22
    mt = tiny(generations=1, eval_every=0)
    with pytest.warns(UserWarning, match=r"CartPole-v1: the starting drift's return \(10\.0\).*random.*total_timesteps"):
        mt.fit()
    b = mt.baselines_["CartPole-v1"]
    assert b["scale"] == pytest.approx(0.1 * abs(b["random"]))
    assert mt.history_[0]["fitness_mean"] == pytest.approx((100.0 - b["random"]) / b["scale"])


def test_train_fitness_without_finished_episodes_refused_at_baseline(monkeypatch, tmp_path):
    import metalearn.trainer as trainer

    monkeypatch.setattr(trainer.inner_lib, "run_population", fake_population(reference=np.nan))
    with pytest.raises(ValueError, match=r"fitness='train'.*CartPole-v1.*total_timesteps=.*fitness='eval'"):
        tiny(generations=1, fitness="train", checkpoint_dir=tmp_path).fit()
    assert not (tmp_path / CHECKPOINT_FILE).exists()
    # the curve modes score the last half of the updates, and say so (they were blamed on a diverged drift)
    with pytest.raises(ValueError, match=r"fitness='eval\+curve'.*last half of updates.*total_timesteps="):
        tiny(generations=1, fitness="eval+curve", checkpoint_dir=tmp_path).fit()


def test_cli_genome_names_win_over_files(tmp_path, monkeypatch):
    from drifts import lpo
    from metalearn.cli import resolve_drift_arg

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lpo").mkdir()  # e.g. left by an earlier `--out lpo`
    assert resolve_drift_arg("lpo") == "lpo" and resolve_drift_arg("TA-LPO") == "TA-LPO"
    lpo(hidden=8).save(tmp_path / "mine.drift")
    assert isinstance(resolve_drift_arg("mine.drift"), Drift)


def test_cli_refusal_before_any_work_leaves_no_empty_folder(tmp_path, capsys):
    from metalearn.cli import main

    assert main(["--env", "CartPol-v1", "--out", str(tmp_path / "m_bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mirrorlearn meta-train: error: unknown environment id")  # as every command says it
    assert "CartPole-v1" in err and not (tmp_path / "m_bad").exists()


def test_python_api_takes_a_drift_file_as_the_genome(tmp_path):
    from drifts import lpo
    from metalearn import resolve_genome

    lpo(hidden=8).save(tmp_path / "mine.drift")
    for spec in (tmp_path / "mine.drift", str(tmp_path / "mine.drift")):
        assert jax.tree_util.tree_leaves(resolve_genome(spec).params)[0].shape[-1] == 8
    with pytest.raises(FileNotFoundError, match="no such drift file.*missing.drift"):
        resolve_genome(str(tmp_path / "missing.drift"))


def test_missing_evosax_names_the_install_command(monkeypatch, tmp_path, capsys):
    from metalearn.cli import main

    monkeypatch.setitem(sys.modules, "evosax.algorithms", None)  # makes `from evosax.algorithms import ...` fail
    with pytest.raises(ImportError, match=r'pip install -e "\.\[meta\]"'):
        es_lib.make_strategy(4, {"w": np.zeros(2)}, 0.04, 0.999, 0.01, 0.01)
    assert main(["--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert 'pip install "mirrorlearn[meta]"' in capsys.readouterr().err


def test_checkpoint_dir_that_is_a_file_refused_before_training(tmp_path, capsys):
    from metalearn.cli import main

    afile = tmp_path / "afile"
    afile.write_text("")
    for folder in (afile, afile / "sub"):
        with pytest.raises(ValueError, match="existing file, not a folder"):
            tiny(generations=1, checkpoint_dir=folder).fit()
    assert main(["--out", str(afile), "--quiet"]) == 2
    assert "existing file, not a folder" in capsys.readouterr().err


def test_cli_never_starts_afresh_over_an_earlier_runs_drift(tmp_path, capsys):
    from metalearn.cli import main

    run = tmp_path / "run"  # an earlier run's outputs without its checkpoint (moved away, or copied)
    run.mkdir()
    (run / "drift.drift").write_text("learned")
    assert main(["--out", str(run), "--generations", "1", "--quiet"]) == 2
    assert "already holds results of an earlier run (drift.drift); name a new folder, or pass --overwrite" \
        in capsys.readouterr().err
    assert (run / "drift.drift").read_text() == "learned"


@pytest.mark.parametrize("inner", [PPO(**INNER).make_config("CartPole-v1"), 1024])
def test_inner_that_is_not_an_estimator_refused(inner):
    with pytest.raises(TypeError, match=r"inner must be an estimator such as PPO\(total_timesteps="):
        MetaTrainer(inner=inner, **TINY).fit()


def test_single_env_accepted_and_ignored_inner_drift_warned():
    from agents.envs import make_env
    from agents.estimators import DPO

    env = make_env("CartPole-v1")
    for single in ("CartPole-v1", env):
        assert [e.id for e in tiny(envs=single)._setup()["envs"]] == ["CartPole-v1"]
    with pytest.warns(UserWarning, match="DPO.*drift is ignored"):
        MetaTrainer(inner=DPO(**INNER), **TINY)._validate()
    with pytest.warns(UserWarning, match=r"PPO\(eps=0.5\) sets PPO's clip drift.*drifts.lpo\(eps=0.5\)"):
        MetaTrainer(inner=PPO(eps=0.5, **INNER), **TINY)._validate()
    with pytest.warns(UserWarning, match=r"inner n_seeds=3 is ignored.*n_inner_seeds"):
        MetaTrainer(inner=PPO(n_seeds=3, **INNER), **TINY)._validate()
    with pytest.warns(UserWarning, match=r"inner seed=7 is ignored.*MetaTrainer\(seed=...\)"):
        MetaTrainer(inner=PPO(seed=7, **INNER), **TINY)._validate()
    # a budget that whole batches cut by 5% or more is named, as MirrorAgent.fit names it
    with pytest.warns(UserWarning, match=r"total_timesteps=1000 is not a multiple of the batch"):
        MetaTrainer(inner=PPO(total_timesteps=1000), **TINY)._setup()


def test_repeated_set_options_accumulate():
    from metalearn.cli import build_parser

    args = build_parser().parse_args(["--out", "x", "--set", "num_envs=4", "--set", "num_steps=32", "update_epochs=2"])
    assert args.set == ["num_envs=4", "num_steps=32", "update_epochs=2"]  # the first --set was dropped before


def test_fewer_generations_than_checkpoint_warns_and_keeps_it(reference):
    mt_ref, drift_ref, folder = reference
    mt = tiny(generations=1, checkpoint_dir=folder)
    with pytest.warns(UserWarning, match="already holds 3 generations, more than the 1 requested"):
        drift = mt.fit()
    assert mt.generation_ == 3
    assert_same_run(drift, drift_ref, mt.history_, mt_ref.history_)


def test_cli_set_reaches_the_inner_ppo(tmp_path, capsys, monkeypatch):
    from metalearn import cli

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr("metalearn.trainer.MetaTrainer", fake_trainer)
    with pytest.raises(Stop):
        cli.main(["--out", str(tmp_path / "r"), "--timesteps", "512", "--set", "num_envs=2", "learning_rate=1e-3"])
    assert (seen["inner"].num_envs, seen["inner"].learning_rate, seen["inner"].total_timesteps) == (2, 1e-3, 512)
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path / "r"), "--set", "learning_rat=1e-3"])
    assert "learning_rate" in capsys.readouterr().err


def test_history_written_with_zero_based_generations_is_renumbered_on_resume():
    from metalearn.trainer import _one_based

    old = [{"generation": 0, "x": 1}, {"generation": 1, "x": 2}]
    assert [h["generation"] for h in _one_based(old)] == [1, 2]
    assert _one_based(_one_based(old)) == _one_based(old)  # already 1-based: unchanged


def test_meta_curve_has_whole_generation_ticks(reference):
    from metalearn.plotting import plot_history

    mt, _, _ = reference
    fig = plot_history(mt.history_)
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
