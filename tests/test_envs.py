"""Environments: custom Gymnasium envs, vector envs, ids, truncation, normalisation, bad input, gymnax, Brax."""

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium import spaces

from agents import make_env
from agents.core import make_network
from agents.envs import JaxEnv
from agents.estimators import PPO, MirrorAgent
from agents.gymnasium_env import EnvStepError, HostEnv, UnsupportedSpaceError, from_gymnasium


# -- hand-made environments from no registry -------------------------------------------------------------
class PickTheLargest(gym.Env):
    """Discrete: reward 1 for choosing the index of the largest of 4 features; 20-step episodes (truncated)."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(4)

    def __init__(self, horizon=20):
        self.horizon = horizon

    def _obs(self):
        self.x = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return self.x

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == int(np.argmax(self.x)))
        self.t += 1
        return self._obs(), reward, False, self.t >= self.horizon, {}


class ReachTheTarget(gym.Env):
    """Continuous: reward ``-|a - target|^2`` with the target in the observation (scaled by 5)."""

    observation_space = spaces.Box(-5.0, 5.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.target = self.np_random.uniform(-0.8, 0.8, 2).astype(np.float32)
        return 5 * self.target, {}

    def step(self, action):
        reward = -float(np.sum((np.asarray(action) - self.target) ** 2))
        self.t += 1
        self.target = self.np_random.uniform(-0.8, 0.8, 2).astype(np.float32)
        return 5 * self.target, reward, False, self.t >= 20, {}


class Counter(gym.Env):
    """Observation is the constant 0; reward 1 per step; ends by time limit (or termination) after 5 steps."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, terminate=False):
        self.terminate = terminate

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t >= 5
        return np.zeros(1, np.float32), 1.0, end and self.terminate, end and not self.terminate, {}


class Breaks(PickTheLargest):
    """Raises in its 3rd step of its 2nd episode."""

    def reset(self, *, seed=None, options=None):
        self.episode = getattr(self, "episode", 0) + 1
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.episode == 2 and self.t == 2:
            raise RuntimeError("simulator exploded")
        return super().step(action)


def play(env, policy, episodes=10, seed=0):
    """Mean return of ``policy(obs)`` in a plain Gymnasium loop."""
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += reward
            done = terminated or truncated
    return total / episodes


@pytest.fixture(scope="module")
def discrete_agent():
    return PPO(total_timesteps=16_384, seed=0, learning_rate=3e-3, check_drift=False).fit(PickTheLargest())


@pytest.fixture(scope="module")
def continuous_agent():
    return PPO(total_timesteps=16_384, num_envs=8, num_steps=128, num_minibatches=8, update_epochs=4,
               learning_rate=3e-3, seed=0, check_drift=False).fit(ReachTheTarget())


def test_custom_discrete_env_beats_random(discrete_agent):
    env = PickTheLargest()
    assert isinstance(make_env(env), HostEnv) and make_env(env).id == "custom:PickTheLargest"
    rng = np.random.default_rng(0)
    random_return = play(env, lambda obs: rng.integers(4))
    trained_return = play(env, discrete_agent.predict)
    assert random_return < 7 and trained_return > 15, (random_return, trained_return)


def test_custom_continuous_env_beats_random(continuous_agent):
    env = ReachTheTarget()
    assert continuous_agent.config_.normalize_obs  # continuous tasks normalise observations by default
    rng = np.random.default_rng(0)
    random_return = play(env, lambda obs: rng.uniform(-1, 1, 2))
    trained_return = play(env, continuous_agent.predict)
    assert trained_return > random_return / 3, (random_return, trained_return)
    assert trained_return > -5, trained_return


def test_predict_one_or_batch_and_evaluate_on_host_env(discrete_agent):
    assert np.ndim(discrete_agent.predict(np.zeros(4))) == 0
    assert discrete_agent.predict(np.eye(4, dtype=np.float32)).tolist() == [0, 1, 2, 3]
    ev = discrete_agent.evaluate(n_episodes=3, seed=1)  # on the training env
    assert ev["returns"].shape == (1, 3) and ev["mean_return"] > 15
    assert discrete_agent.score(PickTheLargest(), n_episodes=2) > 15


def test_obs_normalisation_stats_are_saved_and_loaded(continuous_agent, tmp_path):
    stats = continuous_agent.obs_stats_
    assert float(stats.count[0]) > 1000 and float(np.abs(stats.var[0] - 1).max()) > 0.5  # really updated
    loaded = MirrorAgent.load(continuous_agent.save(tmp_path / "reach.npz"))
    for a, b in zip(stats, loaded.obs_stats_, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    obs = np.random.default_rng(1).uniform(-4, 4, (16, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), continuous_agent.predict(obs))
    assert loaded.evaluate(ReachTheTarget(), n_episodes=2)["returns"].shape == (1, 2)


def test_sync_vector_env_with_default_next_step_autoreset():
    vec = gym.vector.SyncVectorEnv([PickTheLargest] * 4)  # NEXT_STEP autoreset, Gymnasium's default
    agent = PPO(total_timesteps=2_048, num_minibatches=4, check_drift=False).fit(vec)
    assert agent.config_.num_envs == 4 and agent.history_["episodes"].sum() == 4 * (512 // 20)  # every step a transition
    vec.close()


def test_async_vector_mode_and_id_string():
    env = from_gymnasium("gymnasium:CartPole-v1", vectorization="async")
    assert env.vectorization == "async"
    agent = PPO(total_timesteps=1_024, n_seeds=2, check_drift=False).fit(env)
    assert agent.history_["loss"].shape == (2, 2) and np.isfinite(agent.history_["loss"]).all()
    assert agent.env_id_ == "gymnasium:CartPole-v1"
    assert agent.evaluate("gymnasium:CartPole-v1", n_episodes=2)["returns"].shape == (2, 2)
    with pytest.raises(ValueError, match="CartPole-v1"):
        make_env("gymnasium:CartPole-v7")


def test_truncation_is_bootstrapped_and_termination_is_not():
    """Reward 1 forever, cut by a 5-step time limit that the observation does not show.

    The true value is 1 / (1 - gamma) = 10: only bootstrapping from the final observation on truncation
    finds it. When the same 5 steps end by termination the value is the mean of the discounted
    remaining returns, 1 + 0.9 + ... averaged over the 5 states: about 3.7.
    """
    common = dict(total_timesteps=12_800, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=4,
                  learning_rate=5e-3, gamma=0.9, gae_lambda=0.9, clip_eps=1e6, check_drift=False)
    values = {}
    for terminate in (False, True):
        agent = PPO(**common).fit(Counter(terminate=terminate))
        net = make_network(agent.config_, agent.env_)
        params = jax.tree_util.tree_map(lambda x: x[0], agent.params_)
        values[terminate] = float(net.apply(params, np.zeros((1, 1), np.float32), method=net.value)[0])
    expected_terminal = np.mean([sum(0.9**k for k in range(5 - t)) for t in range(5)])
    assert values[False] == pytest.approx(10.0, abs=1.0), values
    assert values[True] == pytest.approx(expected_terminal, abs=0.5), values


def test_env_raising_mid_rollout_names_env_episode_and_step(tmp_path):
    agent = PPO(total_timesteps=1_024, num_envs=1, num_steps=64, num_minibatches=2, check_drift=False)
    with pytest.raises(EnvStepError, match=r"custom:Breaks.*simulator exploded.*episode 2, step 3"):
        agent.fit(Breaks())
    assert not hasattr(agent, "params_")  # nothing kept, so nothing can be saved
    assert list(tmp_path.iterdir()) == []


def test_unsupported_spaces_are_named():
    class DictObs(PickTheLargest):
        observation_space = spaces.Dict({"a": spaces.Box(0, 1, (2,))})

    class MultiAction(PickTheLargest):
        action_space = spaces.MultiDiscrete([2, 3])

    with pytest.raises(UnsupportedSpaceError, match=r"Dict.*FlattenObservation"):
        PPO().fit(DictObs())
    with pytest.raises(UnsupportedSpaceError, match=r"MultiDiscrete.*Discrete .* Box"):
        PPO().fit(MultiAction())


def test_evaluate_on_env_with_other_spaces_is_refused(discrete_agent):
    with pytest.raises(ValueError, match="same spaces"):
        discrete_agent.evaluate("gymnasium:CartPole-v1")


def test_gymnasium_functional_jax_env_trains_in_the_scan():
    env = make_env("phys2d/CartPole-v1")
    assert isinstance(env, JaxEnv) and env.max_episode_steps == 500
    agent = PPO(total_timesteps=2_048, check_drift=False).fit(env)
    assert np.isfinite(agent.history_["loss"]).all()
    assert agent.evaluate(n_episodes=2)["returns"].shape == (1, 2)


def test_every_gymnax_env_resolves_and_a_sample_trains():
    import gymnax

    offline = [e for e in gymnax.registered_envs if e != "MNISTBandit-bsuite"]  # that one downloads MNIST
    for env_id in offline:
        env = make_env(env_id)
        assert env.family == "gymnax" and env.preset in ("classic", "continuous", "minatar"), env_id
    for env_id in ("Catch-bsuite", "FourRooms-misc"):
        agent = PPO(total_timesteps=1_024, check_drift=False).fit(env_id)
        assert np.isfinite(agent.history_["loss"]).all(), env_id


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar", "Catch-bsuite"])
def test_gymnax_step_with_predrawn_randomness_equals_gymnax_step(env_id):
    """JaxEnv.draw hoists gymnax's per-step key split and auto-reset draw out of the rollout scan;
    the trajectory must be bit-for-bit the one gymnax's own ``step`` produces, resets included."""
    env = make_env(env_id)
    assert env.draw is not None

    def run(use_draw):
        key = jax.random.PRNGKey(7)
        _, state = env.reset(key)
        keys = jax.random.split(key, 400)
        spec = env.action_spec

        def body(state, k):
            k_act, k_step = jax.random.split(k)
            if spec.discrete:
                action = jax.random.randint(k_act, (), 0, spec.n)
            else:
                action = jax.random.uniform(k_act, spec.shape, minval=-2.0, maxval=2.0)
            out = env.step_with(env.draw(k_step), state, action) if use_draw else env.step(k_step, state, action)
            return out[1], (out[0], out[2], out[3], out[4], out[5])

        return jax.jit(lambda: jax.lax.scan(body, state, keys)[1])()

    plain, drawn = run(False), run(True)
    assert bool(np.asarray(plain[2]).any() or np.asarray(plain[3]).any()), "no episode ended: the test saw no reset"
    for a, b in zip(plain, drawn, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gymnax_env_with_its_own_step_is_stepped_through_it():
    """A gymnax subclass that overrides ``step`` keeps it: no hoisting behind its back."""
    import gymnax
    from gymnax.environments.classic_control import CartPole

    from agents.envs import from_gymnax

    class CountingCartPole(CartPole):
        def step(self, key, state, action, params=None):
            return super().step(key, state, action, params)

    env = from_gymnax("CountingCartPole", env=CountingCartPole())
    assert env.draw is None and env.step_drawn is None
    assert from_gymnax("CartPole-v1", *gymnax.make("CartPole-v1")).draw is not None


def test_minatar_uses_the_conv_preset_and_trains():
    from agents.config import PRESETS

    assert PRESETS["minatar"]["network"] == "minatar" and PRESETS["minatar"]["learning_rate"] == 5e-3
    agent = PPO(total_timesteps=2 * 16 * 16, num_envs=16, num_steps=16, num_minibatches=4, update_epochs=1,
                check_drift=False).fit("Breakout-MinAtar")
    assert agent.config_.network == "minatar" and agent.history_["loss"].shape == (1, 2)
    assert np.ndim(agent.predict(np.zeros((10, 10, 4)))) == 0


BRAX_CHECK = """
import numpy as np
from agents import make_env
from agents.config import brax_preset
from agents.envs import JaxEnv
from agents.estimators import PPO
env = make_env("brax:inverted_pendulum")
assert isinstance(env, JaxEnv) and env.max_episode_steps == 1000 and env.preset == "brax"
assert brax_preset("ant").minibatch_size == 1024 * 5  # Brax's batch_size x unroll_length
agent = PPO(total_timesteps=2 * 32 * 8, num_envs=32, num_steps=8, num_minibatches=4, update_epochs=1,
            check_drift=False).fit(env)
assert agent.config_.normalize_obs and np.isfinite(agent.history_["loss"]).all()
try:
    make_env("brax:hoper")
except ValueError as err:
    assert "hopper" in str(err)
else:
    raise AssertionError("no error for brax:hoper")
print("BRAX OK")
"""


def test_brax_env_trains_a_couple_of_updates():
    """In a child process: Brax loads the MuJoCo library, after which vmapped network initialisation
    (n_seeds > 1) can hang XLA on this CPU; the rest of the suite must not inherit that."""
    import subprocess
    import sys

    pytest.importorskip("brax")
    out = subprocess.run([sys.executable, "-c", BRAX_CHECK], capture_output=True, text=True, timeout=240,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert "BRAX OK" in out.stdout, out.stderr[-3000:]


def test_halfcheetah_gets_its_tuned_preset_and_other_mujoco_tasks_the_generic_one():
    """Preset choice by id (no MuJoCo needed: the test extra does not install it)."""
    from agents.config import preset
    from agents.envs import ActionSpec
    from agents.gymnasium_env import _preset_for

    box = ActionSpec("continuous", shape=(6,), low=(-1.0,) * 6, high=(1.0,) * 6)
    for env_id in ("gymnasium:HalfCheetah-v5", "HalfCheetah-v4", "gymnasium:HalfCheetah-v5"):
        assert _preset_for(env_id, box) == "mujoco:HalfCheetah"
    assert _preset_for("gymnasium:Hopper-v5", box) == "continuous"
    assert _preset_for(None, box) == "continuous"
    assert _preset_for("gymnasium:HalfCheetah-v5", ActionSpec("discrete", n=2)) == "classic"
    cheetah = preset("mujoco:HalfCheetah").validate()
    assert (cheetah.update_epochs, cheetah.hidden_sizes, cheetah.log_std_init, cheetah.clip_value) == (
        20, (256, 256), -2.0, False)
    assert preset("mujoco:HalfCheetah", update_epochs=5).update_epochs == 5  # overrides win


def test_log_std_init_and_unclipped_value_loss_are_used(continuous_agent):
    import jax.numpy as jnp

    from agents.core import init_params

    config = continuous_agent.make_config(ReachTheTarget()).replace(log_std_init=-1.5, clip_value=False)
    params = init_params(config, make_env(ReachTheTarget()), jax.random.PRNGKey(0))
    np.testing.assert_allclose(params["params"]["log_std"], jnp.full((2,), -1.5))
    agent = PPO(total_timesteps=2_048, num_envs=8, num_steps=128, clip_value=False, log_std_init=-1.0,
                check_drift=False).fit(ReachTheTarget())
    assert np.isfinite(agent.history_["value_loss"]).all()
    with pytest.raises(ValueError, match="log_std_init"):
        PPO(log_std_init=50.0).fit(ReachTheTarget())
    with pytest.raises(ValueError, match="clip_value"):
        PPO(clip_value="yes").fit(ReachTheTarget())


def test_value_network_can_differ_from_the_policy_network(tmp_path):
    """Brax's PPO (the paper's setting) pairs a 32x4 policy with a 256x5 value network."""
    from agents.config import preset
    from agents.core import init_params

    assert preset("brax:ant").value_hidden_sizes == (256,) * 5 and preset("brax:ant").hidden_sizes == (32,) * 4
    env = make_env("CartPole-v1")
    base = preset("classic", hidden_sizes=(16,))
    same = jax.tree_util.tree_map(np.asarray, init_params(base, env, jax.random.PRNGKey(0)))
    explicit = jax.tree_util.tree_map(np.asarray, init_params(base.replace(value_hidden_sizes=(16,)), env,
                                                              jax.random.PRNGKey(0)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, explicit)  # None means "as the policy's"

    agent = PPO(total_timesteps=1_024, num_envs=4, num_steps=128, hidden_sizes=(16,), value_hidden_sizes=(24, 8))
    agent.fit("CartPole-v1")
    critic = agent.params_["params"]["critic"]
    assert [critic[k]["kernel"].shape[-1] for k in sorted(critic)] == [24, 8]
    assert agent.params_["params"]["actor"]["Dense_0"]["kernel"].shape[-1] == 16
    loaded = PPO.load(agent.save(tmp_path / "agent"))
    assert loaded.value_hidden_sizes == (24, 8) and loaded.config_.value_hidden_sizes == (24, 8)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    for bad in ((), (0,), (8, -1)):
        with pytest.raises(ValueError, match="value_hidden_sizes"):
            PPO(value_hidden_sizes=bad).fit("CartPole-v1")


@pytest.mark.parametrize("env_cls", [PickTheLargest, ReachTheTarget])
def test_host_policy_step_unpacks_what_the_network_computes(env_cls):
    """The rollout's policy call returns one packed float32 array; unpacked it must be exactly the
    network's sample, log-probability and value (integer actions included)."""
    import functools

    import jax.numpy as jnp

    from agents import host
    from agents import networks as nets
    from agents.core import ObsStats, make_network, normalize

    agent = PPO(total_timesteps=256, num_envs=3, num_steps=8, num_minibatches=2)
    env = make_env(env_cls())
    config = agent.make_config(env)
    drift = agent.make_drift()
    init, policy_step, _, _ = host._compiled_parts(config, env, drift.fn, drift.temporal)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    params, _ = init(keys)
    stats = jax.vmap(lambda _: ObsStats.create(env.obs_shape))(jnp.arange(2))
    obs = np.random.default_rng(0).normal(size=(2, 3) + tuple(env.obs_shape)).astype(np.float32)
    new_keys, (x, action, logp, value, env_action) = policy_step(policy_step.flatten(params), stats, obs, keys)

    network, spec = make_network(config, env), env.action_spec
    for seed in range(2):
        p = jax.tree_util.tree_map(lambda a, s=seed: a[s], params)
        s = jax.tree_util.tree_map(lambda a, i=seed: a[i], stats)
        expect_x = nets.flatten_obs(normalize(jnp.asarray(obs[seed]), s, config.normalize_obs), env.obs_shape, "mlp")
        pi, v = network.apply(p, expect_x)
        expect_action = nets.sample(spec, pi, jax.random.split(keys[seed])[1])
        close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)  # jit and vmap round apart
        close(x[seed], np.asarray(expect_x))
        (np.testing.assert_array_equal if spec.discrete else close)(action[seed], np.asarray(expect_action))
        close(logp[seed], np.asarray(nets.log_prob(spec, pi, expect_action)))
        close(value[seed], np.asarray(v))
        close(env_action[seed], np.asarray(nets.to_env_action(spec, expect_action)))
    assert action.dtype == np.asarray(expect_action).dtype and action.shape[:2] == (2, 3)
    assert not np.array_equal(np.asarray(new_keys), np.asarray(keys))


@pytest.mark.parametrize("env_cls", [PickTheLargest, ReachTheTarget])
def test_numpy_rollout_policy_samples_what_the_network_would(env_cls):
    """The host rollout's numpy actor (MLP torsos) must draw the sample the JAX network draws from the
    same noise, and the batched scoring pass must give the learner the network's log-probs and values."""
    import functools

    import jax.numpy as jnp

    from agents import host
    from agents import networks as nets
    from agents.core import ObsStats, make_network, normalize

    agent = PPO(total_timesteps=256, num_envs=3, num_steps=8, num_minibatches=2, activation="relu",
                normalize_obs=True)
    env = make_env(env_cls())
    config = agent.make_config(env)
    assert host.numpy_rollout_supported(config) and not host.numpy_rollout_supported(config.replace(network="minatar"))
    drift = agent.make_drift()
    init, _, _, _ = host._compiled_parts(config, env, drift.fn, drift.temporal)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    params, _ = init(keys)
    rng = np.random.default_rng(0)
    dim = int(np.prod(env.obs_shape))
    stats = ObsStats(mean=jnp.asarray(rng.normal(size=(2, dim)), jnp.float32),
                     var=jnp.asarray(rng.uniform(0.5, 2.0, size=(2, dim)), jnp.float32), count=jnp.full((2,), 10.0))
    obs = rng.normal(size=(2, 4, 3) + tuple(env.obs_shape)).astype(np.float32)  # (seeds, steps, envs, ...)
    noise_fn, score = host._compiled_scorer(config, host.spaces_only(env))
    new_keys, noise = noise_fn(keys, 4, 3)
    noise = np.asarray(noise)
    assert noise.shape[:3] == (2, 4, 3) and not np.array_equal(np.asarray(new_keys), np.asarray(keys))
    policy = host.NumpyPolicy(config, env.action_spec, params, stats)
    steps = [policy(obs[:, t], noise[:, t]) for t in range(4)]
    action = np.stack([a for a, _ in steps], axis=1)
    env_action = np.stack([e for _, e in steps], axis=1)
    x, logp, value = score(params, stats, obs, action)

    network, spec = make_network(config, env), env.action_spec
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)  # numpy and XLA round apart
    for seed in range(2):
        p = jax.tree_util.tree_map(lambda a, s=seed: a[s], params)
        s = jax.tree_util.tree_map(lambda a, i=seed: a[i], stats)
        expect_x = nets.flatten_obs(normalize(jnp.asarray(obs[seed]), s, True), env.obs_shape, "mlp")
        pi, v = network.apply(p, expect_x)
        expect_action = nets.sample_from_noise(spec, pi, jnp.asarray(noise[seed]))
        (np.testing.assert_array_equal if spec.discrete else close)(action[seed], np.asarray(expect_action))
        close(env_action[seed], np.asarray(nets.to_env_action(spec, expect_action)))
        close(x[seed], np.asarray(expect_x))
        close(logp[seed], np.asarray(nets.log_prob(spec, pi, jnp.asarray(action[seed]))))
        close(value[seed], np.asarray(v))
    assert action.dtype == (np.int32 if spec.discrete else np.float32)


def test_host_rollout_falls_back_to_the_jitted_policy(monkeypatch):
    """Torsos numpy does not mirror step with the jitted policy; both rollouts train the same way."""
    from agents import host

    monkeypatch.setattr(host, "numpy_rollout_supported", lambda config: False)
    agent = PPO(total_timesteps=2_048, num_envs=4, num_steps=64, seed=1, check_drift=False).fit(PickTheLargest())
    assert np.isfinite(agent.history_["loss"]).all() and agent.history_["loss"].shape == (1, 8)
    assert np.isfinite(agent.history_["approx_kl"]).all()


def test_vector_level_wrappers_are_refused_and_vector_envs_keep_their_size():
    wrapped = gym.wrappers.vector.RescaleAction(gym.make_vec("Pendulum-v1", 2, vectorization_mode="sync"), -1.0, 1.0)
    with pytest.raises(UnsupportedSpaceError, match="wrapped by RescaleAction.*silently dropped.*"
                       r"gym.make_vec\(id, n, vectorization_mode='sync', wrappers=\[...\]\)"):
        PPO().fit(wrapped)  # its actions would be rescaled by the user's env but not by the rebuilt one
    wrapped.close()
    # what the message suggests works, also for an id with its own vectorised implementation
    per_env = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync",
                           wrappers=[gym.wrappers.RecordEpisodeStatistics])
    assert PPO(total_timesteps=2_048).make_config(make_env(per_env)).num_envs == 2
    per_env.close()
    native = gym.make_vec("CartPole-v1", 3)  # CartPole's own vectorised implementation, no env_fns
    assert PPO(total_timesteps=2_048).make_config(make_env(native)).num_envs == 3
    native.close()


def test_only_an_env_that_its_id_re_creates_is_saved_under_that_id():
    from agents.gymnasium_env import from_env

    assert from_env(gym.make("Pendulum-v1")).id == "gymnasium:Pendulum-v1"
    assert from_env(gym.make("Pendulum-v1", render_mode="rgb_array")).id == "gymnasium:Pendulum-v1"
    # another task under the same id: a loaded agent must ask for it, not evaluate on the default one
    for env in (gym.make("Pendulum-v1", g=0.0), gym.make("Pendulum-v1", max_episode_steps=20),
                gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1"))):
        assert from_env(env).id == "custom:Pendulum-v1"


def test_integer_box_actions_are_refused():
    class IntegerActions(ReachTheTarget):
        action_space = spaces.Box(0, 10, (2,), np.int64)

    with pytest.raises(UnsupportedSpaceError, match="int64 values.*float Box"):
        PPO().fit(IntegerActions())


class _Broken(PickTheLargest):
    """PickTheLargest whose ``reset``/``step`` output is broken the way ``fault`` says (from the first step)."""

    def __init__(self, fault):
        super().__init__()
        self.fault = fault

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return obs if self.fault == "reset_obs_only" else (obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.fault == "four_tuple":
            return obs, reward, terminated or truncated, info
        if self.fault == "nan_obs":
            obs = obs * np.nan
        if self.fault == "wrong_shape":
            obs = obs[:3]
        if self.fault == "vector_reward":
            reward = np.array([reward, reward])
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("fault, message", [
    ("reset_obs_only", r"reset\(\) must return \(observation, info\)"),
    ("four_tuple", r"step\(\) must return \(observation, reward, terminated, truncated, info\)"),
    ("nan_obs", r"observation contains NaN or inf"),
    ("wrong_shape", r"observation has shape \(3,\), but observation_space .* declares \(4,\)"),
    ("vector_reward", r"reward must be one finite number"),
])
def test_an_env_breaking_the_gymnasium_api_is_named_not_blamed_on_the_drift(fault, message):
    agent = PPO(total_timesteps=64, num_envs=1, num_steps=64, num_minibatches=1, update_epochs=1, check_drift=False)
    with pytest.raises(EnvStepError, match=r"custom:_Broken.*" + message):
        agent.fit(_Broken(fault))


def test_a_scalar_box_action_reaches_the_env_as_a_scalar():
    class ScalarAction(ReachTheTarget):
        action_space = spaces.Box(-1.0, 1.0, (), np.float32)

        def step(self, action):
            assert self.action_space.contains(np.asarray(action, np.float32)), action
            return super().step(np.full(2, action))

    agent = PPO(total_timesteps=128, num_envs=2, num_steps=64, num_minibatches=1, update_epochs=1, check_drift=False)
    assert np.isfinite(agent.fit(ScalarAction()).history_["loss"]).all()


def test_seeds_episodes_and_classes_are_checked(discrete_agent):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        PPO(seed=-1).fit("CartPole-v1")
    with pytest.raises(ValueError, match="seed must be an integer"):
        discrete_agent.evaluate(PickTheLargest(), seed=1.7)
    with pytest.raises(ValueError, match="n_episodes must be a positive integer"):
        discrete_agent.evaluate(PickTheLargest(), n_episodes=True)
    with pytest.raises(TypeError, match=r"got the class PickTheLargest.*PickTheLargest\(\)"):
        PPO().fit(PickTheLargest)
    with pytest.raises(ValueError, match="Did you mean .*'gymnasium:HalfCheetah-v5'"):
        make_env("HalfCheeta-v5")


def test_evaluation_cut_off_by_the_step_cap_is_announced(discrete_agent, monkeypatch):
    from agents import host

    monkeypatch.setattr(host, "UNCAPPED_EVAL_STEPS", 30)
    with pytest.warns(UserWarning, match="had not ended after 30 steps.*TimeLimit"):
        discrete_agent.evaluate(PickTheLargest(horizon=10**9), n_episodes=2)


def test_an_agent_trained_on_a_small_vector_env_saves_and_loads(tmp_path):
    # 3 sub-envs x 64 steps = 192 steps: a budget below the preset's 4 x 128 batch, valid for this env
    vec = gym.vector.SyncVectorEnv([PickTheLargest] * 3)
    agent = PPO(total_timesteps=192, num_steps=64, num_minibatches=2, update_epochs=1, check_drift=False).fit(vec)
    vec.close()
    loaded = MirrorAgent.load(agent.save(tmp_path / "small.npz"))
    assert loaded.config_.num_envs == 3 and loaded.num_timesteps_ == 192


def test_jax_env_instances_are_saved_under_their_id_only_if_it_re_creates_them():
    import gymnax
    from gymnax.environments.misc.frozen_lake import FrozenLake

    from agents.envs import from_gymnax

    assert make_env(gymnax.make("FrozenLake-misc")[0]).id == "FrozenLake-misc"
    assert make_env(gymnax.make("DiscountingChain-bsuite")[0]).id == "DiscountingChain-bsuite"  # name != id
    # another map, or other params: a loaded agent must ask for the env, not evaluate on the default map
    assert make_env(FrozenLake(desc=["SG", "FF"], is_slippery=False)).id == "custom:FrozenLake-misc"
    params = gymnax.make("CartPole-v1")[1].replace(max_steps_in_episode=50)
    assert from_gymnax("CartPole-v1", env_params=params).id == "custom:CartPole-v1"
    with pytest.raises(TypeError, match=r"gymnax.make's \(env, env_params\) pair.*env_and_params\[0\]"):
        make_env(gymnax.make("CartPole-v1"))


def test_brax_instances_wrappers_and_typos():
    from brax import envs

    assert make_env(envs.get_environment("hopper", backend="spring")).id == "brax:hopper"
    # "brax:hopper" re-creates the spring backend: an instance on another backend is another env
    assert make_env(envs.get_environment("hopper", backend="generalized")).id == "custom:brax:hopper"
    with pytest.raises(ValueError, match="wrapped in AutoResetWrapper.*get_environment"):
        make_env(envs.create("inverted_pendulum", episode_length=5))  # its time limit ends as termination
    with pytest.raises(ValueError, match="Did you mean 'hopper'"):
        make_env("brax:Hopper")
    with pytest.raises(ValueError, match="Did you mean 'brax:ant'"):
        make_env("Ant")


def test_a_brax_env_without_a_spring_model_trains_as_custom():
    from brax import envs

    assert make_env(envs.get_environment("swimmer")).id == "custom:brax:swimmer"  # spring cannot build swimmer


def test_gymnasium_edge_cases_are_named_not_silent():
    import threading
    import warnings

    uncopyable = gym.make("CartPole-v1")
    uncopyable.unwrapped.lock = threading.Lock()  # deepcopy fails: fresh gym.make copies, said out loud
    with pytest.warns(UserWarning, match="changes made to your instance after gym.make are not carried over"):
        make_env(uncopyable)
    separate = gym.vector.SyncVectorEnv([lambda: Counter(), lambda: Counter(terminate=True), lambda: Counter()])
    with pytest.raises(ValueError, match="num_envs=2 but the vector env .* has 3 sub-environments from separate "
                       "factories.*leave some out"):
        PPO(num_envs=2).make_config(make_env(separate))
    separate.close()
    same = gym.make_vec("CartPole-v1", 3)  # one factory: any number of copies is the same task
    assert PPO(total_timesteps=512, num_envs=4, num_steps=128).make_config(make_env(same)).num_envs == 4
    same.close()

    class FarActions(ReachTheTarget):
        action_space = spaces.Box(100.0, 200.0, (2,), np.float32)

    with pytest.warns(UserWarning, match=r"does not contain 0.*RescaleAction\(env, -1.0, 1.0\)"):
        make_env(FarActions())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_env(ReachTheTarget())  # [-1, 1]: no warning

    class WrongDtype(PickTheLargest):
        observation_space = spaces.Box(0, 1, (4,), np.uint8)  # but it returns float32 features

    with pytest.raises(EnvStepError, match="observation has dtype float32, but observation_space .* declares uint8"):
        PPO(total_timesteps=256, num_envs=2, num_steps=64).fit(WrongDtype())


def test_scalar_observation_spaces_predict_from_what_the_env_returns():
    class Scalar(Counter):
        observation_space = spaces.Box(-1.0, 1.0, (), np.float32)

        def reset(self, *, seed=None, options=None):
            obs, info = super().reset(seed=seed)
            return np.asarray(obs, np.float32).reshape(()), info

        def step(self, action):
            obs, *rest = super().step(action)
            return (np.asarray(obs, np.float32).reshape(()), *rest)

    agent = PPO(total_timesteps=256, num_envs=2, num_steps=64).fit(Scalar())
    obs, _ = Scalar().reset(seed=0)
    assert agent.predict(obs).shape == () and agent.predict(np.zeros(3, np.float32)).shape == (3,)


def test_predict_on_a_scalar_box_returns_what_the_env_takes(tmp_path):
    class ScalarAction(ReachTheTarget):
        action_space = spaces.Box(-1.0, 1.0, (), np.float32)

        def step(self, action):
            return super().step(np.full(2, action))

    agent = PPO(total_timesteps=128, num_envs=2, num_steps=64, num_minibatches=1, update_epochs=1,
                check_drift=False).fit(ScalarAction())
    env = ScalarAction()
    obs, _ = env.reset(seed=0)
    action = agent.predict(obs)
    assert np.shape(action) == () and env.action_space.contains(np.asarray(action, np.float32))  # not (1,)
    assert agent.predict(np.stack([obs, obs])).shape == (2,)
    agent.save(tmp_path / "scalar.npz")
    assert PPO.load(tmp_path / "scalar.npz").predict(obs).shape == ()
    assert np.isfinite(agent.evaluate(ScalarAction(), n_episodes=2)["mean_return"])
