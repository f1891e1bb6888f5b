"""The PPO core and the estimators: training, determinism, files, scikit-learn conventions, bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import PPOConfig, make_env, make_train
from agents.estimators import DPO, PPO, MirrorAgent, NotFittedError, TrainingDivergedError
from drifts import dpo, ppo
from mirrorlearn._archive import ArchiveError

SMALL = dict(total_timesteps=20_480, n_seeds=2, seed=3)


@pytest.fixture(scope="module")
def fitted():
    return DPO(**SMALL).fit("CartPole-v1")


def test_fit_returns_self_and_learns(fitted):
    h = fitted.history_
    assert h["episode_return"].shape == (2, 40) and h["timesteps"].shape == (40,)
    early = np.nanmean(h["episode_return"][:, :5])
    late = np.nanmean(h["episode_return"][:, -10:])
    assert late > early + 20, (early, late)  # learning happens even at this tiny budget


def test_evaluate_covers_all_seeds(fitted):
    ev = fitted.evaluate(n_episodes=3, seed=1)
    assert ev["returns"].shape == (2, 3)
    assert ev["mean_return"] == pytest.approx(float(ev["returns"].mean()))
    assert fitted.score(n_episodes=3, seed=1) == pytest.approx(ev["mean_return"])


def test_predict_single_and_batch(fitted):
    obs = np.zeros((5, 4), np.float32)
    actions = fitted.predict(obs)
    assert actions.shape == (5,) and set(np.unique(actions)) <= {0, 1}
    assert np.ndim(fitted.predict(obs[0])) == 0
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        fitted.predict(np.zeros((3,)))
    with pytest.raises(ValueError, match=r"got tuple; expected \(4,\).*obs, _ = env.reset\(\)"):
        fitted.predict((np.zeros(4), {}))  # what gymnasium's reset returns
    with pytest.raises(ValueError, match="array of numbers, got str"):
        fitted.predict("abc")


def test_same_seed_bitwise_identical_and_seeds_differ():
    a = PPO(**SMALL).fit("CartPole-v1")
    b = PPO(**SMALL).fit("CartPole-v1")
    for x, y in zip(jax.tree_util.tree_leaves(a.params_), jax.tree_util.tree_leaves(b.params_), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    leaf = np.asarray(jax.tree_util.tree_leaves(a.params_)[0])
    assert not np.array_equal(leaf[0], leaf[1])  # the two seeds are independent runs


def test_save_load_identical_predictions(fitted, tmp_path):
    path = fitted.save(tmp_path / "agent.npz")
    loaded = MirrorAgent.load(path)
    assert type(loaded) is DPO and loaded.get_params() == fitted.get_params()
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), fitted.predict(obs))
    for k, v in fitted.history_.items():
        np.testing.assert_array_equal(loaded.history_[k], v)
    assert loaded.evaluate(n_episodes=2)["returns"].shape == (2, 2)
    assert type(DPO.load(path)) is DPO
    with pytest.raises(TypeError, match=r"holds a DPO agent, not a PPO; load it with DPO.load"):
        PPO.load(path)


def test_a_tilde_in_a_path_means_the_home_folder(fitted, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    path = fitted.save("~/agents/a.npz")
    assert path == tmp_path / "home" / "agents" / "a.npz" and path.exists()
    assert not (tmp_path / "~").exists()  # not a folder literally named "~"
    assert type(MirrorAgent.load("~/agents/a.npz")) is DPO


def test_bad_files_are_refused(fitted, tmp_path):
    with pytest.raises(FileNotFoundError):
        MirrorAgent.load(tmp_path / "missing.npz")
    path = fitted.save(tmp_path / "agent.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArchiveError, match="truncated"):
        MirrorAgent.load(tmp_path / "cut.npz")
    # a file from a future format version
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    meta["format_version"] = 99
    from mirrorlearn._archive import write_archive

    write_archive(tmp_path / "future.npz", meta, arrays)
    with pytest.raises(ArchiveError, match="newer than this mirrorlearn"):
        MirrorAgent.load(tmp_path / "future.npz")


def _rewrite(path, out, edit):
    """A copy of the agent file at ``path`` with ``edit(meta, arrays)`` applied, written to ``out``."""
    from mirrorlearn._archive import write_archive

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    edit(meta, arrays)
    return write_archive(out, meta, arrays)


@pytest.mark.parametrize("edit, message", [
    (lambda m, a: m.update(format_version=True), "format_version True is not a version"),
    (lambda m, a: m.update(n_seeds=2.5), "n_seeds must be a positive integer"),
    (lambda m, a: a.update({"drift/alpha": np.asarray(0.0)}), "invalid drift parameters"),
    (lambda m, a: a.update({"obs_stats/var": -a["obs_stats/var"]}), "negative variance"),
    (lambda m, a: a.update({"obs_stats/mean": a["obs_stats/mean"] * np.nan}), "mean contain NaN"),
    (lambda m, a: a.update({"obs_stats/count": a["obs_stats/count"][:1]}), "observation statistics have shapes"),
    (lambda m, a: m["estimator_params"].update(learning_rate="fast"), "invalid saved hyperparameters.*learning_rate"),
    (lambda m, a: m["estimator_params"].update(seed="zero"), "seed must be an integer"),
    (lambda m, a: m.update(estimator_params=[]), "estimator_params is not a mapping"),
    # edited spaces: named before JAX sees them
    (lambda m, a: m["env"].update(obs_shape=["a"]), "obs_shape must be positive integers"),
    (lambda m, a: m["env"]["action"].update(n=-1), "needs n >= 1 actions"),
    (lambda m, a: m["env"].update(obs_shape=[2, 2]), "observation statistics have shapes"),
    (lambda m, a: m["config"].update(network="minatar"), "do not fit the saved network .'minatar'."),
    # the drift's own hyperparameters, which fit would refuse
    (lambda m, a: m["estimator_params"].update(alpha="abc"), "invalid saved hyperparameters.*alpha"),
    (lambda m, a: m["estimator_params"].update(beta=None), "invalid saved hyperparameters.*beta"),
])
def test_edited_agent_files_are_refused_naming_the_problem(fitted, tmp_path, edit, message):
    path = _rewrite(fitted.save(tmp_path / "agent.npz"), tmp_path / "edited.npz", edit)
    with pytest.raises(ArchiveError, match=message):
        MirrorAgent.load(path)


def test_an_agent_with_invalid_hyperparameters_is_not_saved(fitted, tmp_path):
    path = fitted.save(tmp_path / "agent.npz")
    before = path.read_bytes()
    fitted.set_params(hidden_sizes=64)  # after fit: saving would write a file that cannot be loaded
    try:
        with pytest.raises(ValueError, match="cannot save this agent: hidden_sizes"):
            fitted.save(path)
    finally:
        fitted.set_params(hidden_sizes=None)
    assert path.read_bytes() == before


def test_predict_takes_integer_and_jax_keys_and_empty_batches(fitted):
    obs = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    by_int = fitted.predict(obs, deterministic=False, key=7)
    np.testing.assert_array_equal(by_int, fitted.predict(obs, deterministic=False, key=jax.random.PRNGKey(7)))
    np.testing.assert_array_equal(by_int, fitted.predict(obs, deterministic=False, key=jax.random.key(7)))
    with pytest.raises(ValueError, match="key must be None, an integer seed or a JAX PRNG key"):
        fitted.predict(obs, key="seven")
    with pytest.raises(ValueError, match=r"key must be an integer in \[0, 2\*\*32\)"):
        fitted.predict(obs, deterministic=False, key=2**32)  # PRNGKey would silently make it the key of 0
    empty = fitted.predict(np.zeros((0, 4)))
    assert empty.shape == (0,) and empty.dtype == fitted.predict(obs).dtype
    with pytest.raises(ValueError, match="deterministic must be True or False, got None"):
        fitted.predict(obs, deterministic=None)  # would silently sample
    odd = clone_fitted_with(fitted, policy_seed=1.5)
    with pytest.raises(ValueError, match="policy_seed must be the index of a trained seed"):
        odd.predict(obs)  # int(1.5) would silently act with seed 1


def clone_fitted_with(agent, **params):
    import copy

    return copy.copy(agent).set_params(**params)


def test_a_budget_rounded_down_by_a_whole_batch_is_announced():
    from agents.estimators import warn_partial_batch

    config = PPOConfig(total_timesteps=1_000)  # batches of 4 x 128 = 512: one update, 512 steps
    with pytest.warns(UserWarning, match="training runs 1 whole update, 512 steps"):
        warn_partial_batch(PPO(total_timesteps=1_000), config)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_partial_batch(PPO(total_timesteps=500_000), config.replace(total_timesteps=500_000))  # 0.06% less
        minatar = config.replace(total_timesteps=300_000, num_envs=64, num_steps=128, num_minibatches=8)
        warn_partial_batch(PPO(total_timesteps=300_000), minatar)  # the MinAtar study's budget: 1.7% less
        warn_partial_batch(PPO(), config)  # the preset's budget, not the user's


def test_save_is_atomic_and_never_pickles(fitted, tmp_path, monkeypatch):
    path = fitted.save(tmp_path / "agent.npz")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        fitted.save(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["agent.npz"]  # no temp files left behind
    with pytest.raises(NotADirectoryError, match=r"agent.npz' is a file, not a folder"):
        fitted.save(path / "sub" / "x.npz")
    assert path.read_bytes() == before


def test_a_saved_file_of_another_kind_is_never_replaced(fitted, tmp_path):
    from mirrorlearn._archive import write_json_atomic

    drift_file = dpo(alpha=3.0).save(tmp_path / "learned.drift")
    before = drift_file.read_bytes()
    with pytest.raises(FileExistsError, match=r"learned.drift' holds a saved drift; writing an agent file there "
                       "would destroy it"):
        fitted.save(drift_file)
    with pytest.raises(FileExistsError, match="holds a saved drift; writing this output there"):
        write_json_atomic(drift_file, {"results": []})
    assert drift_file.read_bytes() == before
    fitted.save(tmp_path / "agent.npz")
    fitted.save(tmp_path / "agent.npz")  # an agent over an agent: replaced, as save always did
    (tmp_path / "notes.txt").write_text("mine")
    fitted.save(tmp_path / "notes.txt")  # not a mirrorlearn file: the path the user chose wins


def test_sklearn_conventions(fitted):
    from sklearn.base import clone

    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "params_")
    c.set_params(alpha=3.0, n_seeds=1)
    assert c.alpha == 3.0
    with pytest.raises(ValueError, match="invalid parameter"):
        c.set_params(alpah=1.0)
    assert "alpha" in DPO().get_params() and "drift" not in DPO().get_params()
    assert "drift" in MirrorAgent().get_params()
    from sklearn.base import is_classifier, is_regressor

    assert not is_regressor(c) and not is_classifier(c)  # scikit-learn's tools can ask for the tags


def test_not_fitted_errors():
    with pytest.raises(NotFittedError, match="call fit"):
        PPO().predict(np.zeros(4))
    with pytest.raises(NotFittedError):
        PPO().evaluate("CartPole-v1")


def test_unknown_env_suggests_close_match():
    with pytest.raises(ValueError, match="CartPole-v1"):
        PPO().fit("CartPole-v2")


def test_inconsistent_budgets_name_the_numbers():
    with pytest.raises(ValueError, match=r"4 x 128 = 512.*num_minibatches = 3"):
        PPO(num_minibatches=3).fit("CartPole-v1")
    with pytest.raises(ValueError, match="total_timesteps"):
        PPO(total_timesteps=-5).fit("CartPole-v1")
    with pytest.raises(ValueError, match="n_seeds"):
        PPO(n_seeds=0).fit("CartPole-v1")


def test_divergence_is_reported_with_the_update():
    def bad_drift(r, A):
        return jnp.where(r > 0, jnp.log(r - 2.0) ** 2 * 0 + jnp.nan * (r - 1) ** 2, 0.0)

    agent = MirrorAgent(drift=bad_drift, total_timesteps=2_048, check_drift=False)
    with pytest.raises(TrainingDivergedError, match="update 1 of seed 0"):
        agent.fit("CartPole-v1")
    assert not hasattr(agent, "params_")


def test_make_train_is_pure_and_vmappable_over_drift_params():
    env = make_env("CartPole-v1")
    config = PPOConfig(total_timesteps=1_024, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1)
    train = make_train(config, env, dpo())
    population = {"alpha": jnp.array([1.0, 2.0, 3.0]), "beta": jnp.array([0.3, 0.6, 0.9])}
    out = jax.jit(jax.vmap(train, in_axes=(None, 0)))(jax.random.PRNGKey(0), population)
    assert out.metrics["loss"].shape == (3, config.num_updates)
    assert np.isfinite(np.asarray(out.metrics["loss"])).all()


def test_packed_rollout_carry_round_trips_bits_and_keeps_training_bitwise(monkeypatch):
    from agents import core

    tree = {"x": jnp.array([[1.5, np.nan], [-0.0, np.inf]], jnp.float32), "t": jnp.array([3, -7], jnp.int32),
            "k": jnp.array([[2**32 - 1], [5]], jnp.uint32)}
    pack, unpack = core.carry_packer(tree)
    packed = pack(tree)
    assert packed.shape == (2, 4) and packed.dtype == jnp.uint32
    for name, leaf in unpack(packed).items():  # bit-casts: NaN, -0.0 and large unsigned values survive
        assert leaf.dtype == tree[name].dtype
        np.testing.assert_array_equal(np.asarray(leaf).view(np.uint32), np.asarray(tree[name]).view(np.uint32))
    assert core.carry_packer({"grid": jnp.zeros((2, 3), bool)}) is None  # MinAtar's boolean grids
    assert core.carry_packer({"big": jnp.zeros((2, core.PACK_MAX_WORDS + 1))}) is None
    assert core.carry_packer({"key": jax.random.split(jax.random.key(0), 2)}) is None  # typed PRNG keys

    # A step that changes a field's dtype keeps the plain scan (bit-casts back would misread it).
    carry = ({}, {}, {"n": jnp.zeros(2, jnp.int32)}, jnp.zeros((2, 3)), jnp.zeros(2))
    noise = jnp.zeros((5, 2))
    def step(turns_float):
        def env_step(c, x):
            n = c[2]["n"] + (0.5 if turns_float else 1)
            return (c[0], c[1], {"n": n}, c[3] + x[:, None], c[4]), x
        return env_step
    assert core._rollout_packer(step(False), carry, noise) is not None
    assert core._rollout_packer(step(True), carry, noise) is None

    env = make_env("Pendulum-v1")  # continuous actions, float and int state fields
    config = PPOConfig(total_timesteps=512, num_envs=4, num_steps=64, num_minibatches=2, update_epochs=1)
    runs = []
    for packed_carry in (True, False):
        monkeypatch.setattr(core, "PACK_ROLLOUT_CARRY", packed_carry)
        runs.append(jax.jit(make_train(config, env, dpo()))(jax.random.PRNGKey(1), dpo().params))
    for a, b in zip(jax.tree_util.tree_leaves(runs[0]), jax.tree_util.tree_leaves(runs[1]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ppo_drift_policy_loss_equals_clip_objective():
    from agents.core import policy_loss

    r = jnp.linspace(0.5, 1.6, 23)
    A = jnp.linspace(-2, 2, 23)
    clip = -jnp.mean(jnp.minimum(r * A, jnp.clip(r, 0.8, 1.2) * A))
    assert float(policy_loss(ppo(), ppo().params, r, A, 0.0)) == pytest.approx(float(clip), abs=1e-6)


@pytest.mark.parametrize("name", ["ppo", "dpo", "lpo"])
def test_policy_loss_stays_finite_when_the_ratio_leaves_float32(name):
    # A log ratio of -200 or +200 makes exp() 0 or inf in float32; the drift's log r was then -inf
    # and the loss NaN (SpaceInvaders under the LPO network diverged this way at 5M steps).
    from agents.core import LOG_RATIO_LIMIT, policy_loss, probability_ratio
    from drifts import get_drift

    drift = get_drift(name)
    logp = jnp.array([-200.0, -40.0, -1.0, 0.0, 1.0, 40.0, 200.0])
    old = jnp.zeros_like(logp)
    A = jnp.array([-1.5, 2.0, -0.5, 1.0, -1.0, -2.0, 1.5])

    def loss(lp):
        return policy_loss(drift, drift.params, probability_ratio(lp, old), A, 0.0)

    value, grad = jax.value_and_grad(loss)(logp)
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
    inside = jnp.array([-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(probability_ratio(inside, 0.0)), np.asarray(jnp.exp(inside)))
    assert float(probability_ratio(jnp.asarray(-200.0), 0.0)) == pytest.approx(np.exp(-LOG_RATIO_LIMIT), rel=1e-5)


def test_invalid_drift_is_rejected_at_fit_naming_the_condition():
    from agents.estimators import DriftConditionError

    kink = MirrorAgent(drift=lambda r, A: jnp.maximum(r - 1.0, 1.0 - r) * jnp.abs(A), total_timesteps=2_048)
    with pytest.raises(DriftConditionError, match="zero_grad_at_identity"):
        kink.fit("CartPole-v1")
    negative = MirrorAgent(drift=lambda r, A: (r - 1.0) ** 2 * A, total_timesteps=2_048)
    with pytest.raises(DriftConditionError, match="nonnegative"):
        negative.fit("CartPole-v1")
    assert not hasattr(negative, "params_")


def test_seeds_are_sharded_over_host_devices(tmp_path):
    """With one JAX device per core (what the CLI sets up) the seed axis is split across them."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import jax, numpy as np
        from agents import PPO
        a = PPO(total_timesteps=2_048, n_seeds=2, seed=1).fit("CartPole-v1")
        b = PPO(total_timesteps=2_048, n_seeds=2, seed=1).fit("CartPole-v1")
        leaf = jax.tree_util.tree_leaves(a.params_)[0]
        print("devices", len(leaf.sharding.device_set))
        same = all(np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(jax.tree_util.tree_leaves(a.params_), jax.tree_util.tree_leaves(b.params_)))
        print("deterministic", same, "action", int(a.predict(np.zeros(4, np.float32))))
        import agents.progress as progress
        calls, record = [], progress.ProgressBar.__call__
        progress.ProgressBar.__call__ = lambda self, i, ret: (calls.append(np.shape(ret)), record(self, i, ret))[1]
        PPO(total_timesteps=2_048, n_seeds=2, seed=1, progress=True).fit("CartPole-v1")
        print("progress calls", len(calls), "shapes", sorted(set(calls)))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "devices 2" in out.stdout and "deterministic True" in out.stdout, out.stdout
    # The bar is fed at each of the 4 updates with the mean over seeds; handing it the sharded per-seed
    # vector instead made XLA warn of a full rematerialisation at every fit.
    assert "progress calls 4 shapes [()]" in out.stdout, out.stdout
    assert "rematerialization" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("kernel_size", [(3, 3), (2, 2), (3, 1)])
def test_patch_conv_equals_flax_conv(kernel_size):
    # PatchConv replaces nn.Conv in the MinAtar torso for speed inside lax.scan; it must be the same
    # function of the same parameters (so saved agents keep their meaning).
    import flax.linen as nn

    from agents.networks import PatchConv

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 10, 10, 4))
    reference, ours = nn.Conv(16, kernel_size), PatchConv(16, kernel_size)
    params = reference.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x))
    params = jax.tree.map(lambda v: v + 0.1, params)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), atol=1e-5)
    # and the same gradients (PatchConv's product has its own weight-gradient rule, networks.matmul)
    grads = [jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply(p, x))))(params) for m in (ours, reference)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


@pytest.mark.parametrize("shape", [(4, 4, 64), (4, 64, 64), (1, 256, 256), (128, 64, 64), (2, 3, 8, 5)])
def test_dense_equals_flax_dense_on_both_paths(shape):
    # networks.Dense computes small products as multiply-and-sum and the rest as a matmul; both must
    # be nn.Dense's function of nn.Dense's parameters (same names, so saved agents keep loading).
    import flax.linen as nn

    from agents.networks import Dense

    *batch, n_in, n_out = shape
    x = jax.random.normal(jax.random.PRNGKey(0), (*batch, n_in))
    reference, ours = nn.Dense(n_out), Dense(n_out)
    params = reference.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x))
    params = jax.tree.map(lambda v: v + 0.1, params)
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5)

    def loss(module, p, x):
        return jnp.sum(jnp.tanh(module.apply(p, x)) * jnp.arange(n_out))

    for args in ((params, x), (jax.tree.map(lambda v: v[None], params), x[None])):  # plain, and vmapped
        grad = (lambda f: f) if args[1] is x else (lambda f: jax.vmap(f))
        ours_g, ref_g = (grad(jax.grad(lambda p, x, m=m: loss(m, p, x), argnums=(0, 1)))(*args)
                         for m in (ours, reference))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours_g, ref_g)


@pytest.mark.parametrize("x_shape", [(7,), (5, 7), (2, 3, 7)])
def test_matmul_gradients_equal_autodiff(x_shape):
    # networks.matmul computes a weight gradient as x^T g in the kernel's orientation (speed); its
    # gradients must be jnp.matmul's for any leading shape, under jit and vmap alike.
    from agents.networks import matmul

    x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (7, 3))

    def loss(mm, x, w):
        return jnp.sum(jnp.cos(mm(x, w)))

    ours = jax.jit(jax.grad(lambda x, w: loss(matmul, x, w), argnums=(0, 1)))(x, w)
    ref = jax.grad(lambda x, w: loss(jnp.matmul, x, w), argnums=(0, 1))(x, w)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    batched = jax.vmap(jax.grad(lambda x, w: loss(matmul, x, w), argnums=1))(jnp.stack([x, 2 * x]), jnp.stack([w, w]))
    np.testing.assert_allclose(batched[1], jax.grad(lambda w: loss(jnp.matmul, 2 * x, w))(w), rtol=1e-5, atol=1e-5)


def test_reward_normalisation_matches_a_vecnormalize_style_reference():
    """Rewards divided by the running std of the discounted return, per step, returns reset at episode
    ends, clipped to +-10: Stable-Baselines3's VecNormalize arithmetic, written out in numpy."""
    from agents.core import ReturnStats, normalize_rewards

    rng = np.random.default_rng(0)
    n_steps, n_envs, gamma = 50, 3, 0.98
    rewards = rng.normal(3.0, 2.0, size=(n_steps, n_envs)).astype(np.float32)
    dones = (rng.random((n_steps, n_envs)) < 0.1).astype(np.float32)

    ret, mean, var, count = np.zeros(n_envs), 0.0, 1.0, 1e-4
    expected = np.zeros_like(rewards, dtype=np.float64)
    for i in range(n_steps):
        ret = ret * gamma + rewards[i]
        b_mean, b_var, b_count = ret.mean(), ret.var(), n_envs
        delta, total = b_mean - mean, count + b_count
        mean, var = mean + delta * b_count / total, (var * count + b_var * b_count + delta**2 * count * b_count / total) / total
        count = total
        expected[i] = np.clip(rewards[i] / np.sqrt(var + 1e-8), -10, 10)
        ret[dones[i] > 0] = 0.0

    state, scaled = jax.jit(normalize_rewards, static_argnums=3)(ReturnStats.create(n_envs), rewards, dones, gamma)
    np.testing.assert_allclose(np.asarray(scaled), expected, rtol=2e-4)
    np.testing.assert_allclose(np.asarray(state.ret), ret, rtol=1e-4)
    assert float(state.stats.count) == pytest.approx(1e-4 + n_steps * n_envs)
    assert np.abs(np.asarray(scaled)).max() < np.abs(rewards).max()  # returns of ~3/(1-0.98) shrink rewards


def test_normalize_reward_trains_on_both_paths_and_leaves_reported_returns_raw():
    from tests.test_envs import ReachTheTarget

    agent = PPO(total_timesteps=2_048, num_envs=4, num_steps=128, normalize_reward=True, reward_scale=5.0)
    agent.fit("CartPole-v1")
    assert agent.config_.normalize_reward and np.isfinite(agent.history_["loss"]).all()
    assert np.nanmax(agent.history_["episode_return"]) > 9  # CartPole's +1 per step, not the scaled reward
    host = PPO(total_timesteps=1_024, num_envs=4, num_steps=64, normalize_reward=True).fit(ReachTheTarget())
    assert np.isfinite(host.history_["loss"]).all() and np.nanmax(host.history_["episode_return"]) < 0
    with pytest.raises(ValueError, match="normalize_reward must be True or False"):
        PPO(normalize_reward="yes").fit("CartPole-v1")


def test_cli_train_and_compare_take_hyperparameters_with_set(tmp_path, capsys):
    import json

    from mirrorlearn.cli import cmd_compare, cmd_train

    common = ["--env", "CartPole-v1", "--timesteps", "1024", "--seeds", "2", "--eval-episodes", "1", "--quiet",
              "--set", "num_envs=4", "num_steps=128", "hidden_sizes=(16,)", "activation=relu"]
    assert cmd_train(["--drift", "ppo", "--out", str(tmp_path / "t")] + common) == 0
    result = json.loads((tmp_path / "t" / "results.json").read_text())[0]
    assert (result["drift"], result["seeds"], result["timesteps"]) == ("ppo", 2, 1024)
    assert (tmp_path / "t" / "learning_curves.png").exists()
    agent = PPO.load(result["agent_file"])
    assert (agent.config_.hidden_sizes, agent.config_.activation, agent.config_.num_envs) == ((16,), "relu", 4)
    assert cmd_compare(["--drifts", "ppo", "dpo", "--out", str(tmp_path / "c")] + common) == 0
    with pytest.raises(ValueError, match="already holds results of an earlier run.*--overwrite"):
        cmd_train(["--drift", "ppo", "--out", str(tmp_path / "t")] + common)  # refused before training
    assert [r["drift"] for r in json.loads((tmp_path / "c" / "results.json").read_text())] == ["ppo", "dpo"]
    capsys.readouterr()
    assert cmd_train(["--drift", "ppo", "--out", str(tmp_path / "c"), "--overwrite"] + common) == 0
    assert [r["drift"] for r in json.loads((tmp_path / "c" / "results.json").read_text())] == ["ppo"]
    assert "earlier run that results.json does not list: dpo.agent.npz" in capsys.readouterr().err
    assert (tmp_path / "c" / "dpo.agent.npz").exists()  # kept, not deleted
    for bad, message in ((["--set", "learning_rat=1e-3"], "learning_rate"), (["--set", "hidden"], "FIELD=VALUE"),
                         (["--set", "total_timesteps=5"], "--timesteps"), (["--cpu-threads", "0"], "positive")):
        with pytest.raises(SystemExit):
            cmd_train(["--out", str(tmp_path / "bad")] + bad)
        assert message in capsys.readouterr().err
    # In a process whose JAX backend runs already, the thread count cannot change: the CLI says so.
    from mirrorlearn.cli import main

    assert main(["train", "--cpu-threads", "1", "--out", str(tmp_path / "late")]) == 1
    assert "set_cpu_threads(...) first" in capsys.readouterr().err


def test_a_failed_overwrite_leaves_the_earlier_run_whole(tmp_path, monkeypatch):
    from mirrorlearn import cli

    class FakeAgent:
        def save(self, path):
            open(path, "w").write("new")

    def train_one(drift, args, out, taken):
        if drift == "dpo":
            raise RuntimeError("diverged")
        return {"drift": drift, "agent_file": str(out / f"{cli.file_stem(drift, taken)}.agent.npz")}, FakeAgent()

    monkeypatch.setattr(cli, "_train_one", train_one)
    fresh, earlier = tmp_path / "fresh", tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "ppo.agent.npz").write_text("old")
    (earlier / "results.json").write_text("old")
    with pytest.raises(RuntimeError):
        cli.cmd_compare(["--drifts", "ppo", "dpo", "--out", str(earlier), "--overwrite", "--quiet"])
    assert (earlier / "ppo.agent.npz").read_text() == "old"  # saved only once every drift has trained
    with pytest.raises(RuntimeError):
        cli.cmd_compare(["--drifts", "ppo", "dpo", "--out", str(fresh), "--quiet"])
    assert not fresh.exists()  # no orphan agent file that would make the corrected re-run refuse the folder
    trained = []
    monkeypatch.setattr(cli, "_train_one", lambda drift, *a: trained.append(drift))
    for bad, message in (("dpoo", "unknown drift 'dpoo'"), ("(r-1)*A", "violates the drift conditions")):
        with pytest.raises(ValueError, match=message):
            cli.cmd_compare(["--drifts", "ppo", bad, "--out", str(fresh), "--quiet"])
        assert trained == [] and not fresh.exists()  # refused before the first drift trained


def test_numpy_hyperparameters_show_and_save(fitted, tmp_path):
    fitted.set_params(hidden_sizes=np.array([64, 64]))  # what a grid built with numpy hands over
    try:
        assert "hidden_sizes=array([64, 64])" in repr(fitted)
        assert MirrorAgent.load(fitted.save(tmp_path / "a.npz")).hidden_sizes == (64, 64)
    finally:
        fitted.set_params(hidden_sizes=None)


def test_lpo_says_how_to_use_another_drift():
    from agents import LPO

    with pytest.raises(TypeError, match="drift_file=.*MirrorAgent"):
        LPO(drift="dpo")
    with pytest.raises(TypeError, match=r"PPO takes eps=\.\.\. not drift=; for any other drift use "
                       r"MirrorAgent\(drift=\.\.\.\), DPO\(\) or LPO\(\)"):
        PPO(drift="dpo")
    with pytest.raises(TypeError, match="DPO takes alpha=... and beta=... not drift="):
        DPO(drift="ppo")


def test_cli_edges_end_with_one_line_and_outputs_stay_strict(tmp_path, monkeypatch, capsys):
    import math
    import tempfile

    from mirrorlearn import cli
    from mirrorlearn._archive import read_archive, write_json_atomic
    from mirrorlearn._outputs import output_folder

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train", interrupted)
    assert cli.main(["train"]) == 130 and "interrupted" in capsys.readouterr().err
    write_json_atomic(tmp_path / "r.json", {"curve": [1.0, math.nan, math.inf], "n": np.float32(2.5)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"curve": [1.0, None, None], "n": 2.5}  # strict JSON
    (tmp_path / "notes.json").write_text('{"results": [1, 2, 3]}')
    with pytest.raises(ArchiveError, match=r"not a drift file \(.drift\) written by mirrorlearn.*check the path"):
        read_archive(tmp_path / "notes.json", "mirrorlearn.drift", 1)
    with pytest.raises(ValueError, match="too large: .* exceed what one run can count"):
        PPOConfig(total_timesteps=10**15).validate()

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", unwritable)
    with pytest.raises(ValueError, match="cannot write there \\(Permission denied\\)"):
        output_folder(str(tmp_path / "ro"), lambda: tmp_path)
    assert not (tmp_path / "ro").exists()  # the folder it had just created is removed again
