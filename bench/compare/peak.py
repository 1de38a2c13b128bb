#!/usr/bin/env python3
"""The machine's sgemm yardstick: numpy's (OpenBLAS) float32 n x n x n matmul, in GFLOP/s.

    python peak.py --threads 2 --size 2048 --repeats 5 --json

One untimed product, then --repeats timed ones into a preallocated output; the median time
counts (2 n^3 FLOPs per product). The thread count is applied through OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS before numpy is imported, as in numpy_rnnlm.py. The JSON
names the BLAS and the OpenBLAS kernel that ran (threadpoolctl's internal_api, version and
architecture) and the OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE this process saw (run.py unsets
both for it: see README.md).
"""

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=2048, help="n of the n x n x n product")
    p.add_argument("--repeats", type=int, default=5, help="timed products (median counts)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    if a.threads < 1 or a.size < 1 or a.repeats < 1:
        p.error("--threads, --size and --repeats must be >= 1")
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread variables on purpose)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from numpy_rnnlm import blas_info  # noqa: E402


def measure(n, repeats):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # untimed: thread pool start, page faults
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
    return [2 * n ** 3 / s / 1e9 for s in times], statistics.median(times)


def main(args):
    rates, median_s = measure(args.size, args.repeats)
    blas, blas_threads = blas_info()
    res = {
        "system": "sgemm",
        "size": args.size,
        "threads": args.threads,
        "blas_threads": blas_threads,
        "gflops": 2 * args.size ** 3 / median_s / 1e9,
        "repeat_gflops": rates,
        "numpy": np.__version__,
        "blas": blas,
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"numpy {res['numpy']} ({blas}, {blas_threads} threads): float32 {args.size}^3 "
              f"matmul {res['gflops']:.1f} GFLOP/s (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
