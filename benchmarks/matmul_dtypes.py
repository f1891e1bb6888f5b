"""float32 against bfloat16 for the learner's matmuls on this CPU, side by side in one process.

    .venv/bin/python benchmarks/matmul_dtypes.py        # ~30 s; writes benchmarks/results/matmul_dtypes.json

The question it answers: would a bfloat16 learner (the CPU here has AVX512-BF16 and AMX) buy the
throughput the float32 one lacks? Each case is a jitted ``lax.scan`` of ``tanh(x @ W)`` at the shapes
of a minibatch step: CartPole's (128 samples, 64x64 hidden) and MinAtar's and HalfCheetah's larger
ones; scanning keeps dispatch out of the figure. Prints a table of microseconds per matmul and
GFLOP/s, and the bf16/f32 time ratio (> 1: bfloat16 is slower).
"""

from __future__ import annotations

import argparse
import platform
import time

from _study import save_study

SHAPES = [(128, 64), (512, 64), (64, 256), (128, 256)]  # (rows, hidden): x is rows x hidden, W hidden x hidden


def time_chain(dtype, rows: int, hidden: int, steps: int, repeats: int) -> float:
    """Seconds per ``tanh(x @ W)`` step, best of ``repeats`` (compile excluded)."""
    import jax
    import jax.numpy as jnp

    key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (rows, hidden)).astype(dtype)
    w = (jax.random.normal(key_w, (hidden, hidden)) / hidden**0.5).astype(dtype)

    def body(carry, _):
        return jnp.tanh(carry @ w).astype(dtype), None

    chain = jax.jit(lambda x0: jax.lax.scan(body, x0, None, length=steps)[0])
    chain(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chain(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best / steps


def main(argv=None) -> dict:
    import jax.numpy as jnp

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/matmul_dtypes.json")
    args = p.parse_args(argv)
    rows = []
    print(f"{'rows x hidden':>14} {'f32 us':>8} {'bf16 us':>8} {'f32 GFLOP/s':>12} {'bf16 GFLOP/s':>13} {'bf16/f32':>9}")
    for n, h in SHAPES:
        t32, t16 = (time_chain(dt, n, h, args.steps, args.repeats) for dt in (jnp.float32, jnp.bfloat16))
        flops = 2 * n * h * h
        row = {"rows": n, "hidden": h, "f32_us": t32 * 1e6, "bf16_us": t16 * 1e6,
               "f32_gflops": flops / t32 / 1e9, "bf16_gflops": flops / t16 / 1e9, "bf16_over_f32": t16 / t32}
        rows.append(row)
        print(f"{f'{n} x {h}':>14} {row['f32_us']:8.2f} {row['bf16_us']:8.2f} {row['f32_gflops']:12.1f} "
              f"{row['bf16_gflops']:13.1f} {row['bf16_over_f32']:9.2f}")
    out = {"machine": platform.processor() or platform.machine(), "steps": args.steps, "rows": rows}
    save_study(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
