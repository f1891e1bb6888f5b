import os

# Tests run on the CPU with a deterministic, small thread pool.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

# The suite is compile-bound: tiny budgets run in milliseconds, and LLVM's optimisation of each jitted
# train function is most of its seconds. Level 0 keeps XLA's semantics (same programs, same seeds,
# bitwise-reproducible runs) and cut tests/test_agents.py from 128 s to 94 s here. Child processes
# and notebook kernels inherit it through the environment; users' runs keep XLA's default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
