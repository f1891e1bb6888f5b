import os

# Tests run on the CPU with a deterministic, small thread pool.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
