"""Where a GPU (CuPy) step's time goes: cProfile own time of the 784-1024-1024-10 MLP step.

Run on a machine with a GPU: python benchmarks/profile_gpu.py. Prints the step time, the number
of Python-level calls into CuPy per step, and the top functions by own time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_gpu import ddpgrad_runner  # noqa: E402


def main():
    run = ddpgrad_runner()
    run(10)
    start = time.perf_counter()
    run(100)
    print(f"ddpgrad GPU step: {1e3 * (time.perf_counter() - start) / 100:.3f} ms", flush=True)
    profile = cProfile.Profile()
    profile.enable()
    run(100)
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("tottime")
    stats.print_stats(25)
    calls = sum(v[1] for k, v in stats.stats.items() if "cupy" in k[0])
    print(f"Python calls into CuPy modules per step: {calls / 100:.0f}")
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
