"""Untrusted files bounded before any work; killed writes leave nothing behind (issue 29's cases)."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from drifts import Drift, dpo, get_drift
from mirrorlearn import _archive
from mirrorlearn._archive import ArchiveError, atomic_write, read_archive, write_archive

ROOT = Path(__file__).resolve().parents[1]


class _Deadline:
    """Fail (instead of hanging the suite) when a load does not return within ``seconds``."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def expire(*_):
            raise TimeoutError(f"did not return within {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, expire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


@pytest.fixture()
def drift_file(tmp_path):
    path = tmp_path / "d.drift"
    dpo().save(path)
    return path


@pytest.mark.parametrize("loader", [Drift.load, get_drift, lambda p: read_archive(p, "mirrorlearn.drift", 1)])
def test_a_fifo_is_refused_not_waited_on(tmp_path, loader):
    fifo = tmp_path / "pipe.drift"
    os.mkfifo(fifo)
    with _Deadline(5), pytest.raises(ArchiveError, match="not a regular file"):
        loader(str(fifo))


def test_agent_load_refuses_a_fifo(tmp_path):
    from agents.estimators import MirrorAgent

    fifo = tmp_path / "agent.npz"
    os.mkfifo(fifo)
    with _Deadline(5), pytest.raises(ArchiveError, match="not a regular file"):
        MirrorAgent.load(fifo)


def _add_member(path: Path, name: str, data: bytes, compress: bool = True) -> None:
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr(name, data)


def test_a_zip_bomb_member_is_refused_before_it_is_read(drift_file, monkeypatch):
    _add_member(drift_file, "extra.npy", bytes(64 << 20))  # 64 MiB of zeros, ~64 KiB on disk
    assert drift_file.stat().st_size < 1 << 20
    monkeypatch.setattr(_archive, "MAX_MEMBER_BYTES", 16 << 20)
    start = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"'extra.npy' declares 67,108,864 bytes"):
        Drift.load(drift_file)
    assert time.perf_counter() - start < 2.0


def test_too_many_declared_bytes_in_all_are_refused(drift_file, monkeypatch):
    for i in range(3):
        _add_member(drift_file, f"x{i}.npy", bytes(1 << 20))
    monkeypatch.setattr(_archive, "MAX_TOTAL_BYTES", 2 << 20)
    with pytest.raises(ArchiveError, match="declares .* bytes uncompressed, more than the 2,097,152"):
        Drift.load(drift_file)


def _with_meta(path: Path, text: str) -> None:
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["__meta__"] = np.frombuffer(text.encode(), np.uint8)
    np.savez(path, **arrays)
    if not str(path).endswith(".npz"):
        os.replace(str(path) + ".npz", path)


@pytest.mark.parametrize("meta, match", [
    ('{"kind": "mirrorlearn.drift", "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested 5001 levels deep"),
    ('{"kind": "mirrorlearn.drift", "format_version": ' + "9" * 5000 + "}", "digits"),
])
def test_hostile_metadata_is_an_archive_error_naming_the_file(drift_file, meta, match):
    _with_meta(drift_file, meta)
    with pytest.raises(ArchiveError, match=match) as err:
        Drift.load(drift_file)
    assert str(drift_file) in str(err.value)


def test_a_corrupted_npy_header_is_an_archive_error(drift_file):
    with zipfile.ZipFile(drift_file) as z:
        members = {name: z.read(name) for name in z.namelist()}
    name = next(n for n in members if n != "__meta__.npy")
    data = bytearray(members[name])
    start = data.index(b"{")
    data[start:start + 8] = b"{(((((((" # the header's dict literal opens tuples it never closes
    members[name] = bytes(data)
    with zipfile.ZipFile(drift_file, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ArchiveError, match="truncated or corrupted"):
        Drift.load(drift_file)


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "agent.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".agent.npz.{dead_pid}.abc123.tmp"
    live = tmp_path / f".agent.npz.{os.getpid()}.def456.tmp"
    old_style_fresh = tmp_path / ".agent.npz.zzzz.tmp"
    old_style_old = tmp_path / ".agent.npz.yyyy.tmp"
    other = tmp_path / ".other.npz.1.abc.tmp"
    for p in (stale, live, old_style_fresh, old_style_old, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 2 * _archive.STALE_TEMPORARY_S
    os.utime(old_style_old, (hour_ago, hour_ago))
    write_archive(target, {"kind": "mirrorlearn.drift", "format_version": 1}, {"a": np.zeros(2)})
    left = {p.name for p in tmp_path.iterdir()}
    assert stale.name not in left and old_style_old.name not in left
    assert {live.name, old_style_fresh.name, other.name, "agent.npz"} <= left


def test_a_write_killed_by_sigkill_leaves_no_temporary_after_the_next_write(tmp_path):
    target = tmp_path / "agent.npz"
    code = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from mirrorlearn._archive import atomic_write\n"
            "def write(h):\n    h.write(b'half'); h.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write({str(target)!r}, write)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # the killed write left its temporary
    atomic_write(target, lambda h: h.write(b"whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.npz"]
    assert target.read_bytes() == b"whole"


def test_saved_files_still_round_trip(tmp_path):
    path = tmp_path / "m.npz"
    meta = {"kind": "mirrorlearn.drift", "format_version": 1, "nested": {"a": [1, 2, {"b": "[[{"}]}}
    write_archive(path, meta, {"w/x": np.arange(3.0)})
    got_meta, arrays = read_archive(path, "mirrorlearn.drift", 1)
    assert got_meta == meta and np.array_equal(arrays["w/x"], np.arange(3.0))
    json.dumps(got_meta)


@pytest.mark.parametrize("text, match", [
    ("Max(exp(exp(exp(100))), r)", r"exp of 2.688e\+43 overflows float64"),  # hung inside mpmath for > 900 s
    ("Min(r, exp(exp(exp(exp(10)))))", "exp of 2.203e.04 overflows"),  # escaped as an OverflowError
    ("-" * 995 + "r", "nested too deeply .998 levels"),  # RecursionError with a 1000-frame traceback
    ("r**" * 490 + "2", "nested too deeply .493 levels"),
    ("((((r**99)**99)**99)**99)", r"at most 100 in size \(this power is x\*\*9801\)"),  # bypassed the limit
])
def test_hostile_expressions_are_refused_at_once_with_a_value_error(text, match):
    from drifts.symbolic import parse_expression

    start = time.perf_counter()
    with _Deadline(10), pytest.raises(ValueError, match=match):
        parse_expression(text)
    assert time.perf_counter() - start < 2.0


def test_ordinary_expressions_near_the_limits_still_parse():
    from drifts.symbolic import parse_expression

    assert str(parse_expression("exp(700)*(r - 1)**2")) == "(r - 1)**2*exp(700)"
    assert str(parse_expression("(r**2)**50")) == "r**100"
    assert parse_expression(" + ".join(f"{i}*r" for i in range(1, 200))) is not None  # a 199-term sum


@pytest.fixture(scope="module")
def agent_file(tmp_path_factory):
    from agents.estimators import PPO

    path = tmp_path_factory.mktemp("agent") / "a.npz"
    PPO(total_timesteps=256, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=1).fit("CartPole-v1").save(path)
    return path


def _edit_agent_meta(src: Path, dst: Path, edit) -> Path:
    arrays = dict(np.load(src, allow_pickle=False))
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    edit(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **arrays)
    return dst


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["env"]["action"].update(n=10**18), "actions exceed the limit"),  # aborted the process in XLA
    (lambda m: m["config"].update(hidden_sizes=[10**18]), "hidden_sizes .* exceeds the limit"),  # validate()
    (lambda m: m["env"].update(obs_shape=[2] * 64), "observation shape .* exceeds the limit"),
    (lambda m: m["config"].update(hidden_sizes=[30000, 30000]), "parameter .* has shape"),  # was 14 GB, minutes
    (lambda m: m["env"]["action"].update(n=2.5), "env.action.n must be a whole number"),  # loaded as 2 actions
    (lambda m: m["env"]["action"].update(low=[[1]]), "flat list of finite numbers"),
])
def test_edited_agent_sizes_are_refused_quickly_without_building_the_network(agent_file, tmp_path, edit, match):
    from agents.estimators import MirrorAgent

    path = _edit_agent_meta(agent_file, tmp_path / "edited.npz", edit)
    start = time.perf_counter()
    with pytest.raises(ArchiveError, match=match):
        MirrorAgent.load(path)
    assert time.perf_counter() - start < 2.0


def test_repeated_loads_do_not_grow_memory(agent_file):
    import resource

    from agents.estimators import MirrorAgent

    for _ in range(5):  # warm up: first-load compiles and caches
        MirrorAgent.load(agent_file)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(40):
        agent = MirrorAgent.load(agent_file)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40, f"40 loads grew the peak memory by {grown_mb:.0f} MB (was ~12.7 MB per load)"
    assert agent.predict(np.zeros(4, np.float32)).shape == ()


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_first(tmp_path):
    from agents.estimators import PPO
    from metalearn import MetaTrainer
    from mirrorlearn._outputs import FolderInUseError

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path\n"
         "from mirrorlearn._outputs import exclusive_folder\n"
         f"with exclusive_folder(Path({str(run)!r})):\n    print('held', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        mt = MetaTrainer(inner=PPO(total_timesteps=256, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=1),
                         population_size=2, generations=1, n_eval_episodes=2, progress=False, checkpoint_dir=run)
        start = time.perf_counter()
        with pytest.raises(FolderInUseError, match=f"in use by another meta-training run .process {holder.pid}"):
            mt.fit()
        assert time.perf_counter() - start < 30  # refused before any training (setup compiles nothing)
        assert list(run.iterdir()) == []  # and nothing written
    finally:
        holder.kill()
        holder.wait()


def test_exclusive_folder_is_released_and_removes_a_folder_it_created_empty(tmp_path):
    from mirrorlearn._outputs import FolderInUseError, exclusive_folder

    with exclusive_folder(tmp_path / "new") as folder:
        with pytest.raises(FolderInUseError, match="in use"), exclusive_folder(folder):
            pass
    assert not (tmp_path / "new").exists()
    with exclusive_folder(tmp_path / "kept") as folder:
        (folder / "x").write_text("1")
    with exclusive_folder(folder):  # released: a later run takes it
        pass
    assert (folder / "x").exists()


def test_a_huge_layer_from_set_is_refused_by_the_config_not_inside_jax(tmp_path, capsys):
    from mirrorlearn.cli import main

    # was "broadcast_in_dim shape must have every element be an integer type" from deep inside JAX
    assert main(["train", "--timesteps", "512", "--quiet", "--set", "hidden_sizes=(1000000000000000000,)",
                 "--out", str(tmp_path / "o")]) == 2
    assert "hidden_sizes [1000000000000000000] exceeds the limit of 64 layers of at most 65536 units" in \
        capsys.readouterr().err
